"""Reliability, the fifteenth pass: what a fifteenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the fifteenth pass's start (pass15, cb1d67d) for the reason its docstring
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


@pytest.mark.parametrize(
    ("args", "made"),
    [
        (["photos", "-o", "new/../photos", "--suffix", "-s"], "photos/p0000-s.png"),
        ([".", "-o", "new/../styled"], "styled/photos/p0000.png"),
    ],
)
def test_an_output_folder_spelled_through_a_folder_it_makes_is_no_missing_input(
    args: list[str], made: str, tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply . -o new/../styled` (or `apply photos -o new/../photos
    --suffix -s`; an `-o "$DIR/../styled"` of a script whose `$DIR` is not
    made yet), where `new` does not exist. `_run` (styler/cli/apply.py:143)
    lists as folders the run makes every one of `-o` and its parents that
    `lstat` does not find *as spelled*: `new/../styled`, `new/..` and
    `new`. Once `new` is made, `new/..` is the working folder and
    `new/../photos` is `photos`, both there before the run, and
    `collect_jobs(made=...)` (styler/paths.py:159) fails the input `.`
    (or `photos`) as `no such file`: exit 1, nothing styled, where
    `--dry-run` of the same command plans every image. An input that exists
    must be styled (as `-o styled` or `-o photos` does), and the dry run
    must say what the run does."""
    _photos(tmp_path / "photos", 2, (32, 32))
    model = ["-m", str(tiny_resnet_onnx), "-q"]
    planned = _run("apply", *args, *model, "--dry-run", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr.decode(errors="replace")
    assert planned.stdout.count(b" -> ") == 2, planned.stdout
    result = _run("apply", *args, *model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / made).is_file(), result.stderr.decode(errors="replace")


def test_a_run_that_writes_nothing_removes_only_folders_it_made(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler apply broken.png -o new/../keep` where `keep` is the user's
    (empty) folder, there before the run, and `new` does not exist: the
    input fails, nothing is written, and the run removes the folders it
    "made" (styler/cli/apply.py:190-193), `new/../keep` among them (listed
    as made because `lstat` does not find it while `new` is missing, see
    the test above): the user's folder `keep` is gone. A run must remove
    only folders it made."""
    (tmp_path / "keep").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    result = _run(
        "apply", "broken.png", "-o", "new/../keep", "-m", str(tiny_resnet_onnx), "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr.decode(errors="replace")
    assert (tmp_path / "keep").is_dir(), "the user's folder keep was removed"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_run_stopped_before_any_output_removes_the_folders_it_made(
    sig: str, tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`find ... | styler apply - -o new/out` (a new output folder; paths
    from a slow producer) stopped by SIGTERM (a job scheduler's time limit,
    `kill`) or SIGHUP (the terminal closed) before any output is written:
    the folders the run made, `new/out` and `new`, are left behind, empty.
    Ctrl-C at the same moment removes them (`_run` removes made folders
    only after `except KeyboardInterrupt`, styler/cli/apply.py:188-193;
    SIGTERM and SIGHUP raise `Terminated`, a SystemExit, which passes
    by). The thirteenth pass's rule is that a run that writes nothing
    removes the folders it made (a folder left at a missing input's place
    is later walked as that input, P13:missing-input), and SIGTERM and
    SIGHUP are documented to stop `apply` as Ctrl-C does: the folders must
    go whichever of the three stops the run."""
    number = getattr(signal, sig)
    model = tiny_resnet_onnx

    def defaults() -> None:  # (a test runner may have left them ignored)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-m", "styler", "apply", "-", "-o", "new/out", "-m", str(model), "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=defaults,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "new" / "out").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.05)
        time.sleep(0.5)  # waiting on stdin: nothing listed, nothing written
        proc.send_signal(number)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 128 + number, err.decode(errors="replace")
    assert not (tmp_path / "new").exists(), sorted(os.listdir(tmp_path))


def test_resume_of_a_run_that_never_saved_a_step_checkpoint_does_not_say_they_are_gone(
    tmp_path: Path,
) -> None:
    """A run with `--eval-every 1` keeps `checkpoints/best.safetensors` from
    its first score; its first step checkpoint comes later (here at step
    30; by default a minute in). Blown up at step 2 (`--lr 1e10`; equally
    a kill, an error, out of memory), it never saved a step checkpoint.
    `styler train --resume RUN` says today `no usable checkpoint (its step
    checkpoints are gone): the same `styler train` starts afresh, ...`
    (`RunFolder.resume_point`, styler/training/run.py:237-242, takes
    `best.safetensors` for the sign of a run whose step checkpoints were
    deleted): false, there never were any, and it sends the user looking
    for who deleted them. The refusal stands (exit 2, one line, nothing
    changed), with a true reason (no step checkpoint was saved, or a
    wording true of both cases)."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "40", "--checkpoint-every", "30")
    more = ("--precision", "fp32", "-q", "--eval-every", "1", "--eval-photos", str(tmp_path / "a"))
    blown = _run(*args, *more, "--lr", "1e10")
    assert "NaN or infinite" in _one_line(blown, 2)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["best.safetensors"]
    line = _one_line(_run("train", "--resume", str(run)), 2)
    assert "no usable checkpoint" in line, line
    assert "gone" not in line, line
