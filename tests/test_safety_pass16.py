"""Reliability, the sixteenth pass: what a sixteenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the sixteenth pass's start (pass16, fee1a97) for the reason its docstring
gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _env, _one_line, _photos, _run
from test_safety_pass9 import train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def test_a_mistyped_input_is_not_made_by_an_output_folder_spelled_through_it(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply Photos -o Photos/../styled` (a script's `-o
    "$IN/../styled"`) where `Photos` does not exist (a typo for `photos`;
    an unmounted disk). The input fails, `Photos: no such file`, exit 1,
    nothing is written, and the run removes the folders it made; but it
    knows them by `os.path.realpath(output)` and its parents
    (styler/cli/apply.py:156-157), and `Path.mkdir(parents=True)` in
    `check_output_folder` walks the path as spelled: it makes `Photos`
    (to reach `Photos/..`), which is no parent of the real output folder
    `styled`. `styled` is removed, the empty `Photos` is left behind, and
    the next `styler apply Photos -o styled` walks it: `0 styled, 0
    skipped (existing), 0 failed`, exit 0, success for styling nothing
    (the thirteenth pass's missing input, P13:missing-input, back through
    `..`). A run that writes nothing must remove every folder it made."""
    _photos(tmp_path / "photos", 1, (32, 32))
    model = ["-m", str(tiny_resnet_onnx), "-q"]
    first = _run("apply", "Photos", "-o", "Photos/../styled", *model, cwd=tmp_path)
    assert _one_line(first, 1).endswith("Photos: no such file"), first.stderr
    assert sorted(os.listdir(tmp_path)) == ["photos"], "folders the run made are left behind"
    again = _run("apply", "Photos", "-o", "styled", *model, cwd=tmp_path)
    assert again.returncode == 1, again.stderr.decode(errors="replace")


def test_an_output_folder_that_cannot_be_made_whole_leaves_no_folder_behind(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply photos -o new/<a 300-character name>` (equally an
    output folder whose write test fails once made: a full disk, a default
    ACL): `check_output_folder` (styler/cli/apply.py:160) makes `new`,
    then fails on the last part, `cannot create the output folder: File
    name too long`, exit 2, and `new` is left behind, empty: the
    `try/finally` that removes the folders a run made when nothing was
    written begins only after that check (styler/cli/apply.py:164), so a
    usage error there keeps them. The refusal is right; the folders the
    run made on the way must go, as on every other exit."""
    _photos(tmp_path / "photos", 1, (32, 32))
    result = _run(
        "apply", "photos", "-o", "new/" + "x" * 300, "-m", str(tiny_resnet_onnx), "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert "File name too long" in _one_line(result, 2)
    assert sorted(os.listdir(tmp_path)) == ["photos"], "folders the run made are left behind"


def test_resume_after_exporting_a_best_checkpoint_does_not_say_step_checkpoints_are_gone(
    tmp_path: Path,
) -> None:
    """A run with `--eval-every 1` keeps `checkpoints/best.safetensors`
    from its first score; its first step checkpoint comes much later
    (by default a minute in). Killed before it (SIGKILL: out of memory, a
    scheduler, a power cut), it never saved a step checkpoint, and
    `styler train --resume RUN` says so truly since the fifteenth pass:
    `no usable checkpoint (no step checkpoint, only the best one, which
    `styler export` uses)`. The user does what it says: `styler export
    RUN` writes `a_to_b.onnx` and `b_to_a.onnx` into the run folder from
    the best checkpoint. The next `styler train --resume RUN` now says
    `no usable checkpoint (its step checkpoints are gone)`
    (`RunFolder.resume_point`, styler/training/run.py:239-240, takes
    exported models for the sign of a run that ended and saved a step
    checkpoint): false, there never were any, the P15 finding back
    through styler's own advice. The refusal stands (exit 2, one line,
    nothing changed), with the true reason."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "100000", "--checkpoint-every", "50000")
    more = ("--precision", "fp32", "-q", "--eval-every", "1", "--eval-photos", str(tmp_path / "a"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "styler", *args, *more],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "best.safetensors").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["best.safetensors"]
    said = _one_line(_run("train", "--resume", str(run)), 2)
    assert "only the best one" in said, said
    exported = _run("export", str(run))
    assert exported.returncode == 0, exported.stderr.decode(errors="replace")
    assert (run / "a_to_b.onnx").is_file()
    line = _one_line(_run("train", "--resume", str(run)), 2)
    assert "no usable checkpoint" in line, line
    assert "gone" not in line, line
