"""The exporter's graph rewrites: each gives the same numbers as what it
replaces, on real torch layers and real onnxruntime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from styler import zoo  # noqa: E402
from styler.export import export_onnx  # noqa: E402
from styler.graph_passes import spatial_means_to_pools  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402
from styler.zoo.subpixel import SubpixelConvTranspose, convertible, to_subpixel  # noqa: E402


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding", "bias"),
    [
        (3, 2, 1, 1, True),  # the ResNet generators' upsampler
        (4, 2, 1, 0, False),  # the U-Net's
        (4, 2, 1, 0, True),
        (5, 2, 2, 1, True),
        (6, 3, 2, 1, True),
        (2, 2, 0, 0, True),
    ],
)
def test_subpixel_convolution_is_the_transposed_convolution(
    kernel: int, stride: int, padding: int, output_padding: int, bias: bool
) -> None:
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(5, 7, kernel, stride, padding, output_padding, bias=bias)
    x = torch.randn(2, 5, 9, 13)
    with torch.no_grad():
        expected, got = layer(x), SubpixelConvTranspose(layer)(x)
    assert got.shape == expected.shape == (2, 7, 9 * stride, 13 * stride)
    assert (got - expected).abs().max().item() < 1e-5
    assert expected.std() > 0.1


def test_only_pixel_shuffle_shaped_layers_are_converted() -> None:
    odd = torch.nn.ConvTranspose2d(4, 4, 3, 2, 1)  # 2H - 1 rows: not a shuffle
    stride1 = torch.nn.ConvTranspose2d(4, 4, 4, 1, 0)
    grouped = torch.nn.ConvTranspose2d(4, 4, 3, 2, 1, 1, groups=2)
    assert not any(convertible(m) for m in (odd, stride1, grouped))
    with pytest.raises(ValueError, match="pixel-shuffle"):
        SubpixelConvTranspose(odd)
    net = torch.nn.Sequential(odd, torch.nn.ConvTranspose2d(4, 4, 3, 2, 1, 1))
    assert to_subpixel(net) == 1
    assert isinstance(net[0], torch.nn.ConvTranspose2d)
    assert isinstance(net[1], SubpixelConvTranspose)


def test_exported_resnet_has_no_transposed_convolutions_or_reduce_means(
    tmp_path: Path,
) -> None:
    """The file onnxruntime runs: sub-pixel upsampling, pooled statistics, and
    the parity check against the untouched torch network passed."""
    torch.manual_seed(3)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    result = export_onnx(net, ModelMetadata(network=config, name="g"), tmp_path / "g.onnx")
    assert result.parity_error <= 1e-4
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 2
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert "Pow" not in ops
    # The network itself is unchanged: it still trains and saves as before.
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())


def _reduce_mean_model(axes: list[int], keepdims: int) -> onnx.ModelProto:
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(axes, np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(("axes", "keepdims"), [([2, 3], 0), ([2, 3], 1), ([-2, -1], 0)])
def test_spatial_means_become_pools_with_the_same_values(axes: list[int], keepdims: int) -> None:
    x = np.random.default_rng(0).normal(2, 3, size=(2, 3, 17, 23)).astype(np.float32)
    model = _reduce_mean_model(axes, keepdims)
    before = _run(model, x)
    assert spatial_means_to_pools(model) == 1
    assert "ReduceMean" not in [n.op_type for n in model.graph.node]
    onnx.checker.check_model(model)
    after = _run(model, x)
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_other_means_are_left_alone() -> None:
    model = _reduce_mean_model([1], 0)  # over channels: not a pool
    assert spatial_means_to_pools(model) == 0
    assert [n.op_type for n in model.graph.node] == ["ReduceMean"]
