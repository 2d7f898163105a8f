"""Reliability, the twenty-fourth pass: what a twenty-fourth hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-fourth pass's start (pass24, 6707042) for the reason its
docstring gives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _photos, _run

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow

#: ``python WRAPPER ARGS`` runs ``styler ARGS`` (the real entry point) with two
#: pauses, each a file made then a file waited for: as the writer takes the
#: lock of the temporary file it has just made (``$MADE``, ``$PROBED``; then
#: ``$TRIED`` once the attempt is over), and just as the finished file is to
#: be renamed into place (``$HELD``, ``$GO``). Nothing else is changed.
_PAUSED = (
    "import os, runpy, sys, time\n"
    "import styler.fsutil as fsutil\n"
    "env = {k: os.environ.pop(k) for k in ('MADE', 'PROBED', 'TRIED', 'HELD', 'GO')}\n"
    "def wait(name):\n"
    "    while not os.path.exists(env[name]):\n"
    "        time.sleep(0.02)\n"
    "def mark(name):\n"
    "    open(env[name], 'w').close()\n"
    "real_hold = fsutil._hold\n"
    "def hold(fd):\n"
    "    mark('MADE'); wait('PROBED')\n"
    "    real_hold(fd)\n"
    "    mark('TRIED')\n"
    "fsutil._hold = hold\n"
    "def paused(real):\n"
    "    def publish(src, dst, *a, **k):\n"
    "        if os.fspath(src).endswith('.part'):\n"
    "            mark('HELD'); wait('GO')\n"
    "        return real(src, dst, *a, **k)\n"
    "    return publish\n"
    "os.replace = paused(os.replace)\n"
    "os.link = paused(os.link)\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.02)


def test_a_writer_whose_lock_meets_another_commands_look_keeps_its_file(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """Two `styler apply` runs into one output folder (two batches at once,
    a shell loop with `&`, a cluster's array job on one machine). Since the
    twenty-third pass a writer locks its temporary file (`fsutil._hold`,
    flock) and every other styler command tells a live writer from a killed
    one by trying that same lock for an instant (`fsutil._held`, LOCK_EX, in
    `remove_stale_parts`, `live_writers` and the run-folder checks): a file
    nobody holds that is more than a second old is removed as a killed
    writer's. But `_hold` tries once, without waiting (LOCK_NB), and says
    nothing when it fails: when another command's look holds the lock at
    that instant (the microseconds after `mkstemp`: on a machine with more
    than one core, two commands really run at once), the writer goes on
    with no lock at all, for the whole of its write. Its file is then a
    killed writer's to any styler command that looks a second later: here
    the second `apply` removes the first one's temporary file while it is
    being written, and the first then fails `a/x.png: cannot write: No such
    file or directory`, exit 1 (a large WebP or a checkpoint's fsync takes
    longer than that second; so does a writer held up). The test stands in
    for the other command's look with the same flock, taken and let go
    around the writer's attempt. What should happen: a writer holds its
    lock whatever other commands look at (the look lets go at once, so the
    writer can wait for it, or try again); the second `apply` keeps the
    file, and the first writes `out/x.png`, exit 0."""
    a = _photos(tmp_path / "a", 1)
    (a / "p0000.png").rename(a / "x.png")
    b = _photos(tmp_path / "b", 1)
    out = tmp_path / "out"
    wrapper = tmp_path / "paused.py"
    wrapper.write_text(_PAUSED)
    marks = {k: tmp_path / k.lower() for k in ("MADE", "PROBED", "TRIED", "HELD", "GO")}
    args = ["apply", "-m", str(tiny_resnet_onnx), str(a), "-o", str(out)]
    first = subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(**{k: str(v) for k, v in marks.items()}),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        _wait_for(marks["MADE"], first)
        (part,) = out.glob(".styler-*.part")
        # Another styler command looks at the file (fsutil._held) just then.
        look = os.open(part, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.flock(look, fcntl.LOCK_EX | fcntl.LOCK_NB)
            marks["PROBED"].touch()
            deadline = time.monotonic() + 2  # (a writer that waits for the look gets it after)
            while not marks["TRIED"].exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            os.close(look)  # (the look is over: it lets go)
        _wait_for(marks["TRIED"], first)
        _wait_for(marks["HELD"], first)
        time.sleep(1.5)  # the write goes on for more than a second
        second = _run("apply", "-m", str(tiny_resnet_onnx), str(b), "-o", str(out), cwd=tmp_path)
        kept = part.exists()
    finally:
        marks["GO"].touch()
        try:
            out_first, err_first = first.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            raise
    done = subprocess.CompletedProcess(first.args, first.returncode, out_first, err_first)
    assert second.returncode == 0, _lines(second)
    assert first.returncode == 0 and (out / "x.png").is_file(), _lines(done)
    assert kept, "the live writer's temporary file was removed"
