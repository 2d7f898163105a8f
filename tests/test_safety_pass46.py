"""Reliability, the forty-sixth pass: what pass 45 left. An ONNX graph of a
few hundred bytes can ask onnxruntime for gigabytes (Expand, Tile,
ConstantOfShape; a Resize, Pad or transposed convolution with huge
constant arguments), and the output's shape was checked only after the
call. A model may now hold only the operators styler's exporter and
quantiser write, those with size-setting arguments held to the values
styler's networks use, and that is checked from the file before a session
is built. Each test fails on the code of the pass's start (2cc26a5) for the
reason its docstring gives."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_safety import _lines, _noise_model, _png  # noqa: E402

from styler import onnxsize, zoo  # noqa: E402
from styler.errors import BadModelError  # noqa: E402
from styler.export import export_generator, export_onnx  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import (  # noqa: E402
    DcganGeneratorConfig,
    MlpGeneratorConfig,
    ResnetGeneratorConfig,
    UnetGeneratorConfig,
)

WEIGHTS = Path(__file__).parent.parent / "weights"
#: What the hostile models below would allocate if run: clearly wrong for a
#: styler model, small enough that the code before the pass survived it.
BIG = int(1.5 * 2**30) // 4  # floats


def _metadata() -> str:
    meta = ModelMetadata(network=ResnetGeneratorConfig(n_blocks=2, ngf=8), name="hostile")
    return meta.to_json()


def _model(path: Path, nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray]) -> Path:
    """A translation model (image -> styled, NCHW float) with styler metadata."""
    shape: list[str | int] = ["n", 3, "h", "w"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    helper.set_model_props(model, {"styler": _metadata()})
    path.write_bytes(model.SerializeToString())
    return path


def _peak(*args: str) -> tuple[subprocess.CompletedProcess[bytes], float, float]:
    """``styler ARGS`` in a child of its own; its result, seconds and peak MB."""
    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run([sys.executable, '-m', 'styler', *sys.argv[1:]])\n"
        "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(time.perf_counter() - t, kb / 1024, file=sys.stderr)\n"
        "sys.exit(r.returncode)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, timeout=300)
    *lines, figures = result.stderr.decode().splitlines()
    seconds, mb = (float(x) for x in figures.split())
    result.stderr = "\n".join(lines).encode()
    return result, seconds, mb


def test_apply_refuses_an_operator_styler_never_writes(tmp_path: Path) -> None:
    """A 950-byte model that Expands a 64 x 64 image into copies of 2 GB
    (and takes their maximum) was run by `styler apply`: 3.0 s, 2.18 GB,
    "1 styled" (Tile: 1.7 s, ConstantOfShape: 9.2 s, as much). Now one
    line naming the operator, exit 2, before a session is built."""
    _png(tmp_path / "in" / "a.png", 64, 64)
    shape = np.array([BIG // (3 * 64 * 64), 3, 1, 1], np.int64)
    nodes = [
        helper.make_node("Expand", ["image", "shape"], ["big"]),
        helper.make_node("ReduceMax", ["big", "axes"], ["styled"], keepdims=1),
    ]
    model = _model(tmp_path / "expand.onnx", nodes, {"shape": shape, "axes": np.array([0])})
    assert model.stat().st_size < 2000
    out = tmp_path / "out"
    result, seconds, mb = _peak("apply", "-m", str(model), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {model}: uses operator Expand, which styler's models never do"
    ]
    assert mb < 500 and seconds < 20
    assert not out.exists()


def test_info_refuses_a_constant_of_shape(tmp_path: Path) -> None:
    """`styler info` opened a model whose graph makes a 1.5 GB constant
    (ConstantOfShape) and described it as a styler model; `apply` then
    spent 9 s and 2 GB on it. Refused by every command now."""
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=value),
        helper.make_node("ReduceMax", ["big", "axes"], ["m"], keepdims=1),
        helper.make_node("Add", ["image", "m"], ["styled"]),
    ]
    shape = {"shape": np.array([BIG], np.int64), "axes": np.array([0], np.int64)}
    model = _model(tmp_path / "zeros.onnx", nodes, shape)
    for command in (["info"], ["info", "--json"]):
        result, _, mb = _peak(*command, str(model))
        assert result.returncode == 2 and _lines(result) == [
            f"styler: error: {model}: uses operator ConstantOfShape, which styler's models never do"
        ]
        assert result.stdout == b"" and mb < 500


def test_generate_refuses_a_tile(tmp_path: Path) -> None:
    """A generation model whose 4 x 4 images are Tiled 200 times each way:
    `generate` ran the Tile (whose repeats may be any size) and refused
    the 800 x 800 images only after the call. Refused before a session."""
    model = onnx.load(str(_noise_model(tmp_path / "g.onnx", 8)))
    graph = model.graph
    graph.node[-1].output[0] = "small"
    graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 200, 200]), "reps"))
    graph.node.append(helper.make_node("Tile", ["small", "reps"], ["image"]))
    tiled = tmp_path / "tiled.onnx"
    onnx.save(model, str(tiled))
    result, _, mb = _peak("generate", str(tiled), "-n", "8", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {tiled}: uses operator Tile, which styler's models never do"
    ]
    assert mb < 500 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("resize", "a Resize by 180 (styler's models resize by at most 8)"),
        ("pad", "pads by 5600 (styler's models pad by at most 16)"),
        (
            "convtranspose",
            "a ConvTranspose of stride 180 and padding 0 (styler's models use at most 8 and 16)",
        ),
        ("conv", "a Conv of stride 1 and padding 5600 (styler's models use at most 8 and 16)"),
        ("sizes", "a Resize to given sizes, which styler's models never do"),
        ("computed", "a Pad whose pads are not a constant of the file"),
    ],
)
def test_allowed_operators_with_huge_constant_arguments_are_refused(
    tmp_path: Path, case: str, reason: str
) -> None:
    """Operators styler does write, with arguments that make a 64 x 64
    image 1.5 GB: a Resize by 180, a Pad of 5,600 pixels, a transposed
    convolution of stride 180, a convolution padded by 5,600 (each cropped
    or strided back to 64 x 64). `apply` ran them (2.1 GB each for 2 GB
    versions; "1 styled" but for the Resize, whose rounding gave 63 x 63).
    Their constant arguments and attributes are held to styler's sizes."""
    s, p = 180, 5600
    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    crop = {"starts": np.array([p, p]), "ends": np.array([p + 64, p + 64]), "ax": np.array([2, 3])}
    slice_back = helper.make_node("Slice", ["big", "starts", "ends", "ax"], ["styled"])
    if case == "resize":
        nodes = [helper.make_node("Resize", ["image", "", "up"], ["big"], mode="nearest")]
        nodes.append(helper.make_node("Conv", ["big", "w"], ["styled"], strides=[s, s]))
        consts = {"up": np.array([1, 1, s, s], np.float32), "w": eye}
    elif case == "pad":
        nodes = [helper.make_node("Pad", ["image", "pads"], ["big"]), slice_back]
        consts = {"pads": np.array([0, 0, p, p, 0, 0, p, p]), **crop}
    elif case == "convtranspose":
        nodes = [helper.make_node("ConvTranspose", ["image", "w"], ["big"], strides=[s, s])]
        nodes.append(helper.make_node("Conv", ["big", "w"], ["styled"], strides=[s, s]))
        consts = {"w": eye}
    elif case == "conv":
        nodes = [helper.make_node("Conv", ["image", "w"], ["big"], pads=[p] * 4), slice_back]
        consts = {"w": eye, **crop}
    elif case == "sizes":
        sizes = np.array([1, 3, 64 * s, 64 * s], np.int64)
        nodes = [helper.make_node("Resize", ["image", "", "", "sizes"], ["big"])]
        nodes.append(helper.make_node("Conv", ["big", "w"], ["styled"], strides=[s, s]))
        consts = {"sizes": sizes, "w": eye}
    else:  # pads computed from the image's shape: 64 x 100
        nodes = [
            helper.make_node("Shape", ["image"], ["dims"]),
            helper.make_node("Mul", ["dims", "k"], ["many"]),
            helper.make_node("Concat", ["zero", "many"], ["pads"], axis=0),
            helper.make_node("Pad", ["image", "pads"], ["big"]),
            helper.make_node("Slice", ["big", "zero4", "end4", "ax4"], ["styled"]),
        ]
        consts = {
            "k": np.array([0, 0, 100, 100]),
            "zero": np.zeros(4, np.int64),
            "zero4": np.zeros(2, np.int64),
            "end4": np.array([64, 64]),
            "ax4": np.array([2, 3]),
        }
    model = _model(tmp_path / f"{case}.onnx", nodes, consts)
    _png(tmp_path / "in" / "a.png", 64, 64)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(model), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2 and _lines(result) == [f"styler: error: {model}: {reason}"]
    assert mb < 500 and not out.exists()


