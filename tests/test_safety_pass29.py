"""Reliability, the twenty-ninth pass: what a twenty-ninth hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-ninth pass's start (pass29, 33893c2) for the reason its
docstring gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import interruptible
from test_safety import _lines, _model
from test_safety_pass7 import _env, _photos, _run
from test_safety_pass27 import _finish

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow

#: ``python WRAPPER STOP ARGS`` runs ``styler ARGS`` with every write 0.3 s
#: slower and the signal STOP (a number) sent to itself 0.1 s after apply
#: first waits for its encoders (an encode's result, or the encoder
#: threads' shutdown) while it is handling a model error: a Ctrl-C
#: or SIGTERM landing in the drain of pass 28's fix, made certain.
_STOP_IN_MODEL_ERROR_DRAIN = (
    "import os, runpy, signal, sys, threading, time\n"
    "import concurrent.futures as cf, styler.apply as A, styler.imageio as io\n"
    "from styler.errors import BadModelError\n"
    "stop, sys.argv = int(sys.argv[1]), ['styler', *sys.argv[2:]]\n"
    "real_save, real_first, sent = io.save_image, A._first, []\n"
    "def save_image(*args, **kwargs):\n"
    "    time.sleep(0.3)\n"
    "    return real_save(*args, **kwargs)\n"
    "def waiting():\n"
    "    if isinstance(sys.exc_info()[1], BadModelError) and not sent:\n"
    "        sent.append(1)\n"
    "        threading.Timer(0.1, os.kill, (os.getpid(), stop)).start()\n"
    "def first(encoding):\n"
    "    waiting()\n"
    "    return real_first(encoding)\n"
    "real_shutdown = cf.ThreadPoolExecutor.shutdown\n"
    "def shutdown(self, *args, **kwargs):  # (how pass 28 waited)\n"
    "    waiting()\n"
    "    return real_shutdown(self, *args, **kwargs)\n"
    "io.save_image, A._first, cf.ThreadPoolExecutor.shutdown = save_image, first, shutdown\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def _crop_model(path: Path, rows: int) -> Path:
    """A model that crops its output to ``rows`` rows: whole for smaller
    images, the wrong size (a model error) for taller ones."""
    consts = [
        numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in (("starts", [0]), ("ends", [rows]), ("axes", [2]))
    ]
    crop = helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["styled"])
    return _model(path, [crop], initializers=consts)


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_during_the_model_error_drain_lists_every_image_written(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """Pass 28 let the images styled before a model error be written and
    listed, by waiting for the encoders in `encoders.shutdown(wait=True)`
    inside `except BadModelError`. A Ctrl-C or SIGTERM landing in that wait
    was not caught by the stop handler beside it, so nothing more was
    listed; and it interrupted `Thread.join`, which on Python 3.11 marks
    the running encoder as stopped: nothing waited for it at exit, and it
    died mid-write. Exit 130/143 with images on disk that stdout never
    listed and a `.part` left, under a summary saying nothing half-written
    is left. A stop in the drain is a stop like any other: the encode
    under way finishes, every image written is listed, nothing is left."""
    photos = _photos(tmp_path / "in", 6, (32, 32))
    _photos(tmp_path / "big", 1, (64, 64))
    os.replace(tmp_path / "big" / "p0000.png", photos / "z_big.png")  # sorted last
    model = _crop_model(tmp_path / "crop.onnx", 40)
    wrapper = tmp_path / "stop_in_drain.py"
    wrapper.write_text(_STOP_IN_MODEL_ERROR_DRAIN)
    out = tmp_path / "out"
    args = ["apply", str(photos), "-m", str(model), "-o", str(out), "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), str(int(stop)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
        preexec_fn=interruptible,
    )
    done = _finish(proc, timeout=120)
    assert b"Traceback" not in done.stderr, _lines(done)
    assert done.returncode == code, _lines(done)
    listing = sorted(os.listdir(out)) if out.exists() else []
    assert not [n for n in listing if n.startswith(".")], listing  # no .part left
    listed = sorted(Path(os.fsdecode(line)).name for line in done.stdout.splitlines())
    assert listing == listed, f"on disk {listing}, on stdout {listed}; stderr {_lines(done)}"
    assert listing, "the stop came after the first images were styled: some are written"


def test_quantize_takes_the_first_limit_images_that_decode(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`quantize --calibration cal --limit 4` with three unreadable files
    sorted before ten good photos: `--limit` cut the list to its first four
    files before any was decoded, three were skipped as unreadable, and
    quantize refused with "int8 calibration needs at least 2 readable
    images" (naming no folder), exit 2, though ten good images were there.
    The limit counts images that decode; a refusal names the folder."""
    cal = _photos(tmp_path / "cal", 10, (32, 32))
    for i in range(3):
        (cal / f"a{i}.png").write_bytes(b"junk")
    out = tmp_path / "q.onnx"
    args = ["quantize", str(tiny_resnet_onnx), "--calibration", str(cal), "-o", str(out)]
    result = _run(*args, "--limit", "4", "--min-psnr", "0")
    assert result.returncode == 0, _lines(result)
    said = _lines(result)
    assert sum("skipping" in line for line in said) == 3, said
    assert said[-1].startswith(f"styler: wrote {out}: int8") and " on 4 images " in said[-1], said
    # Too few readable images: the refusal names the folder.
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"a{i}.png").write_bytes(b"junk")
    _photos(tmp_path / "one", 1, (32, 32))
    os.replace(tmp_path / "one" / "p0000.png", bad / "z.png")
    out = tmp_path / "q2.onnx"
    result = _run("quantize", str(tiny_resnet_onnx), "--calibration", str(bad), "-o", str(out))
    assert result.returncode == 2, _lines(result)
    line = _lines(result)[-1]
    assert line == (
        f"styler: error: --calibration {bad}: int8 calibration needs at least 2 readable images"
    ), line
    assert not out.exists()


def test_training_stopped_by_sighup_saves_a_checkpoint(tmp_path: Path) -> None:
    """`styler train` in an SSH session that drops (SIGHUP): exit 129 and
    no checkpoint, so every step since the last periodic checkpoint was
    lost and a young run said `no usable checkpoint` on resume; Ctrl-C and
    SIGTERM save first. SIGHUP is the commonest way a long run's session
    ends: it saves and stops like them (exit 130, the resume command said),
    and `--resume` goes on from there."""
    from test_safety_pass9 import train_args

    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "100000", "--no-export", "--display", "plain")
    proc = subprocess.Popen(
        [sys.executable, "-m", "styler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),  # as a terminal's
    )
    metrics = run / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
    finally:
        done = _finish(proc, timeout=120)  # (killed if it hangs)
    said = done.stderr.decode(errors="replace")
    assert done.returncode == 130, said
    assert "Continue with: styler train --resume" in said, said
    from styler.training import state

    saved = state.latest(run / "checkpoints")
    assert saved is not None and saved.step >= 3, "no checkpoint saved"
    more = str(saved.step + 2)
    resumed = _run("train", "--resume", str(run), "--steps", more, "-q", "--no-export")
    assert resumed.returncode == 0, _lines(resumed)
    assert state.latest(run / "checkpoints").step == saved.step + 2  # type: ignore[union-attr]
