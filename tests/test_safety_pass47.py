"""Reliability, the forty-seventh pass: what pass 46 left. styler's own
operators can grow a tensor through the graph's structure rather than a
constant: a chain of Concats of a tensor with itself, an outer product of
the image reshaped to a column and a row (by constant or computed shapes,
or computed Unsqueeze axes), Resizes by 8 one after another. Every
tensor's size is now bounded from the file before a session is built
(``styler/onnxshapes.py``), and a model whose tensor may hold more than
4,096 times its input's values, or grow faster than the image, is refused.
Each test fails on the code of the pass's start (7b2a165) for the reason
its docstring gives."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402
from test_safety import _lines, _noise_model, _png  # noqa: E402
from test_safety_pass46 import WEIGHTS, _metadata, _model, _peak  # noqa: E402

from styler import onnxsize, zoo  # noqa: E402
from styler.errors import BadModelError  # noqa: E402
from styler.export import export_generator, export_onnx  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import (  # noqa: E402
    DcganGeneratorConfig,
    ResnetGeneratorConfig,
    UnetGeneratorConfig,
)

GROWS = "grows faster than the image's size (an outer product or a copy of copies)"


def _apply(tmp_path: Path, model: Path, side: int) -> tuple[list[str], int, float, bool]:
    _png(tmp_path / "in" / "a.png", side, side)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(model), str(tmp_path / "in"), "-o", str(out))
    return _lines(result), result.returncode, mb, out.exists()


def test_apply_refuses_a_chain_of_concats(tmp_path: Path) -> None:
    """Fourteen Concats of a 64 x 64 image with itself (then their mean):
    each allowed, the last 768 MB. `apply` ran it (1.2 GB, "1 styled").
    Refused at the thirteenth, 8,192 times the image."""
    nodes, last = [], "image"
    for i in range(1, 15):
        nodes.append(helper.make_node("Concat", [last, last], [f"c{i}"], axis=0))
        last = f"c{i}"
    nodes.append(helper.make_node("ReduceMean", [last, "axes"], ["styled"], keepdims=1))
    model = _model(tmp_path / "concat.onnx", nodes, {"axes": np.array([0])})
    lines, code, mb, written = _apply(tmp_path, model, 64)
    assert code == 2 and lines == [
        f"styler: error: {model}: Concat 'c13' may hold 8,192 times the input's values "
        "(styler's models at most 4,096)"
    ]
    assert mb < 500 and not written


def test_apply_refuses_an_outer_product(tmp_path: Path) -> None:
    """The 80 x 80 image reshaped to a column and to a row, multiplied:
    19,200 x 19,200 values (1.5 GB), then averaged and reshaped back.
    `apply` ran it ("1 styled"). Refused: the product grows with the
    square of the image's size."""
    nodes = [
        helper.make_node("Reshape", ["image", "column"], ["a"]),
        helper.make_node("Reshape", ["image", "row"], ["b"]),
        helper.make_node("Mul", ["a", "b"], ["outer"]),
        helper.make_node("ReduceMean", ["outer", "one"], ["mean"], keepdims=0),
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Reshape", ["mean", "shape"], ["styled"]),
    ]
    consts = {"column": np.array([-1, 1]), "row": np.array([1, -1]), "one": np.array([1])}
    model = _model(tmp_path / "outer.onnx", nodes, consts)
    lines, code, mb, written = _apply(tmp_path, model, 80)
    assert code == 2 and lines == [f"styler: error: {model}: Mul 'outer' {GROWS}"]
    assert mb < 500 and not written


def test_a_chain_of_resizes_is_refused_by_info_and_apply(tmp_path: Path) -> None:
    """Resizes by 8, 8 and 4 (each within pass 46's limit) make a 40 x 40
    image 10,240 x 10,240 (1.26 GB), strided convolutions bring it back.
    `info` described the model, `apply` ran it ("1 styled"). Refused at
    the third (65,536 times the image) by both, before any is made."""
    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    consts: dict[str, np.ndarray] = {"w": eye}
    nodes, last = [], "image"
    for i, s in enumerate((8, 8, 4), 1):
        consts[f"s{i}"] = np.array([1, 1, s, s], np.float32)
        nodes.append(helper.make_node("Resize", [last, "", f"s{i}"], [f"up{i}"], mode="nearest"))
        last = f"up{i}"
    for i, s in enumerate((8, 8, 4), 1):
        out = "styled" if i == 3 else f"down{i}"
        nodes.append(helper.make_node("Conv", [last, "w"], [out], strides=[s, s]))
        last = out
    model = _model(tmp_path / "resize.onnx", nodes, consts)
    reason = "Resize 'up3' may hold 65,536 times the input's values (styler's models at most 4,096)"
    result, _, mb = _peak("info", str(model))
    assert result.returncode == 2 and _lines(result) == [f"styler: error: {model}: {reason}"]
    assert result.stdout == b"" and mb < 500
    lines, code, mb, written = _apply(tmp_path, model, 40)
    assert code == 2 and lines == [f"styler: error: {model}: {reason}"]
    assert mb < 500 and not written