def test_operators_in_functions_and_subgraphs_are_checked(tmp_path: Path) -> None:
    """A model-local function whose body Expands, and an If whose branches
    may hold anything, were counted as nodes and passed to onnxruntime."""
    ops = [helper.make_opsetid("", 20), helper.make_opsetid("local", 1)]
    body = [helper.make_node("Expand", ["x", "s"], ["y"])]
    function = helper.make_function("local", "F", ["x", "s"], ["y"], body, ops[:1])
    call = helper.make_node("F", ["image", "shape"], ["styled"], domain="local")
    shape: list[str | int] = ["n", 3, "h", "w"]
    graph = helper.make_graph(
        [call],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.array([9, 3, 1, 1]), "shape")],
    )
    model = helper.make_model(graph, opset_imports=ops, functions=[function])
    with pytest.raises(BadModelError, match="uses operator Expand, which styler's models"):
        onnxsize.check_nodes(model.SerializeToString(), "function")
    # The same Expand in a branch: the If itself is no styler operator.
    then = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    branch = helper.make_node("If", ["flag"], ["styled"], then_branch=then, else_branch=then)
    flag = numpy_helper.from_array(np.array(True), "flag")
    graph = helper.make_graph([branch], "g", graph.input, graph.output, initializer=[flag])
    # (A Constant node is refused too: styler writes initializers, and a
    # Constant's sparse value is made dense when the session is built.)
    model = helper.make_model(graph, opset_imports=ops[:1])
    with pytest.raises(BadModelError, match="uses operator If, which styler's models never do"):
        onnxsize.check_nodes(model.SerializeToString(), "if")


