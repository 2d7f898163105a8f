"""Reliability, the eighteenth pass: what an eighteenth hostile review found.
Each case runs through the real CLI on tiny files; each fails on the code of
the eighteenth pass's start (pass18, d2a05c2) for the reason its docstring
gives.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import _run, _start
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _users_empty_folder(tmp_path: Path) -> tuple[Path, int]:
    """``tmp_path/keep``: the user's own empty folder, private (0700), made
    for the run; and its inode (the same folder, not one made again)."""
    keep = tmp_path / "keep"
    keep.mkdir()
    keep.chmod(0o700)
    return keep, keep.stat().st_ino


def test_train_that_fails_keeps_the_users_folder_spelled_through_a_missing_one(
    tmp_path: Path,
) -> None:
    """`styler train a b -o new/../keep` (a script's `-o "$DIR/../keep"`,
    the P15 idiom) where `keep` is the user's empty folder and `new` does
    not exist, and the run then fails on its data (here every file of `b`
    is not an image: `no usable images in b`, exit 2; equally a bad flag
    found later, a Ctrl-C while the images load). `RunFolder.check_writable`
    (styler/training/run.py:145, called by styler/cli/train.py:354 before
    any image is decoded) lists the folders its check makes by
    `os.path.lexists` of the run folder and its parents *as spelled*:
    while `new` is missing, `new/../keep` is not found, so it is counted
    as made, and the `finally` (styler/training/run.py:154-157) removes it
    with `rmdir`: the user's folder `keep` is gone (and the made `new`
    too). `apply` knows made folders by where they are since the fifteenth
    pass (P15:keep, `_to_make`); `train` must as well: a folder that was
    there before the run is never removed."""
    keep, inode = _users_empty_folder(tmp_path)
    args = train_args(tmp_path, Path("new/../keep"), "--steps", "2", *NO_EXPORT)
    for image in (tmp_path / "b").iterdir():
        image.write_bytes(b"not an image")
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr.decode(errors="replace")
    assert keep.is_dir(), "the user's folder keep was removed"
    assert keep.stat().st_ino == inode
    assert not (tmp_path / "new").exists()


def test_train_into_the_users_folder_spelled_through_a_missing_one_keeps_it_as_it_was(
    tmp_path: Path,
) -> None:
    """The same `styler train a b -o new/../keep`, `keep` the user's
    empty folder made private (`chmod 700`, as for a run on data that
    must not be seen) and `new` missing, on good data: the run succeeds,
    but `check_writable` (styler/training/run.py:145-157) first removes
    `keep` as a folder it made (see the test above) and `create` makes it
    again (styler/training/run.py:182) with the default mode: the run's
    checkpoints, samples and report now lie in a world-readable `keep`
    (0755), a new folder that lost the user's permissions (and owner,
    ACLs, extended attributes). The run must write into the user's
    folder as it was."""
    keep, inode = _users_empty_folder(tmp_path)
    args = train_args(tmp_path, Path("new/../keep"), "--steps", "2", *NO_EXPORT)
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (keep / "config.json").is_file()
    assert stat.S_IMODE(keep.stat().st_mode) == 0o700
    assert keep.stat().st_ino == inode


def test_a_run_that_writes_nothing_never_walks_a_link_put_at_a_folder_it_made(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`find ... | styler apply - -o new/out` (a slow producer of paths):
    the run makes `new` and `new/out`; while it waits for paths, `new/out`
    is replaced by a symbolic link to the user's folder `user` (a script
    that moves results to their place and links them back, a user tidying
    up; `user` holds an empty subfolder, `user/drafts`). The one path that
    comes fails (not an image), nothing is written, and `_remove_made`
    (styler/cli/apply.py:303-310) walks each folder the run made with
    `os.walk(folder, topdown=False)`: its comment says links are not
    followed, but `os.walk` follows a link given as its top, so it walks
    `user` and removes `user/drafts` (every empty folder below the user's
    folder). A run removes only folders it made: a link found where one
    of them was is no folder of the run's, and what it leads to is left
    alone."""
    (tmp_path / "user" / "drafts").mkdir(parents=True)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    args = ["apply", "-", "-m", str(tiny_resnet_onnx), "-q", "-o", "new/out"]
    proc = _start(args, tmp_path, stdin=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "new" / "out").is_dir() and time.monotonic() < deadline:
            time.sleep(0.1)
        (tmp_path / "new" / "out").rmdir()
        (tmp_path / "new" / "out").symlink_to(tmp_path / "user")
        _, err = proc.communicate(b"bad.png\n", timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err.decode(errors="replace")
    assert (tmp_path / "user" / "drafts").is_dir(), "the user's empty folder was removed"
