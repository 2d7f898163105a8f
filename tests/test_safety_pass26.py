"""Reliability, the twenty-sixth pass: what a twenty-sixth hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-sixth pass's start (pass26, d8503cb) for the reason its
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
from test_safety_pass7 import _env, _photos
from test_safety_pass25 import _PAUSED, _wait_for

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def test_an_image_finished_after_a_stop_is_listed_on_stdout(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """README: "stdout carries one output path per styled image" and "the
    first Ctrl-C lets images being written finish". On a Ctrl-C `apply`'s
    main loop stops reading results (`except KeyboardInterrupt` in
    `cli/apply.py`) and `results.close()` lets the encodes in flight finish:
    they are written and published, but their results are never printed.
    So an image that is on disk when the command ends is missing from stdout
    (and from `--json`), and the summary says `0 styled`; a pipeline reading
    stdout (`styler apply ... | upload`) never learns of it, and running
    again skips it as existing, so it is never listed at all. The lock wait
    of pass 25 (an encoder waits up to 2 s for its temporary file's lock)
    makes the window seconds wide; the test holds the lock as another
    command's check (or a foreign process) would, then sends Ctrl-C while the
    encoder waits. Today: exit 130, `out/p0000.png` written, stdout empty,
    `0 styled`. What should happen: every output the command writes is on
    stdout and counted (or an encode in flight when the stop comes is not
    published): what stdout lists and what is on disk agree."""
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
    out_ = err = b""
    try:
        _wait_for(marks["MADE"], proc)
        (part,) = out.glob(".styler-*.part")
        # Another process holds the file's lock (the writer has not taken it yet).
        holder = os.open(part, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        marks["PROBED"].touch()
        time.sleep(0.3)  # the writer is waiting for the lock now
        os.kill(proc.pid, signal.SIGINT)
        out_, err = proc.communicate(timeout=60)
    finally:
        if holder is not None:
            os.close(holder)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out_, err)
    assert b"Traceback" not in err, _lines(done)
    assert proc.returncode == 130, _lines(done)
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    listed = sorted(Path(os.fsdecode(line)).name for line in out_.splitlines())
    assert written == listed, f"on disk {written}, on stdout {listed}; stderr {_lines(done)}"
