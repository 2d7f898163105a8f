"""Reliability, the tenth pass: what a tenth hostile review found (an
earlier result read back when its source has no image extension, a run that
blew up before its first checkpoint that neither `train` nor `--resume`
will take, a dangling symbolic link at an output that `--overwrite` never
replaces). Each case runs through the real CLI on tiny files; each fails on
the code of the tenth pass's start (wt10, b1c9cbf) for the reason its
docstring gives.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _photos, _run
from test_safety_pass9 import style_listing_in_place_twice, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


# -- in place: results are never read back --


def test_in_place_never_styles_the_result_of_a_file_without_an_image_extension(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """P9:stdin-in-place promises that an input is an earlier result when an
    image beside it has it as its output, in whatever order they come. The
    look beside (`Planner._source_beside`) lists only files with an image
    extension, but files named on stdin are styled whatever their name:
    `photo.jpg_large` (a JPEG as browsers save them) is styled into
    `photo-s.jpg`. On the second `ls | styler apply - -o . --suffix -s`,
    `photo-s.jpg` sorts before `photo.jpg_large` and is not recognised as
    its result: it is styled into `photo-s-s.jpg`, exit 0. (The same with
    a JPEG named `photo` and `find`'s order.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.jpg_large", format="JPEG")
    Image.fromarray(pixels).save(folder / "b.png")
    style_listing_in_place_twice(folder, tiny_resnet_onnx)
    assert sorted(os.listdir(folder)) == ["b-s.png", "b.png", "photo-s.jpg", "photo.jpg_large"]


# -- --overwrite and a dangling symbolic link at an output --


def test_overwrite_replaces_a_dangling_symlink_at_an_output(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`apply --overwrite` replaces what is at an output's name, a symbolic
    link included (P6:output-link: a link at an output is replaced, never
    written through), and since P9 `quantize`, `export` and `import
    --overwrite` replace a dangling link too. But `apply` takes a dangling
    link at an output for an existing output even with `--overwrite`:
    `OUT/p0000.png -> gone.png` gives `"status": "skipped", "error":
    "output exists"`, exit 0, and p0000's result is never written."""
    photos = _photos(tmp_path / "in", 2, (16, 16))
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0000.png").symlink_to("gone.png")
    result = _run(
        "apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "--overwrite",
        "--json", "-q",
    )  # fmt: skip
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"], records
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert not (out / "p0000.png").is_symlink()
    with Image.open(out / "p0000.png") as img:
        assert img.size == (16, 16)
    assert not (out / "gone.png").exists()


# -- a run that blew up before its first checkpoint --


def test_a_run_that_blew_up_before_its_first_checkpoint_can_be_trained_again(
    tmp_path: Path,
) -> None:
    """ST2:projected: a run that failed before its first checkpoint is
    started afresh by the same command, and the blow-up's own line says
    `train again with a lower --lr`. Since P9, a run folder whose metrics
    hold more than one step (or a sample grid after step 0) is history:
    a run that blew up at step 2 (checkpoints every 30 steps) is refused by
    the new `train` with `exists and is not empty: continue it with
    `styler train --resume RUN``, and that `--resume` says `no usable
    checkpoint; nothing was changed`, exit 2: only another `-o` (or
    deleting the folder by hand) trains. Training again must start (exit
    0), or the `--resume` its refusal advises must work."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = train_args(
        tmp_path, run, "--steps", "40", "--checkpoint-every", "30", "--precision", "fp32", "-q"
    )
    blown = _run(*args, "--lr", "1e10")
    line = _one_line(blown, 2)
    assert "NaN or infinite" in line and "lower --lr" in line, line
    assert not list((run / "checkpoints").iterdir())
    with open(run / "metrics.jsonl", "rb") as f:
        steps = [json.loads(line).get("step") for line in f]
    assert max(steps) >= 2, steps  # it trained past its first step: history by P9's rule
    again = _run(*args)
    if again.returncode == 0:
        assert (run / "a_to_b.onnx").is_file()
        return
    line = _one_line(again, 2)
    if "--resume" in line:  # the advice given must work
        resumed = _run("train", "--resume", str(run), "-q")
        assert resumed.returncode == 0, (line, resumed.stderr.decode(errors="replace"))


def test_a_failed_start_with_an_endless_metrics_line_is_one_line(tmp_path: Path) -> None:
    """ST2:metrics: a metrics.jsonl of one endless line (9 GB) is read a
    line at a time with a bound. P9's new look at a run folder for training
    done (`RunFolder._trained`) reads metrics.jsonl with `for line in f`,
    unbounded: a run that stopped at step 1, whose metrics.jsonl then holds
    an endless line of zeros (8 GiB, sparse), makes `train --resume RUN`
    and the same `train ... -o RUN` read it whole: a `MemoryError`
    traceback under a 4.5 GiB address-space limit, exit 1 (without a limit,
    the machine's memory). Each must be one line (or the run started
    afresh), never a traceback."""
    pytest.importorskip("torch")
    import resource

    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", "--precision", "fp32", "-q")
    blown = _run(*args, "--lr", "1e20")
    assert blown.returncode == 2, blown.stderr.decode(errors="replace")
    with open(run / "metrics.jsonl", "r+b") as f:
        f.truncate(8 << 30)  # zeros to the end, no newline

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4500 << 20, 4500 << 20))

    resumed = _run("train", "--resume", str(run), "-q", preexec=limited)
    _one_line(resumed, 2)
    again = _run(*args, preexec=limited)
    assert b"Traceback" not in again.stderr, again.stderr.decode(errors="replace")[-2000:]
    if again.returncode != 0:
        _one_line(again, 2)
