"""Reliability, the nineteenth pass: what a nineteenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the nineteenth pass's start (pass19, 6a21ba1) for the reason its docstring
gives.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _one_line, _photos, _run, _start
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _small_files_only() -> None:
    """A disk that fills up at once (a quota, a full disk): no file of more
    than 64 bytes can be written (Python ignores SIGXFSZ; the write fails
    with EFBIG, `File too large`)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_train_whose_config_write_fails_leaves_no_half_made_run_folder(tmp_path: Path) -> None:
    """`styler train a b -o new/run` (and `-o keep`, the user's own empty
    folder) on a disk that is full (a quota, a full disk: the write of
    `config.json`, a few KB, fails). The line is right, `new/run/config.json:
    cannot write: File too large`, exit 1; but `RunFolder.create`
    (styler/training/run.py:181, 199-201) has made `new/run` (and `new`)
    with `checkpoints/` and `samples/` before it writes `config.json`, and
    nothing removes them when that write fails. A folder holding those two
    empty folders and no `config.json` is no styler run folder, so once
    space is freed the very same command is refused for good: `new/run
    exists, is not empty and is not a styler run folder: choose another
    --output`, exit 2 (and the user's `keep` is left holding styler's
    empty folders, refused the same way); the user must find and remove
    them by hand (the consequence P17:link-dotdot's third test named,
    still there for every other reason the first write fails). What the
    failed start made must go (`new`, `new/run`, or `keep`'s new
    subfolders), and the same command, run again, must start."""
    keep = tmp_path / "keep"
    keep.mkdir()
    for out in (tmp_path / "new" / "run", keep):
        args = train_args(tmp_path, out, "--steps", "2", *NO_EXPORT)
        failed = _run(*args, preexec=_small_files_only, timeout=600)
        line = _one_line(failed, 1)
        assert "config.json: cannot write: File too large" in line, line
        if out == keep:
            assert keep.is_dir() and not list(keep.iterdir()), list(keep.iterdir())
        else:
            assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
        again = _run(*args, timeout=600)
        assert again.returncode == 0, again.stderr.decode(errors="replace")
        assert (out / "config.json").is_file()


def test_a_dry_run_removes_no_folder_it_did_not_make(
    tmp_path: Path, tiny_resnet_onnx: Path
) -> None:
    """`find ... | styler apply - -o new/out --dry-run` (a slow producer of
    paths: a dry run before a long batch): a dry run makes nothing (it
    plans), yet the `finally` of `_run` (styler/cli/apply.py:201-203)
    calls `remove_made(made)` whenever nothing was written, and `made`
    (styler/cli/apply.py:153) lists the folders a real run would make,
    all missing when the dry run began. Meanwhile the user (or the real
    run the dry run is previewing, started in another terminal) has made
    `new/out` and an empty `new/out/drafts` of their own: when the dry run
    ends, `remove_made` walks `new/out` and removes `drafts`, `out` and
    `new` (every empty folder there), folders this command never made. A
    dry run must remove nothing: it made nothing."""
    _photos(tmp_path / "photos", 1)
    args = ["apply", "-", "-m", str(tiny_resnet_onnx), "--dry-run", "-o", "new/out"]
    proc = _start(args, tmp_path, stdin=True)
    try:
        assert proc.stderr is not None
        header = proc.stderr.readline()  # printed once the run reads its paths
        assert b"tiny-resnet" in header, header
        drafts = tmp_path / "new" / "out" / "drafts"
        drafts.mkdir(parents=True)  # the user's, made while the dry run lists
        assert proc.stdin is not None
        proc.stdin.write(b"photos/p0000.png\n")
        proc.stdin.close()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        out = proc.stdout.read() if proc.stdout else b""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, proc.returncode
    assert b"new/out/photos/p0000.png" in out, out
    assert drafts.is_dir(), "the dry run removed a folder it never made"