def _exports(tmp_path: Path) -> list[Path]:
    """Tiny exports of every generator kind and option that adds operators."""
    paths = []
    configs = [
        (ResnetGeneratorConfig(n_blocks=1, ngf=8, residual=True, color_mlp=4), {}),
        (ResnetGeneratorConfig(n_blocks=1, ngf=8, upsample="resize", padding="zero"), {}),
        (ResnetGeneratorConfig(n_blocks=1, ngf=8, norm="batch", padding="replicate"), {}),
        (ResnetGeneratorConfig(n_blocks=1, ngf=8), {"global_stats": False}),
        (ResnetGeneratorConfig(n_blocks=1, ngf=8, residual=True), {"fp16": True}),
        (UnetGeneratorConfig(num_downs=5, ngf=8, upsample="resize", residual=True), {}),
        (UnetGeneratorConfig(num_downs=5, ngf=8, norm="instance"), {}),
    ]
    for i, (config, options) in enumerate(configs):
        torch.manual_seed(0)
        net = zoo.build(config)
        meta = ModelMetadata(network=config, name="zoo")
        path = tmp_path / f"t{i}.onnx"
        paths.append(export_onnx(net, meta, path, tolerance=1, **options).path)  # type: ignore[arg-type]
    noise = (
        MlpGeneratorConfig(latent_dim=8, hidden=(16,), size=8),
        DcganGeneratorConfig(latent_dim=8, ngf=8, size=8),
    )
    for i, base in enumerate(noise):
        config = dataclasses.replace(base, num_classes=2)
        net = zoo.build(config)
        meta = ModelMetadata(network=config, name="zoo", task="generate", classes=("a", "b"))
        paths.append(export_generator(net, meta, tmp_path / f"g{i}.onnx").path)
    return paths


def test_every_export_and_the_shipped_models_pass_the_check(tmp_path: Path) -> None:
    """The allowlist is complete: styler's exports of each kind (the
    exporter opens each file it writes, so an operator missing from the
    list fails the export itself), and the shipped fp32 and int8 models.
    (On 2cc26a5: no ALLOWED_OPS.)"""
    for path in [*_exports(tmp_path), *WEIGHTS.glob("*.onnx")]:
        start = time.perf_counter()
        assert onnxsize.check_nodes(path, path) > 0, path
        assert time.perf_counter() - start < 1
        model = onnx.load(str(path))
        ops = {(n.domain, n.op_type) for n in model.graph.node}
        assert ops <= set(onnxsize.ALLOWED_OPS), (path, ops - set(onnxsize.ALLOWED_OPS))
