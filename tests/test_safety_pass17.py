"""Reliability, the seventeenth pass: what a seventeenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the seventeenth pass's start (pass17, 0533d4b) for the reason its docstring
gives.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _photos, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _linked_photos(tmp_path: Path, count: int = 1) -> Path:
    """``tmp_path/photos``, a symbolic link to ``data/pics`` (``count``
    photos): a folder reached through a link, as `~/photos -> /mnt/disk/photos`."""
    _photos(tmp_path / "data" / "pics", count, (32, 32))
    (tmp_path / "photos").symlink_to(Path("data") / "pics")
    return tmp_path / "photos"


def test_an_output_folder_spelled_through_a_linked_folder_is_written(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply photos -o photos/../styled` (a script's `-o
    "$IN/../styled"`, the P16 idiom) where `photos` is a symbolic link to
    `data/pics`. The kernel (and `mkdir -p`, and styler's own output
    folder check, `check_output_folder`: `Path.mkdir` and an `O_TMPFILE`
    write test) takes `photos/..` as `data`: `data/styled` is made and
    found writable. Then every image fails, `cannot write: No such file or
    directory`, exit 1, 0 written, and `data/styled` is removed again;
    `--dry-run` of the same command plans every image. The atomic writer
    (`atomic_path`, styler/fsutil.py:132-134) makes its temporary file
    with `tempfile.mkstemp(dir=path.parent)`, and `mkstemp` resolves `dir`
    by `os.path.abspath`, *lexically*: `photos/..` is the working folder,
    so the temporary goes to `./styled`, which does not exist (when it
    does, the user's own `./styled` gets styler's temporaries, and a
    rename across file systems fails). The reason given is false (the
    folder exists and is writable) and the whole batch is lost. The
    outputs must be written where the output folder is: `data/styled`."""
    _linked_photos(tmp_path)
    model = ["-m", str(tiny_resnet_onnx), "-q"]
    dry = _run("apply", "photos", "-o", "photos/../styled", "--dry-run", *model, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr.decode(errors="replace")
    result = _run("apply", "photos", "-o", "photos/../styled", *model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "data" / "styled" / "p0000.png").is_file()
    assert not (tmp_path / "styled").exists()


def test_quantize_to_a_path_through_a_linked_folder_writes_its_model(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """The same lexical `..` in every other atomic write:
    `styler quantize MODEL --calibration photos -o
    photos/../models/q.onnx`, `photos` a link to `data/pics` and
    `data/models` the user's models folder (no `./models`): the
    calibration and the PSNR check run, then `cannot write: No such file
    or directory`, exit 1, nothing written (the temporary is made in
    `./models`, styler/fsutil.py:132-134): all the work done, then a false
    reason (the P11 class). The model must be written at
    `data/models/q.onnx`."""
    _linked_photos(tmp_path, 2)
    (tmp_path / "data" / "models").mkdir()
    result = _run(
        "quantize", str(tiny_resnet_onnx), "--calibration", "photos",
        "-o", "photos/../models/q.onnx", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "data" / "models" / "q.onnx").is_file()


def test_train_into_a_run_folder_spelled_through_a_linked_folder_starts(tmp_path: Path) -> None:
    """`styler train A B -o photos/../run`, `photos` a link to
    `data/pics`: the run folder is made at `data/run` (with `checkpoints/`
    and `samples/`), then `photos/../run/config.json: cannot write: No
    such file or directory`, exit 1 (styler/fsutil.py:132-134, as above).
    The folder left behind holds no `config.json`, so the same command
    (or any spelling of it) is refused for good: `exists, is not empty
    and is not a styler run folder: choose another --output`; the user
    must find and remove `data/run` by hand. The run must start (and
    write its config and checkpoints in `data/run`)."""
    pytest.importorskip("torch")
    _linked_photos(tmp_path)
    args = train_args(tmp_path, Path("photos/../run"), "--steps", "2", *NO_EXPORT)
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "data" / "run" / "config.json").is_file()


def test_a_run_that_writes_nothing_removes_the_subfolders_it_made_in_its_output_folder(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply photos -o new/out` where every image of `photos` lies
    in a subfolder and fails at its write (here a name too long for its
    suffix; equally a full disk, a quota, a JPEG too wide): `0 styled, 0
    skipped (existing), 1 failed`, exit 1, nothing written, yet `new`,
    `new/out` and `new/out/sub` are all left behind, empty. The writer
    (`atomic_path`, styler/fsutil.py:131) makes the output's subfolder
    before the write fails, so `new/out` is not empty when the run removes
    the folders it made (styler/cli/apply.py:202-206: `rmdir` of
    `new/out` fails and is ignored, and so does `new`'s). The rule since
    the thirteenth pass is that a run that writes nothing removes the
    folders it made (P13:missing-input, P15:signal, P16): the subfolders
    it made for outputs it never wrote are among them."""
    photos = _photos(tmp_path / "photos" / "sub", 1, (32, 32))
    (photos / "p0000.png").rename(photos / ("x" * 248 + ".png"))
    result = _run(
        "apply", "photos", "-o", "new/out", "--suffix", "_styled",
        "-m", str(tiny_resnet_onnx), "-q", cwd=tmp_path,
    )  # fmt: skip
    assert _one_line(result, 1).endswith("File name too long"), result.stderr
    assert sorted(os.listdir(tmp_path)) == ["photos"], "folders the run made are left behind"


def test_export_of_a_run_whose_only_checkpoint_is_a_damaged_best_does_not_say_it_uses_it(
    tmp_path: Path,
) -> None:
    """A run folder without step checkpoints whose
    `checkpoints/best.safetensors` does not read (cut short by a copy,
    bit rot; equally another run's best). `styler export RUN` says
    `passing over .../best.safetensors: not a readable checkpoint ...;
    exporting the latest checkpoint`, then `RUN: no usable checkpoint (no
    step checkpoint in it, only the best one, which `styler export`
    uses): ...`, exit 2 (`RunFolder.resume_point`,
    styler/training/run.py:239-244, names the best checkpoint as export's
    whenever one is there): `styler export` telling the user that
    `styler export` uses the checkpoint it has just passed over, and
    `train --resume RUN` sending the user to an export that cannot work.
    The refusal stands; the reason must not claim a damaged best
    checkpoint is of use."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    more = ("--steps", "2", "--eval-every", "1", "--eval-photos", str(tmp_path / "a"))
    trained = _run(*train_args(tmp_path, run, *more, *NO_EXPORT))
    assert trained.returncode == 0, trained.stderr.decode(errors="replace")
    for step in (run / "checkpoints").glob("step_*"):
        step.unlink()
    best = run / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    result = _run("export", str(run))
    assert result.returncode == 2, result.stderr.decode(errors="replace")
    said = result.stderr.decode(errors="replace").strip().splitlines()[-1]
    assert "no usable checkpoint" in said, said
    assert "only the best one" not in said, said
