"""Reliability, the thirty-first pass: what the thirty-first hostile review
found in the thirtieth pass's code. Each case runs through the real CLI on
tiny files; each fails on the code of the pass's start (467db66) for the
reason its docstring gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _photos, _run

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def test_lite0_paths_train_on_crops_of_16_pixels(tmp_path: Path) -> None:
    """A projected discriminator, or a style loss, with `--size 16` ended in
    a PyTorch traceback ("Padding size should be less than the
    corresponding input dimension"): a 16-pixel side was mirrored by 16 to
    reach Lite0's stride of 32. Such a pad now repeats the edge."""
    a, b = _photos(tmp_path / "A", 2, (24, 24)), _photos(tmp_path / "B", 2, (24, 24))
    tiny = ["--gen", "resnet_2blocks", "--ngf", "4", "--ndf", "4", "--size", "16", "--steps", "2"]
    for i, flags in enumerate(
        (
            ["--mode", "cyclegan", "--disc", "projected"],
            [
                "--mode",
                "fastcut",
                "--disc",
                "pixel",
                "--lambda-style",
                "1",
                "--lambda-content",
                "1",
            ],
        )
    ):
        run = tmp_path / f"run{i}"
        args = ["train", str(a), str(b), *flags, *tiny, "-o", str(run), "--no-export", "-q"]
        r = _run(*args, timeout=300)
        assert r.returncode == 0, (flags, _lines(r))
        assert list((run / "checkpoints").glob("step_*.safetensors")), flags


#: ``python WRAPPER ARGS`` runs ``styler ARGS`` and sends itself a Ctrl-C
#: after the first step, and another as the stopped run starts to finish
#: (its checkpoint): an abort while a young run stops.
_TWO_CTRL_C_MID_RUN = (
    "import os, runpy, signal, sys\n"
    "import styler.training.upkeep as U\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "real_done, real_finish = U.Upkeep.step_done, U.Upkeep.finish\n"
    "def step_done(self, *args):\n"
    "    real_done(self, *args)\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "def finish(self, display):\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "    return real_finish(self, display)\n"
    "U.Upkeep.step_done, U.Upkeep.finish = step_done, finish\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def test_an_abort_says_what_resume_will_do(tmp_path: Path) -> None:
    """A second Ctrl-C while a young run stopped (before any checkpoint)
    said "`styler train --resume RUN` finishes it", which then refused
    (no usable checkpoint); the first said nothing while the checkpoint was
    written. Now the first says the run stops with a checkpoint, and the
    abort that nothing was saved, so training again starts afresh."""
    import subprocess

    from conftest import interruptible
    from test_safety_pass7 import _env
    from test_safety_pass9 import train_args

    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_TWO_CTRL_C_MID_RUN)
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "1000", "--display", "plain")
    r = subprocess.run(
        [sys.executable, str(wrapper), *args],
        capture_output=True,
        env=_env(),
        timeout=300,
        preexec_fn=interruptible,
    )
    said = _lines(r)
    assert r.returncode == 130, said
    assert "styler: stopping after this step, with a checkpoint; Ctrl-C again aborts" in said
    assert said[-1] == "styler: aborted: no checkpoint was saved yet: training again starts afresh"
    assert not list((run / "checkpoints").glob("step_*"))
    assert not [line for line in said if "finishing" in line or "--resume" in line], said


