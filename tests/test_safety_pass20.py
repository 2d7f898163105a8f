"""Reliability, the twentieth pass: what a twentieth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the twentieth pass's start (pass20, eadea4b) for the reason its docstring
gives.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _one_line, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _small_files_only() -> None:
    """A disk that fills up at once (a quota, a full disk): no file of more
    than 64 bytes can be written (the write fails with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_fresh_start_over_a_run_without_checkpoints_on_a_full_disk_can_start_again(
    tmp_path: Path,
) -> None:
    """`styler train a b -o run` where `run` holds a run without step
    checkpoints (what the code sets aside: one stopped before its first
    checkpoint, or one whose step checkpoints are gone), on a full disk.
    `RunFolder.create` (styler/training/run.py:191-206) first moves the old
    files into `run/earlier-<time>/` (renames: no space needed), then fails
    to write the new `config.json` (`cannot write: File too large`, right);
    `remove_made` has nothing to remove (`run` was there before). `run` is
    left holding `earlier-<time>/` (and the emptied `checkpoints/` and
    `samples/`) but no `config.json`, so once space is freed the very same
    command is refused for good: `run exists, is not empty and is not a
    styler run folder: choose another --output`, exit 2 (`--resume run`:
    `is not a styler run folder (no config.json)`), though everything in it
    is styler's (P19:config-write's promise, "a full disk no longer leaves a
    folder the same command refuses for good", broken on this path; the
    same follows a Ctrl-C or a kill between the set-aside and the write).
    The same command, run again, must start afresh (the earlier files kept
    aside), or the failed start must leave the folder as it found it."""
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    first = _run(*args, timeout=600)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    for step in (run / "checkpoints").glob("step_*"):
        step.unlink()  # a run without step checkpoints: a fresh start sets it aside
    full = _run(*args, preexec=_small_files_only, timeout=600)
    assert full.returncode == 1, _lines(full)
    assert b"config.json: cannot write: File too large" in full.stderr, _lines(full)
    kept = [p for p in run.glob("earlier-*/config.json")]
    assert len(kept) == 1 or (run / "config.json").is_file(), _files(run)
    again = _run(*args, timeout=600)
    assert again.returncode == 0, _lines(again)
    assert (run / "config.json").is_file(), _files(run)


def _train_where_mkdir_fails(tmp_path: Path, name: str, args: list[str]):
    """``styler ARGS`` (the real entry point) where making a folder called
    ``name`` fails with ENOSPC: a file system out of inodes (or an inode
    quota) whose last one the run's config.json took."""
    code = (
        "import errno, os, runpy, sys\n"
        "real = os.mkdir\n"
        "def mkdir(path, *a, **k):\n"
        f"    if os.path.basename(os.fspath(path)) == {name!r}:\n"
        "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))\n"
        "    return real(path, *a, **k)\n"
        "os.mkdir = mkdir\n"
        "sys.argv = ['styler', *sys.argv[1:]]\n"
        "runpy.run_module('styler', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,
    )


@pytest.mark.parametrize("name", ["checkpoints", "samples"])
def test_a_start_that_cannot_make_its_subfolders_says_one_line(tmp_path: Path, name: str) -> None:
    """`styler train a b -o new/run` where `config.json` is written but
    making `checkpoints/` (or `samples/`) then fails (ENOSPC: the file
    system's, or the user's inode quota's, last inode went to config.json).
    The two `mkdir` calls after the config write (styler/training/run.py:207-208)
    are outside any handling: the whole command dies with a Python
    traceback ending `OSError: [Errno 28] No space left on device:
    '.../new/run/checkpoints'`, exit 1. (What it leaves is fine: the same
    command starts afresh there.) It must say one line naming the folder
    and the cause, as the config write's failure does (`config.json: cannot
    write: ...`), exit 1, no traceback."""
    run = tmp_path / "new" / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    failed = _train_where_mkdir_fails(tmp_path, name, args)
    line = _one_line(failed, 1)
    assert name in line and "No space left on device" in line, line
    again = _run(*args, timeout=600)
    assert again.returncode == 0, _lines(again)
