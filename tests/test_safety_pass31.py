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
