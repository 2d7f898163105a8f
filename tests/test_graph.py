"""The graph rewrites of the exporter and the quantiser: each gives the same
numbers as what it replaces, in real onnxruntime sessions."""

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
from styler.graph_passes import spatial_means_to_pools, transposed_to_subpixel  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402


def _transposed_model(
    kernel: int, stride: int, padding: int, output_padding: int, bias: bool, **attrs: object
) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    weight = rng.normal(size=(5, 7, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=7).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(
        "ConvTranspose",
        inputs,
        ["y"],
        strides=[stride, stride],
        pads=[padding] * 4,
        output_padding=[output_padding] * 2,
        **attrs,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 7, "H", "W"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


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
    model = _transposed_model(kernel, stride, padding, output_padding, bias)
    x = np.random.default_rng(0).normal(size=(2, 5, 9, 13)).astype(np.float32)
    before = _run(model, x)
    assert transposed_to_subpixel(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Conv", "DepthToSpace"]
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w", "b"})  # no dead weights
    after = _run(model, x)
    assert after.shape == before.shape == (2, 7, 9 * stride, 13 * stride)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)
    assert before.std() > 0.5


@pytest.mark.parametrize(
    ("args", "attrs"),
    [
        ((3, 2, 1, 0, True), {}),  # 2H - 1 rows: not a pixel shuffle
        ((4, 1, 0, 0, True), {}),  # stride 1
        ((3, 2, 1, 1, True), {"dilations": [2, 2]}),
    ],
)
def test_other_transposed_convolutions_are_left_alone(
    args: tuple[int, int, int, int, bool], attrs: dict[str, object]
) -> None:
    model = _transposed_model(*args, **attrs)
    assert transposed_to_subpixel(model) == 0
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]


def test_a_transposed_convolution_with_a_computed_bias_is_left_alone() -> None:
    """A bias that is not a constant (an input here) cannot be folded into
    the sub-pixel kernel: the node stays, nothing fails."""
    model = _transposed_model(3, 2, 1, 1, True)
    bias = next(t for t in model.graph.initializer if t.name == "b")
    model.graph.initializer.remove(bias)
    model.graph.input.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [7]))
    assert transposed_to_subpixel(model) == 0
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]
    onnx.checker.check_model(model)


def test_exported_resnet_has_pooled_statistics_and_keeps_its_transposed_convolutions(
    tmp_path: Path,
) -> None:
    """The fp32 file: pooled statistics, products, and the parity check against
    the torch network passed. Transposed convolutions stay (in fp32 they are
    as fast or faster than the sub-pixel form); int8 copies get that form."""
    torch.manual_seed(3)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    result = export_onnx(net, ModelMetadata(network=config, name="g"), tmp_path / "g.onnx")
    assert result.parity_error <= 1e-4
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert "Pow" not in ops and ops.count("ConvTranspose") == 2


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