@pytest.mark.parametrize("case", ["reshape", "unsqueeze"])
def test_computed_shapes_and_axes_are_bounded(tmp_path: Path, case: str) -> None:
    """The outer product again, the column and the row made with shapes
    computed from the image's (Shape, Slice, Concat into Reshape), or with
    Unsqueeze axes computed so. Nothing was checked: `apply` ran it (1.5 GB,
    "1 styled"). A Reshape or Unsqueeze whose arguments are not constants
    keeps its values but not its shape, and a product of such is bounded
    by the product of the two: the square of the image."""
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),  # the batch: 1
    ]
    if case == "reshape":
        nodes += [
            helper.make_node("Concat", ["minus", "n"], ["column"], axis=0),
            helper.make_node("Concat", ["n", "minus"], ["row"], axis=0),
            helper.make_node("Reshape", ["image", "column"], ["a"]),
            helper.make_node("Reshape", ["image", "row"], ["b"]),
        ]
    else:
        nodes += [
            helper.make_node("Reshape", ["image", "minus"], ["flat"]),
            helper.make_node("Unsqueeze", ["flat", "n"], ["a"]),  # axes [1]: a column
            helper.make_node("Unsqueeze", ["flat", "zero"], ["b"]),
        ]
    nodes += [
        helper.make_node("Mul", ["a", "b"], ["outer"]),
        helper.make_node("ReduceMean", ["outer", "one"], ["mean"], keepdims=0),
        helper.make_node("Reshape", ["mean", "shape"], ["styled"]),
    ]
    consts = {"zero": np.array([0]), "one": np.array([1]), "minus": np.array([-1])}
    model = _model(tmp_path / f"{case}.onnx", nodes, consts)
    lines, code, mb, written = _apply(tmp_path, model, 80)
    assert code == 2 and lines == [f"styler: error: {model}: Mul 'outer' {GROWS}"]
    assert mb < 500 and not written


def test_generate_refuses_a_chain_of_concats(tmp_path: Path) -> None:
    """A generator from noise whose 4 x 4 image is Concatenated with
    itself 20 times (then averaged): `generate` ran it (a million copies).
    Bounded against the image its metadata says it makes (16 values, more
    than its 8 of noise): refused at the thirteenth Concat."""
    model = onnx.load(str(_noise_model(tmp_path / "g.onnx", 8)))
    graph = model.graph
    graph.node[-1].output[0] = "c0"
    for i in range(1, 21):
        graph.node.append(helper.make_node("Concat", [f"c{i - 1}"] * 2, [f"c{i}"], axis=0))
    graph.initializer.append(numpy_helper.from_array(np.array([0]), "axes"))
    graph.node.append(helper.make_node("ReduceMean", ["c20", "axes"], ["image"], keepdims=1))
    copies = tmp_path / "copies.onnx"
    onnx.save(model, str(copies))
    result, _, mb = _peak("generate", str(copies), "-n", "1", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {copies}: Concat 'c13' may hold 8,192 times the input's values "
        "(styler's models at most 4,096)"
    ]
    assert mb < 500 and not (tmp_path / "out").exists()


