"""Reliability, the fifty-second pass: the code since pass 51 (the smoothing
path's Kuwahara filters, the time budget's clock) through the real CLI. A
smoothing generator could not be exported in half precision (the
variances' clamp became an operator styler's models never use); `apply`
ran images whole that the paths' full-resolution tensors made several
times larger in memory than its budget for one run (the budget counted
ngf only); a Slice with a step of 0 was refused for "arguments of different
lengths". Each test fails on the code of the pass's start (964d91b) for the
reason its docstring gives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import helper  # noqa: E402
from PIL import Image  # noqa: E402
from test_safety import _png  # noqa: E402
from test_safety_pass46 import _model, _peak  # noqa: E402

from styler import zoo  # noqa: E402
from styler.export import export_onnx  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402


def _random(config: Any, only: str = "") -> torch.nn.Module:
    """The network of ``config``, its weights whose names start with
    ``only`` random (the paths' last layers start at zero)."""
    torch.manual_seed(0)
    net = zoo.build(config)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(only):
                p.copy_(torch.randn_like(p) * 0.3)
    return net


def test_a_smoothing_generator_exports_in_half_precision(tmp_path: Path, cli: Any) -> None:
    """A generator with a smoothing path exported in half precision (what
    `styler export CKPT --fp16` runs): the Kuwahara filters' variances were
    clamped to a minimum alone, which the exporter writes as Max in half
    precision (Clip in fp32), so every fp16 export failed (`export --fp16`:
    "<in-memory model>: uses operator Max, which styler's models never do",
    exit 2). The clamp has both ends now (Clip): the model is written,
    and styles a flat image (every window's variance 0: each
    soft weight at its largest, 256, which fp16 holds) and a noisy one as
    the fp32 network does (the path's weights random, the body at its
    start, the identity: a random body's instance norms amplify fp16's
    rounding of a flat image)."""
    config = generator_preset("resnet_1blocks", ngf=4, residual=True, smooth=4)
    net = _random(config, only="smooth.")
    out = tmp_path / "sm.onnx"
    export_onnx(net, ModelMetadata(network=config, name="sm"), out, fp16=True)
    photos = tmp_path / "in"
    photos.mkdir()
    flat = np.full((40, 48, 3), 128, np.uint8)
    noisy = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(flat).save(photos / "flat.png")
    Image.fromarray(noisy).save(photos / "noisy.png")
    result = cli("apply", str(photos), "-m", str(out), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 0, result.stderr
    for name, image in (("flat", flat), ("noisy", noisy)):
        got = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"), np.float32)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            want = ((net.eval()(x)[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()
        assert np.abs(got - want).max() <= 3, name
        moved = np.abs(got - image).mean()
        assert moved == 0 if name == "flat" else moved > 5, (name, moved)


def test_apply_counts_the_paths_in_its_memory_for_one_run(tmp_path: Path) -> None:
    """`apply` runs an image whole when its pixels fit a budget of 1 GiB for
    one run, counted as 32 bytes a pixel per unit of ngf; a ResNet's colour,
    detail and smoothing paths work at full resolution whatever its ngf and
    were not counted. A model of ngf 4 with a colour MLP of 256 (a width
    `train` takes) styled a 1000 x 750 photo whole in 1.6 GB (at ngf 8, 3
    megapixels: 6.2 GB; a detail path of 64, 4.1 GB; a smoothing path of 16,
    1.5 GB). The paths' bytes are counted now: it goes in tiles, 0.5 GB,
    the output the same size."""
    config = generator_preset("resnet_1blocks", ngf=4, residual=True, color_mlp=256)
    model = tmp_path / "mlp.onnx"
    export_onnx(_random(config), ModelMetadata(network=config, name="mlp"), model)
    _png(tmp_path / "in" / "a.png", 1000, 750)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(model), str(tmp_path / "in"), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "a.png").size == (1000, 750)
    assert mb < 1000, mb


def test_a_slice_with_a_step_of_zero_says_so(tmp_path: Path, cli: Any) -> None:
    """A model whose Slice of the image has a step of 0 (ONNX forbids it) is
    refused before a session is built, as it was; the reason said
    "arguments of different lengths" of a Slice whose four arguments each
    held one number. It names the step now."""
    nodes = [
        helper.make_node("Slice", ["image", "s", "e", "a", "st"], ["t"]),
        helper.make_node("Add", ["image", "t"], ["styled"]),
    ]
    one = {k: np.array([v], np.int64) for k, v in (("s", 0), ("e", 10), ("a", 2), ("st", 0))}
    model = _model(tmp_path / "step0.onnx", nodes, one)
    _png(tmp_path / "in" / "a.png", 16, 16)
    result = cli("apply", str(tmp_path / "in"), "-m", str(model), "-o", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"styler: error: {model}: Slice 't' has an output whose size cannot be bounded "
        "from the file (a step of 0)"
    ]
    assert not (tmp_path / "out").exists()
