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