def test_every_export_and_the_shipped_models_are_bounded(tmp_path: Path) -> None:
    """Styler's exports (a ResNet with a detail path, colour MLP, residual
    and statistics; a U-Net; a conditional DCGAN: every export of every
    option, 97 files, was checked by hand) and the shipped fp32 and int8
    models pass, well within the bound. The shipped model's largest tensor
    is its 32 channels resized to full size and padded by 3 for the last
    convolution: at most 32 (H + 8)(W + 8) values (each strided
    convolution's output taken as up to one more than half its input, as
    onnxruntime's division truncates), over its 3 x H x W input at the 8 x 8
    styler pads to at least: 42.7 times. (On 7b2a165: no bound.)"""
    from styler.onnxshapes import MAX_GROWTH

    paths = []
    for i, config in enumerate(
        [
            ResnetGeneratorConfig(n_blocks=1, ngf=8, detail=8, residual=True, color_mlp=4),
            UnetGeneratorConfig(num_downs=5, ngf=8, upsample="resize", residual=True),
        ]
    ):
        torch.manual_seed(0)
        meta = ModelMetadata(network=config, name="zoo")
        paths.append(export_onnx(zoo.build(config), meta, tmp_path / f"t{i}.onnx", tolerance=1))
    noise = DcganGeneratorConfig(latent_dim=8, ngf=8, size=8, num_classes=2)
    meta = ModelMetadata(network=noise, name="zoo", task="generate", classes=("a", "b"))
    paths.append(export_generator(zoo.build(noise), meta, tmp_path / "g.onnx"))
    for result in paths:
        growth = onnxsize.growth(result.path.read_bytes())
        assert 0 < growth < MAX_GROWTH / 20, result.path
    for path in WEIGHTS.glob("*.onnx"):
        assert onnxsize.growth(path.read_bytes()) == pytest.approx(32 * (8 + 8) ** 2 / (3 * 8 * 8))
        start = time.perf_counter()
        onnxsize.check_nodes(path, path)
        assert time.perf_counter() - start < 0.5  # 0.05 s on the reference machine


def test_the_walk_bounds_styler_patterns_soundly() -> None:
    """The shapes are bounds, never less than onnxruntime makes: a strided
    convolution within the bound, a wide one refused; an input of no fixed
    size is refused once the metadata is a styler model's; a function's
    body is walked at each call. (On 7b2a165: no bound.)"""
    from onnx import TensorProto

    def bound(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray], **kw: object) -> str:
        shape: list[str | int] = kw.get("shape", ["n", 3, "h", "w"])  # type: ignore[assignment]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        try:
            onnxsize.check_nodes(model.SerializeToString(), "m")
        except BadModelError as exc:
            return exc.reason
        return ""

    w = np.zeros((64, 3, 3, 3), np.float32)
    strided = helper.make_node("Conv", ["image", "w"], ["styled"], strides=[2, 2], pads=[1] * 4)
    assert bound([strided], {"w": w}) == ""
    # 64 channels at a quarter of the pixels: about 5 times; 16,384 of them: refused
    big = np.zeros((16384, 3, 1, 1), np.float32)
    wide = helper.make_node("Conv", ["image", "w"], ["styled"])
    assert "may hold 5,461 times" in bound([wide], {"w": big})
    assert "no fixed number of channels" in bound([wide], {"w": big}, shape=["n", "c", "h", "w"])
    # an image that is an input but not the model's: its size is not bounded
    stray = helper.make_node("Add", ["image", "other"], ["styled"])
    graph_input = helper.make_tensor_value_info("other", TensorProto.FLOAT, ["n", "k"])
    model = helper.make_model(
        helper.make_graph(
            [stray],
            "g",
            [
                helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"]),
                graph_input,
            ],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
        ),
        opset_imports=[helper.make_opsetid("", 20)],
    )
    # (without styler's metadata it is refused when the metadata is read, before any run)
    assert onnxsize.check_nodes(model.SerializeToString(), "m") == 1
    helper.set_model_props(model, {"styler": _metadata()})
    with pytest.raises(BadModelError, match="Add 'styled' takes input 'other' has a dimension"):
        onnxsize.check_nodes(model.SerializeToString(), "m")
    # a function's body is walked at each call: a Concat of its input with itself
    ops = [helper.make_opsetid("", 20), helper.make_opsetid("local", 1)]
    body = [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)]
    function = helper.make_function("local", "F", ["x"], ["y"], body, ops[:1])
    calls = [helper.make_node("F", [f"c{i}"], [f"c{i + 1}"], domain="local") for i in range(13)]
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["image"], ["c0"]), *calls],
            "g",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
            [helper.make_tensor_value_info("c13", TensorProto.FLOAT, None)],
        ),
        opset_imports=ops,
        functions=[function],
    )
    with pytest.raises(
        BadModelError,
        match=r"local\.F 'c13' has an output whose size .*Concat 'y' may hold 8,192 times",
    ):
        onnxsize.check_nodes(model.SerializeToString(), "m")
