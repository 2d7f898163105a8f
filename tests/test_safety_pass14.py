"""Reliability, the fourteenth pass: what a fourteenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the fourteenth pass's start (pass14, ba90ef5) for the reason its docstring
gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kept", ["its exported models", "its best checkpoint"])
def test_resume_of_a_run_that_lost_its_step_checkpoints_does_not_say_it_never_saved_one(
    kept: str, tmp_path: Path
) -> None:
    """Since the thirteenth pass a run folder without step checkpoints that
    holds its exported models (`a_to_b.onnx`, `b_to_a.onnx`: a run that
    ended and was exported, its step checkpoints deleted to free space) or
    `checkpoints/best.safetensors` is one `RunFolder.leftover` lists. Today
    `styler train --resume RUN` (and `styler export RUN` of the exported
    run) says `RUN: no usable checkpoint (the run stopped before its
    first): the same `styler train` starts it again; nothing was changed`
    (`RunFolder.resume_point`, styler/training/run.py:235-236, words every
    folder `leftover` lists so). Both runs went to their last step, and the
    second still holds a checkpoint (`best.safetensors`, which `styler
    export RUN` exports): "stopped before its first" is false. The refusal
    stands (exit 2, one line, nothing changed), but it must give the true
    reason: the run's step checkpoints are gone."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    if kept == "its exported models":
        first = _run(*train_args(tmp_path, run, "--precision", "fp32", "-q", "--steps", "2"))
        assert first.returncode == 0, first.stderr.decode(errors="replace")
        assert sorted(p.name for p in run.glob("*.onnx")) == ["a_to_b.onnx", "b_to_a.onnx"]
        for checkpoint in (run / "checkpoints").iterdir():
            checkpoint.unlink()
    else:
        first = _run(*train_args(tmp_path, run, *NO_EXPORT, "--steps", "2"))
        assert first.returncode == 0, first.stderr.decode(errors="replace")
        (step,) = (run / "checkpoints").iterdir()
        step.rename(run / "checkpoints" / "best.safetensors")
    commands = [("train", "--resume", str(run))]
    if kept == "its exported models":
        commands.append(("export", str(run)))
    for command in commands:
        line = _one_line(_run(*command), 2)
        assert "no usable checkpoint" in line, (command, line)
        assert "stopped before its first" not in line, (command, line)


def test_whether_an_in_place_photo_is_styled_does_not_depend_on_the_working_folder(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply /abs/photos -o /abs/photos --suffix -s` (a folder
    styled in place, every path absolute) where `photos/x-s.png` is the
    user's photo (no `photos/x.png` beside it) and the working folder,
    unrelated to the command, happens to hold an image `x.png`: today
    `photos/x-s.png` is skipped, `named like the output of x.png: taken as
    an earlier result and not styled`, and the run says `1 styled, 1
    skipped (existing)`, exit 0; run from any other folder the same
    command styles it into `x-s-s.png`. `Planner._source_above`
    (styler/apply.py:377-397), meant for a *listing* of paths relative to
    the working folder that holds the output folder (`find . | styler
    apply -`), also takes walked inputs (whose place below the output
    folder is their place below the walked folder, not below the working
    folder) and absolute ones, and looks for their "source" in the working
    folder, a file that is no input of the run and whose output under this
    command is never `photos/x-s.png`. The same command with absolute paths
    must do the same whatever the working folder holds: `photos/x-s.png`
    styled."""
    photos = tmp_path / "photos"
    work = tmp_path / "work"
    photos.mkdir()
    work.mkdir()
    rng = np.random.default_rng(3)
    for path in (photos / "x-s.png", photos / "y.png", work / "x.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    args = ["apply", str(photos), "-o", str(photos), "--suffix", "-s"]
    result = _run(*args, "-m", str(tiny_resnet_onnx), "-q", cwd=work)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert sorted(p.name for p in photos.iterdir()) == [
        "x-s-s.png",
        "x-s.png",
        "y-s.png",
        "y.png",
    ], result.stderr.decode(errors="replace")


def test_a_missing_folder_listed_on_stdin_is_not_made_by_the_output_folder(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A judgement call of the fourteenth pass, mended: `echo Photos |
    styler apply - -o Photos --suffix -s` where `Photos` does not exist
    (the thirteenth pass's missing input, through stdin, which is read
    after the output folder is made) said `0 styled, 0 skipped, 0 failed`,
    exit 0: the folder the run made was walked as the input. A folder the
    run made itself is no input: `no such file`, exit 1, nothing left."""
    args = ["apply", "-", "-o", "Photos", "--suffix", "-s", "-m", str(tiny_resnet_onnx), "-q"]
    result = _run(*args, cwd=tmp_path, stdin=b"Photos\n")
    assert result.returncode == 1, result.stderr.decode(errors="replace")
    assert b"Photos: no such file" in result.stderr
    assert not (tmp_path / "Photos").exists()
