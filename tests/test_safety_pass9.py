"""Reliability, the ninth pass: what a ninth hostile review found (results
read back when styling in place from a stream or from mislabelled files, a
dangling symbolic link at a model output, a finished run's report removed).
Each case runs through the real CLI on tiny files; each fails on the code of
the ninth pass's start (wt9, 55da8b9) for the reason its docstring gives.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _photos, _run

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


#: What the run-folder tests add to `train_args` to train fast and export nothing.
NO_EXPORT = ("--precision", "fp32", "--no-export", "-q")


def train_args(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    """`styler train` of two tiny photo folders (made under ``tmp_path``)
    into ``run`` with the smallest CycleGAN, then ``extra``."""
    a = _photos(tmp_path / "a", 2, (32, 32))
    b = _photos(tmp_path / "b", 2, (32, 32))
    return [
        "train", str(a), str(b), "-o", str(run), "--mode", "cyclegan",
        "--gen", "resnet_2blocks", "--ngf", "4", "--ndf", "4", "--size", "32", *extra,
    ]  # fmt: skip


def style_listing_in_place_twice(folder: Path, model: Path) -> None:
    """`ls | styler apply - -o . --suffix -s` in ``folder``, twice, each
    exiting 0 (`-` sorts before `.`: results are listed before sources)."""
    for _ in range(2):
        listing = "".join(f"{name}\n" for name in sorted(os.listdir(folder))).encode()
        result = _run(
            "apply", "-", "-m", str(model), "-o", ".", "--suffix", "-s", "-q",
            cwd=folder, stdin=listing,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode(errors="replace")


# -- in place: results are never read back --


def test_in_place_from_stdin_never_styles_its_own_results(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """S:in-place promises that, styling a folder into itself with a
    suffix, an earlier result is never styled again. With paths on stdin
    the planner streams: an input is known (and its output's name with
    it) only once it is read. A result listed before its source (`ls`
    with the suffix `-s`, which sorts before `.`; `find`'s directory order
    with any suffix) is not yet known as one: the second run styles
    `p0000-s.png` into `p0000-s-s.png`, exit 0."""
    photos = _photos(tmp_path / "in", 2, (16, 16))
    style_listing_in_place_twice(photos, tiny_resnet_onnx)
    assert sorted(os.listdir(photos)) == ["p0000-s.png", "p0000.png", "p0001-s.png", "p0001.png"]


def test_in_place_never_styles_the_result_of_a_mislabelled_file(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A PNG named `a.jpg` is written as `a-s.png` (H:corpus: the format
    follows the content). In place with `--suffix -s`, the planner knows
    the inputs' results by name from their *extension* (`a-s.jpg`), so on
    the second run `a-s.png` (listed before `a.jpg`) is not recognised as
    an earlier result and is styled into `a-s-s.png`, exit 0 (with `_s`
    the result is listed after its source and the claim check hides it)."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(folder / "a.jpg", format="PNG")
    model = str(tiny_resnet_onnx)
    for _ in range(2):
        result = _run("apply", str(folder), "-m", model, "-o", str(folder), "--suffix", "-s", "-q")
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert sorted(os.listdir(folder)) == ["a-s.png", "a.jpg"]


# -- a dangling symbolic link at a model output --


def _model_output_commands(tiny_resnet_onnx: Path, tmp_path: Path) -> dict[str, list[str]]:
    """quantize, export and import of tiny models, each to its default output."""
    torch = pytest.importorskip("torch")

    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    config = generator_preset("resnet_2blocks", ngf=4)
    weights = tmp_path / "g.safetensors"
    save_generator(weights, zoo.build(config).state_dict(), ModelMetadata(network=config, name="g"))
    pth = tmp_path / "g_net_G_A.pth"
    torch.save(zoo.build(config).state_dict(), pth)
    photos = _photos(tmp_path / "cal", 2, (16, 16))
    return {
        "quantize": [
            "quantize",
            str(tiny_resnet_onnx),
            "--calibration",
            str(photos),
            "--min-psnr",
            "0",
        ],
        "export": ["export", str(weights)],
        "import": ["import", str(pth)],
    }


@pytest.mark.parametrize("command", ["quantize", "export", "import"])
def test_a_dangling_symlink_at_the_output_is_an_existing_output(
    command: str, tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`-o LINK` where LINK is a dangling symbolic link (a model moved away,
    a link to a disk not mounted): the check at the start follows links
    and sees nothing there, so the command does all its work, then the
    hard-link publish finds the name taken and says
    `LINK: appeared while styler wrote it: kept as it is`, exit 1. Nothing
    appeared: the link was there from the start. `apply` takes such a link
    for the user's file (`output exists`); here it must be the usual
    `LINK exists; pass --overwrite to replace it`, before any work, exit 2."""
    pytest.importorskip("torch")
    args = _model_output_commands(tiny_resnet_onnx, tmp_path)[command]
    link = tmp_path / "out.onnx"
    link.symlink_to(tmp_path / "gone" / "model.onnx")
    result = _run(*args, "-o", str(link), cwd=tmp_path)
    line = _one_line(result, 2)
    assert "appeared" not in line, line
    assert "exists" in line and "--overwrite" in line, line
    assert os.readlink(link) == str(tmp_path / "gone" / "model.onnx")
    assert result.stdout == b""


# -- a finished run's report and samples --


def test_a_finished_run_without_its_checkpoints_is_not_taken_for_a_failed_start(
    tmp_path: Path,
) -> None:
    """ST2:projected: a run folder holding only what a run writes before its
    first checkpoint (config.json, metrics, report, sample grids) is taken
    for a run that failed at its start, and a new `train -o` there removes
    those files and starts afresh. But a *finished* run whose checkpoints
    were deleted to free space (its models moved away) holds exactly those
    files too: a new `styler train ... -o RUN` says `RUN held only the
    files of a run that stopped before its first checkpoint: starting
    afresh there` (its metrics show the run reached its last step) and
    replaces the finished run's report.html, metrics.jsonl and sample
    grids, exit 0. They must be kept: since the twelfth pass every fresh
    start sets such files aside in RUN/earlier-<time>/ (no rule has to tell
    a finished run from a failed one)."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", "-q")
    first = _run(*args)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    models = tmp_path / "models"
    models.mkdir()
    for onnx in run.glob("*.onnx"):
        shutil.move(onnx, models / onnx.name)
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.unlink()  # the checkpoints, 32 MB each for a real model, removed to free space
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert run / "report.html" in kept and run / "samples" / "step_0000002.png" in kept
    again = _run(*args[:-1], "--seed", "5", "-q")
    # Decided in the twelfth pass: the new run starts there and the finished
    # run's files are set aside, byte for byte, in RUN/earlier-<time>/.
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    (aside,) = run.glob("earlier-*")
    now = {p: (aside / p.relative_to(run)).read_bytes() for p in kept}
    assert now == kept
    assert b"are kept in" in again.stderr


def test_a_grid_never_has_more_columns_than_images() -> None:
    """`generate --grid` lays out a row per class, taking the class count from
    the model's metadata, which nothing ties to the graph: a generator whose
    metadata claims 100,000 classes made a 6,600,002 x 68 grid (449 MP) for
    one image, which neither Pillow nor styler will open again."""
    from styler.generate import Generated, grid

    item = Generated(0, None, np.zeros((8, 8, 3), np.uint8))
    picture = grid([item], columns=100_000)
    assert picture.size[0] <= 100, picture.size
    assert grid([item] * 3, columns=2).size[0] == grid([item] * 2, columns=2).size[0]