#: ``python WRAPPER ARGS`` runs ``styler ARGS`` with a Ctrl-C as it starts,
#: another while the first is handled, and a third as the process exits
#: (one keypress under a wrapper that forwards it to its process group).
_CTRL_C_BURST = (
    "import atexit, os, runpy, signal, sys, time\n"
    "import styler.cli\n"
    "A = sys.modules['styler.cli.app']\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "real_handler, real_args = A._Signals.__call__, A.with_optional_values\n"
    "def handler(self, signum, frame):\n"
    "    if signum == signal.SIGINT and not getattr(self, 'again', False):\n"
    "        self.again = True\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "    return real_handler(self, signum, frame)\n"
    "def args(argv):\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "    return real_args(argv)\n"
    "def at_exit():\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "    time.sleep(0.2)\n"
    "atexit.register(at_exit)\n"
    "A._Signals.__call__, A.with_optional_values = handler, args\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def test_a_burst_of_ctrl_c_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    """Two SIGINTs milliseconds apart (a wrapper such as `uv run` or tini
    forwarding Ctrl-C to a process group that the terminal also signals)
    printed a traceback: main() caught no KeyboardInterrupt, and one during
    the exit's clean-up printed "Exception ignored in atexit callback".
    Now exit 130, and Ctrl-C is ignored while the process exits."""
    import subprocess

    from conftest import interruptible
    from test_safety_pass7 import _env

    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_CTRL_C_BURST)
    model = Path(__file__).parent.parent / "weights" / "photo2painting.onnx"
    r = subprocess.run(
        [sys.executable, str(wrapper), "info", str(model)],
        capture_output=True,
        env=_env(),
        timeout=120,
        preexec_fn=interruptible,
    )
    assert r.returncode == 130, _lines(r)
    said = r.stderr.decode(errors="replace")
    assert "Traceback" not in said and "Exception ignored" not in said, said


def test_a_runtime_or_package_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    """A broken onnxruntime (built for another numpy, or a CUDA library
    missing) was a traceback in apply, info, quantize and generate; a
    PyTorch or onnx that calls sys.exit(0) while it loads made train,
    export and quantize exit 0 having done nothing. Each is one line, exit
    2, naming the package."""
    from test_safety_pass7 import _env

    model = Path(__file__).parent.parent / "weights" / "photo2painting.onnx"
    photos = _photos(tmp_path / "in", 1, (32, 32))
    cases = [
        ("onnxruntime", "raise AttributeError('_ARRAY_API not found')", ["info", str(model)]),
        ("onnxruntime", "raise OSError('libcudart.so.12: cannot open')", ["apply", str(photos)]),
        ("torch", "import sys; sys.exit(0)", ["train", str(photos), str(tmp_path / "b")]),
        ("onnx", "import sys; sys.exit(0)", ["quantize", str(model), "--calibration", str(photos)]),
    ]
    _photos(tmp_path / "b", 1, (32, 32))
    for i, (package, body, args) in enumerate(cases):
        fake = tmp_path / f"fake{i}"
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(body + "\n")
        out = [] if args[0] == "info" else ["-o", str(tmp_path / f"out{i}")]
        r = _run(*args, *out, env=_env(PYTHONPATH=str(fake)))
        said = _lines(r)
        assert r.returncode == 2 and len(said) == 1, (package, body, said)
        assert "is installed but does not import" in said[0], said
        assert not (tmp_path / f"out{i}").exists()


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(tmp_path: Path) -> None:
    """A crafted progressive JPEG repeating an empty scan (451 KB, 6000
    scans) took 60-75 s to decode in apply, eval, train and quantize, and
    a SIGTERM waited for it (libjpeg-turbo decodes every scan over the
    whole image). A JPEG of more than 256 scans is now refused in one line
    before decoding; a real progressive JPEG (10 scans) is styled."""
    import io

    import numpy as np
    from PIL import Image
    from test_safety import _model

    onnx = pytest.importorskip("onnx")
    photos = tmp_path / "in"
    photos.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=True)
    good = buffer.getvalue()
    (photos / "good.jpg").write_bytes(good)
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00"
    (photos / "scans.jpg").write_bytes(good[:-2] + empty_scan * 6000 + b"\xff\xd9")
    identity = [onnx.helper.make_node("Identity", ["image"], ["styled"])]
    model = _model(tmp_path / "m.onnx", identity)
    out = tmp_path / "out"
    r = _run("apply", str(photos), "-m", str(model), "-o", str(out), "-q", timeout=60)
    assert r.returncode == 1, _lines(r)
    assert _lines(r) == [
        f"styler: {photos / 'scans.jpg'}: a JPEG of more than 256 scans "
        "(made to take minutes to decode)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["good.jpg"]
