"""Reliability, the twelfth pass: what a twelfth hostile review found. Each
case runs through the real CLI on tiny files; each fails on the code of the
twelfth pass's start (pass12, d2b691a) for the reason its docstring gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _train_args(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return train_args(tmp_path, run, *NO_EXPORT, *extra)


def run_that_lost_its_checkpoints(tmp_path: Path, run: Path) -> list[str]:
    """A two-step run in ``run`` whose checkpoints were then deleted (to free
    space); the command that trained it."""
    args = _train_args(tmp_path, run, "--steps", "2")
    first = _run(*args)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.unlink()
    return args


@pytest.mark.parametrize("stray", [".DS_Store", "notes.txt"])
def test_a_run_that_ended_without_checkpoints_is_not_sent_to_resume(
    stray: str, tmp_path: Path
) -> None:
    """A finished run whose checkpoints were deleted to free space, with
    one file that is not a checkpoint left in `checkpoints/` (the
    `.DS_Store` a file browser leaves, a user's note). The same `styler
    train ... -o RUN` again says today `RUN exists and is not empty:
    continue it with styler train --resume RUN`, and that `--resume` says
    `no usable checkpoint (the run ended; its checkpoints are gone): train
    anew with another --output`: the first line's advice is a dead end
    (`RunFolder._has_checkpoints` counts any entry of `checkpoints/`, where
    `--resume` looks for checkpoints). The refusal must not advise
    `--resume` when `--resume` cannot work."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = run_that_lost_its_checkpoints(tmp_path, run)
    (run / "checkpoints" / stray).write_bytes(b"\0\0\0\1Bud1")
    resumed = _run("train", "--resume", str(run), "-q")
    assert "no usable checkpoint" in _one_line(resumed, 2)  # --resume cannot continue it
    again = _run(*args)
    line = _one_line(again, 2)
    assert "--resume" not in line, line


@pytest.mark.parametrize("given", ["the photos", "a user's folder"])
def test_a_folder_that_is_no_run_is_not_sent_to_resume(given: str, tmp_path: Path) -> None:
    """`styler train photos paintings -o photos` (or `-o` any folder of the
    user's, not a run folder) is refused today with `photos exists and is
    not empty: continue it with styler train --resume photos or choose
    another --output`, and that `--resume` says `photos is not a styler run
    folder (no config.json)`: the advice is a dead end (`RunFolder.check_new`
    advises `--resume` for any folder it would not start afresh). The
    refusal must not advise `--resume` for a folder `--resume` refuses."""
    pytest.importorskip("torch")
    args = _train_args(tmp_path, tmp_path / "a", "--steps", "2")
    if given != "the photos":
        folder = tmp_path / "letters"
        folder.mkdir()
        (folder / "letter.txt").write_text("Dear ...")
        args[args.index("-o") + 1] = str(folder)
    folder = Path(args[args.index("-o") + 1])
    resumed = _run("train", "--resume", str(folder), "-q")
    assert "not a styler run folder" in _one_line(resumed, 2)  # --resume cannot continue it
    line = _one_line(_run(*args), 2)
    assert "--resume" not in line, line


def test_a_run_killed_before_its_first_checkpoint_is_not_a_run_that_ended(
    tmp_path: Path,
) -> None:
    """Sample grids are written on their own schedule (about 40 a run, or
    `--sample-every`); checkpoints at those steps only once a minute has
    passed (`MIN_CHECKPOINT_SECONDS`). A run killed (SIGKILL, the OOM
    killer, a power cut; SIGHUP too until pass 29 made it save) in
    its first minute, during the step after a sample grid, leaves a grid at
    the last step of its metrics and no checkpoint: `RunFolder._ended`
    reads that as a run that ended (the P11 rule assumes a grid at the last
    step follows a checkpoint). The same `styler train ... -o RUN` is
    refused today with `RUN holds a run that ended (its report, metrics and
    samples) and no checkpoint to continue from: choose another --output`,
    and `--resume` says `the run ended; its checkpoints are gone`. The run
    never ended and never saved: as any run that stopped before its first
    checkpoint, it must be started afresh there."""
    pytest.importorskip("torch")
    import os
    import signal
    import subprocess
    import time

    run = tmp_path / "run"
    args = _train_args(tmp_path, run, "--steps", "500", "--sample-every", "1")
    for _ in range(5):  # killed just after a grid, before the next step's line
        proc = subprocess.Popen(
            [sys.executable, "-m", "styler", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        grid = run / "samples" / "step_0000003.png"
        deadline = time.monotonic() + 120
        while not grid.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = (run / "metrics.jsonl").read_bytes().splitlines()[-1]
        if b'"step": 3,' in last and not list((run / "checkpoints").iterdir()):
            break
        for path in sorted(run.rglob("*"), reverse=True):  # the kill came too late: again
            path.rmdir() if path.is_dir() else path.unlink()
    else:
        pytest.skip("could not kill the run just after its grid of step 3")
    again = _run(*args[:-4], "--steps", "2")  # the same command, shorter
    text = again.stderr.decode(errors="replace")
    assert again.returncode == 0, text
    assert "ended" not in text, text
    assert list((run / "checkpoints").glob("step_*.safetensors")), text
