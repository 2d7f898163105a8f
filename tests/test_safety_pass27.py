"""Reliability, the twenty-seventh pass: what a twenty-seventh hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-seventh pass's start (pass27, 789b561) for the reason its
docstring gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import interruptible
from test_safety import _lines
from test_safety_pass7 import _env, _photos

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _finish(
    proc: subprocess.Popen[bytes], timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


#: ``python WRAPPER ARGS`` runs ``styler ARGS`` with a Ctrl-C (SIGINT to
#: itself) arriving just after the first encode of a batch is handed to
#: the encoder threads: the moment a real Ctrl-C lands on once in a while,
#: made certain. Nothing else is changed.
_CTRL_C_AT_SUBMIT = (
    "import concurrent.futures as cf, os, runpy, signal, sys\n"
    "real_submit = cf.ThreadPoolExecutor.submit\n"
    "sent = []\n"
    "def submit(self, fn, *args, **kwargs):\n"
    "    future = real_submit(self, fn, *args, **kwargs)\n"
    "    if self._thread_name_prefix.startswith('styler-encode') and not sent:\n"
    "        sent.append(1)\n"
    "        signal.raise_signal(signal.SIGINT)\n"
    "    return future\n"
    "cf.ThreadPoolExecutor.submit = submit\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def test_an_image_handed_to_an_encoder_as_ctrl_c_comes_is_listed(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """README: the first Ctrl-C "lets images being written finish", and
    stdout carries one output path per styled image (pass 26: every image
    written after a stop is listed). `Processor._infer` hands a batch's
    styled images to the encoder threads in a list comprehension and only
    its returned list is put in `encoding`, the queue the stop drains. A
    Ctrl-C (or SIGTERM) that lands after the first image of a batch was
    submitted and before the list is returned (the main thread is in
    `ThreadPoolExecutor.submit`, which starts a thread and waits for it on
    the first batches) leaves that encode out of the queue: it runs on, the
    stop waits for it (`encoders.shutdown(wait=True)`) and it publishes its
    image, but its result is never handed out. Today: exit 130,
    `out/p0000.png` on disk, stdout empty, `0 styled`. What should happen:
    every output on disk is on stdout and counted (an encode is in the queue
    from the moment it is submitted), as for a stop at any other moment."""
    photos = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    wrapper = tmp_path / "ctrl_c.py"
    wrapper.write_text(_CTRL_C_AT_SUBMIT)
    args = ["apply", "-m", str(tiny_resnet_onnx), str(photos), "-o", str(out), "--batch-size", "2"]
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    done = _finish(proc)
    assert b"Traceback" not in done.stderr, _lines(done)
    assert done.returncode == 130, _lines(done)
    listing = sorted(os.listdir(out)) if out.exists() else []
    assert not [n for n in listing if n.endswith(".part")], listing
    written = [n for n in listing if not n.startswith(".")]
    listed = sorted(Path(os.fsdecode(line)).name for line in done.stdout.splitlines())
    assert written == listed, f"on disk {written}, on stdout {listed}; stderr {_lines(done)}"
