"""Reliability, the twenty-fifth pass: what a twenty-fifth hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-fifth pass's start (pass25, 96c35c7) for the reason its
docstring gives.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _photos

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow

#: ``python WRAPPER ARGS`` runs ``styler ARGS`` (the real entry point) with
#: one pause: as a writer is about to lock the temporary file it has just
#: made, it makes ``$MADE`` and waits for ``$PROBED``; then it takes the
#: lock as styler does. Nothing else is changed.
_PAUSED = (
    "import os, runpy, sys, time\n"
    "import styler.fsutil as fsutil\n"
    "env = {k: os.environ.pop(k) for k in ('MADE', 'PROBED')}\n"
    "real_hold = fsutil._hold\n"
    "def hold(fd):\n"
    "    open(env['MADE'], 'w').close()\n"
    "    while not os.path.exists(env['PROBED']):\n"
    "        time.sleep(0.02)\n"
    "    real_hold(fd)\n"
    "fsutil._hold = hold\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)

#: ``python WRAPPER ARGS`` runs ``styler ARGS`` with the model file moved
#: away (to ``NAME.moved``) once onnxruntime has read it, while the session
#: is being set up: what a fresh ``styler train -o RUN`` setting the run's
#: files aside, an ``export --overwrite`` or a user's ``mv`` does at that
#: moment. Nothing else is changed.
_MOVED_WHILE_OPENED = (
    "import os, runpy, sys\n"
    "import styler.runtime as runtime\n"
    "real = runtime.read_metadata\n"
    "def read_metadata(session, source):\n"
    "    os.rename(source, source + '.moved')\n"
    "    return real(session, source)\n"
    "runtime.read_metadata = read_metadata\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_is_not_held_up_by_a_writer_waiting_for_its_lock(
    tiny_resnet_onnx: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Since the twenty-fourth pass a writer waits for the lock of its
    temporary file (`fsutil._hold`: a blocking `flock(LOCK_EX)`, no time
    limit, where it used to try once with LOCK_NB) because another command's
    look (`fsutil._held`) may hold it for an instant. When the lock is held
    for longer than an instant (the looking command stopped by Ctrl-Z or
    SIGSTOP, or a debugger, in the microseconds it holds the lock; any other
    process that flocks files in the output folder), `apply`'s encoder
    thread waits in `flock` for as long as that lasts. A Ctrl-C or a SIGTERM
    (a job scheduler's time limit) then reaches the main thread, which waits
    for the encodes in flight (`results.close()`): the command does not
    stop, for as long as the lock is held (here 30 s and more; it ends with
    130 or 143 only once the lock is let go; a second Ctrl-C ends it, but
    leaves the waiting writer's temporary file behind). Before the
    twenty-fourth pass the same stop took a moment.
    The test stands in for the other process with the same flock, taken
    just before the writer's. What should happen: the command stops with
    130 (Ctrl-C) or 143 (SIGTERM) within moments whoever holds the lock,
    leaving no temporary file (a writer's wait is bounded, or gives way to
    a stop)."""
    photos = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    wrapper = tmp_path / "paused.py"
    wrapper.write_text(_PAUSED)
    marks = {k: tmp_path / k.lower() for k in ("MADE", "PROBED")}
    args = ["apply", "-m", str(tiny_resnet_onnx), str(photos), "-o", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(**{k: str(v) for k, v in marks.items()}),
        cwd=tmp_path,
        start_new_session=True,
    )
    holder = None
    try:
        _wait_for(marks["MADE"], proc)
        (part,) = out.glob(".styler-*.part")
        # Another process holds the file's lock (the writer has not taken it yet).
        holder = os.open(part, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        marks["PROBED"].touch()
        time.sleep(1.0)  # the writer is waiting for the lock now
        os.kill(proc.pid, sig)
        try:
            out_, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"styler apply did not stop within 30 s of {sig.name}: waiting for a lock")
    finally:
        if holder is not None:
            os.close(holder)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=60)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out_, err)
    assert b"Traceback" not in err, _lines(done)
    assert proc.returncode == 128 + sig, _lines(done)
    assert not list(out.glob(".styler-*")), "a temporary file was left"


def test_info_of_a_model_moved_away_while_it_is_opened_is_not_a_traceback(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler info MODEL` opens the model (onnxruntime reads the file and
    builds a session, the metadata is read from that session), then looks at
    the path again for the file's size (`model.stat()` in `cli/info.py`).
    When the file is moved or removed in between (a fresh `styler train -o
    RUN` setting the run's `a_to_b.onnx` aside into `earlier-*/`, a user's
    `mv`), that second look raises: a `FileNotFoundError` traceback, exit 1,
    with and without `--json` (and when the file was replaced meanwhile, by
    `export RUN --overwrite`, the size shown is another file's: the model is
    read twice, the class the twenty-second pass fixed in `quantize`). What
    should happen: `info` describes the model it read, with the size of the
    bytes it read, exit 0 (or, at the least, one line naming the file,
    exit 2); never a traceback."""
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_resnet_onnx.read_bytes())
    size = model.stat().st_size
    wrapper = tmp_path / "moved.py"
    wrapper.write_text(_MOVED_WHILE_OPENED)
    for extra in ([], ["--json"]):
        if not model.exists():
            (tmp_path / "m.onnx.moved").rename(model)
        result = subprocess.run(
            [sys.executable, str(wrapper), "info", *extra, "m.onnx"],
            capture_output=True,
            env=_env(),
            cwd=tmp_path,
            timeout=180,
        )
        assert b"Traceback" not in result.stderr, (extra, _lines(result)[-3:])
        if result.returncode == 0:
            if extra:
                assert json.loads(result.stdout)["file_size"] == size
        else:
            assert result.returncode == 2 and len(_lines(result)) == 1, _lines(result)
