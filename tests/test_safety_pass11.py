"""Reliability, the eleventh pass: what an eleventh hostile review found
(the tenth pass's rule for a run that ended, which calls a stopped run with
its checkpoints one "with no checkpoint", takes a run that failed at its
first checkpoint for one that ended, and reads a named pipe at
metrics.jsonl; an output whose folder is a file). Each case runs through
the real CLI on tiny files; each fails on the code of the eleventh pass's
start (wt11, 18dcaf1) for the reason its docstring gives.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _run
from test_safety_pass9 import NO_EXPORT, _model_output_commands, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _train_args(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return train_args(tmp_path, run, *NO_EXPORT, *extra)


# -- a run folder that ended, and one that did not --


def test_a_run_with_its_checkpoints_is_never_said_to_have_none(tmp_path: Path) -> None:
    """A run stopped by SIGTERM or Ctrl-C (or one that finished) saves its
    last checkpoint, then a sample grid of its last step, and says
    `Continue with: styler train --resume RUN`. The same `styler train ...
    -o RUN` again is refused, rightly, but since P10 with `RUN holds a run
    that ended (its report, metrics and samples) and no checkpoint to
    continue from: choose another --output`: the checkpoint is there, and
    `--resume RUN` works; the line sends the user to start over elsewhere.
    (`RunFolder.check_new` asks `_ended()` without looking for checkpoints.)
    The refusal must not say there is no checkpoint, and must name
    `--resume`."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = _train_args(tmp_path, run, "--steps", "2")
    first = _run(*args)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    assert list((run / "checkpoints").glob("step_*.safetensors"))
    again = _run(*args)
    line = _one_line(again, 2)
    assert "no checkpoint" not in line, line
    assert "--resume" in line, line
    resumed = _run("train", "--resume", str(run), "--steps", "3", "-q")
    assert resumed.returncode == 0, resumed.stderr.decode(errors="replace")


def test_a_run_that_failed_writing_its_first_checkpoint_is_not_a_run_that_ended(
    tmp_path: Path,
) -> None:
    """P10: a run folder is history only when the run ended (a sample grid
    at the last step of its metrics), "which a run that failed (NaN, an
    error, a kill) never has"; a failed run is started afresh by the same
    command. But between steps the sample grid is written *before* the
    checkpoint: a run whose first checkpoint cannot be written (a full disk,
    H:train-disk; or a kill inside that write) leaves metrics at step 1 and
    `samples/step_0000001.png`. After freeing space, the same command says
    `RUN holds a run that ended (...) and no checkpoint to continue from:
    choose another --output`, and `--resume` says `no usable checkpoint
    (the run ended; its checkpoints are gone)`, exit 2: the run did not
    end, it failed. The same command must start it afresh."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = _train_args(tmp_path, run, "--steps", "3", "--checkpoint-every", "1", "--workers", "1")

    def small_disk() -> None:  # the sample grid (~50 kB) fits, the checkpoint (~320 kB) not
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    failed = _run(*args, preexec=small_disk)
    line = _one_line(failed, 1)
    assert "cannot write: File too large" in line, line
    assert not list((run / "checkpoints").iterdir())
    # (the grid of step 1 is now written after its checkpoint, so it is not there)
    again = _run(*args)
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert (run / "checkpoints" / "step_0000003.safetensors").is_file()


@pytest.mark.parametrize("kind", ["named pipe", "link to /dev/zero"])
def test_a_metrics_file_that_is_not_a_file_never_hangs_a_new_run(kind: str, tmp_path: Path) -> None:
    """P8 held: FIFOs as a checkpoint, config.json or metrics.jsonl give one
    line, no hang (`--resume` checks the run folder's parts first). P10's
    `RunFolder.check_new` now asks `_ended()` of every non-empty folder that
    is not a failed start, and `_ended()` opens metrics.jsonl whatever it
    is: `styler train A B -o RUN` where RUN/metrics.jsonl is a named pipe
    blocks forever in `open()` before any work (a symbolic link to
    /dev/zero spins forever on one CPU). It must be one line, exit 2."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    if kind == "named pipe":
        os.mkfifo(run / "metrics.jsonl")
    else:
        (run / "metrics.jsonl").symlink_to("/dev/zero")
    result = _run(*_train_args(tmp_path, run, "--steps", "2"), timeout=30)
    _one_line(result, 2)


# -- an output whose folder is a file --


@pytest.mark.parametrize("command", ["quantize", "export", "import"])
def test_an_output_inside_a_file_is_refused_before_any_work_for_what_it_is(
    command: str, tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`-o notes.txt/model.onnx` (a typo, a file where a folder was meant):
    `apply -o X/out` and `train -o FILE/sub` are refused before any work
    (`cannot create the output folder: Not a directory`), and P4 refused
    `-o FOLDER` before any work. quantize, export and import do all their
    work (calibrating, exporting, checking parity), then say
    `notes.txt/model.onnx: cannot write: File exists`, exit 1: nothing
    exists at that name; the atomic writer's `mkdir(exist_ok=True)` of the
    parent reports the *file* it found there as EEXIST. (`generate --grid
    notes.txt/g.png` does the same after writing every sample.) The
    refusal must come before any work, exit 2, and not say `File exists`."""
    args = _model_output_commands(tiny_resnet_onnx, tmp_path)[command]
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    result = _run(*args, "-o", str(blocker / "model.onnx"), cwd=tmp_path)
    line = _one_line(result, 2)
    assert "File exists" not in line, line
    assert "notes.txt" in line, line
    assert blocker.read_text() == "mine\n"
    assert result.stdout == b""
