"""Reliability, the forty-ninth pass: the newest training options through
the real CLI, and hand-made ONNX files against the checks of passes 46-47.
A texture discriminator on crops too small for it crashed its first step
(a traceback, exit 1, a run folder left); a model-local function named
like an ONNX operator hid the operator from the allowlist while
onnxruntime ran the operator; an input that is also a weight, declared
before the image with many channels, set the bound every tensor is held
to. Each test fails on the code of the pass's start (33e9c58) for the
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

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_safety import _lines, _noise_model, _png  # noqa: E402
from test_safety_pass46 import BIG, WEIGHTS, _model, _peak  # noqa: E402

from styler import onnxsize  # noqa: E402
from styler.errors import BadModelError  # noqa: E402

COPIES = "may hold 8,192 times the input's values (styler's models at most 4,096)"


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    folders = []
    for seed, name in enumerate(("A", "B")):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", 40, 40, seed=2 * seed + i)
        folders.append(tmp_path / name)
    return folders[0], folders[1]


def test_texture_disc_on_crops_too_small_for_it_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    """`train --mode fastcut --texture-disc --disc pixel --size 16`: the size
    was checked against the main discriminator only (a pixel one takes any
    crop), and the texture discriminator (a basic PatchGAN: 24 px at least)
    crashed the first step: a traceback ending in "ValueError: Expected
    more than 1 spatial element when training", exit 1, a run folder left
    (3.5 s; --size 20 with --disc n_layers_1 the same). Now one usage line,
    exit 2, no folder."""
    a, b = _folders(tmp_path)
    run = tmp_path / "run"
    flags = ["--mode", "fastcut", "--texture-disc", "--disc", "pixel", "--size", "16"]
    tiny = ["--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8", "--steps", "2"]
    result = cli("train", str(a), str(b), *flags, *tiny, "-o", str(run))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "styler: error: --texture-disc needs --size 24 or more, got 16"
    ]
    assert not run.exists()


def _shadowed(tmp_path: Path, domain: str) -> Path:
    """A 64 x 64 image Expanded to 1.5 GB of copies (then averaged), the
    model declaring a local function named Expand in ``domain`` that is an
    Identity."""
    shape = np.array([BIG // (3 * 64 * 64), 3, 1, 1], np.int64)
    nodes = [
        helper.make_node("Expand", ["image", "shape"], ["big"], domain=domain),
        helper.make_node("ReduceMean", ["big", "axes"], ["styled"], keepdims=1),
    ]
    path = _model(tmp_path / f"shadow{domain}.onnx", nodes, {"shape": shape, "axes": np.array([0])})
    model = onnx.load(str(path))
    body = [helper.make_node("Identity", ["X"], ["Y"])]
    opsets = [helper.make_opsetid("", 20)]
    model.functions.append(helper.make_function(domain, "Expand", ["X", "S"], ["Y"], body, opsets))
    onnx.save(model, str(path))
    return path


def test_a_function_named_like_an_operator_does_not_hide_it(tmp_path: Path) -> None:
    """A node Expand with a model-local function Expand (an Identity) in
    the ONNX domain: the walk took the node for a call of the function (its
    body checked, not the operator) while onnxruntime ran its own Expand:
    `apply` of one 64 x 64 image 4.2 s, 1.66 GB, "1 styled" (the domain
    "ai.onnx": 1.5 s, as much). A function declared in a domain of ONNX's
    or onnxruntime's operators is refused, before any session."""
    model = _shadowed(tmp_path, "")
    _png(tmp_path / "in" / "a.png", 64, 64)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(model), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {model}: declares a function Expand in a domain of operators: "
        "onnxruntime runs its operator of that name, not the function (styler's models "
        "have no functions)"
    ]
    assert mb < 500 and not out.exists()
    other = _shadowed(tmp_path, "ai.onnx")
    with pytest.raises(BadModelError, match=r"declares a function ai\.onnx\.Expand in a domain"):
        onnxsize.check_nodes(other, other)


def _decoy(model: onnx.ModelProto, values: np.ndarray, declared: list[int | str]) -> None:
    """An input named decoy before the others, that is also a weight (an
    overridable initializer: onnxruntime runs it on ``values`` unless fed)
    and declares the shape ``declared``."""
    decoy = helper.make_tensor_value_info("decoy", TensorProto.FLOAT, declared)
    model.graph.input.insert(0, decoy)
    model.graph.initializer.append(numpy_helper.from_array(values, "decoy"))


def test_apply_bounds_tensors_by_the_image_not_a_weight_declared_first(tmp_path: Path) -> None:
    """Pass 47's chain of 14 Concats of a 64 x 64 image, and before the
    image an input that is a weight of 30,000 zeros (120 KB) declaring
    N x 30,000 x H x W: the walk took the first input of rank 4 for the
    image, so every tensor might hold 10,000 times more. `apply` ran it:
    1.2 s, 1.26 GB, "1 styled". styler feeds no such input (onnxruntime
    takes its weight): the image sets the bound, refused at the 13th."""
    nodes, last = [], "image"
    for i in range(1, 15):
        nodes.append(helper.make_node("Concat", [last, last], [f"c{i}"], axis=0))
        last = f"c{i}"
    nodes.append(helper.make_node("ReduceMean", [last, "axes"], ["styled"], keepdims=1))
    path = _model(tmp_path / "decoy.onnx", nodes, {"axes": np.array([0])})
    model = onnx.load(str(path))
    _decoy(model, np.zeros((1, 30_000, 1, 1), np.float32), ["n", 30_000, "h", "w"])
    onnx.save(model, str(path))
    _png(tmp_path / "in" / "a.png", 64, 64)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(path), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2
    assert _lines(result) == [f"styler: error: {path}: Concat 'c13' {COPIES}"]
    assert mb < 500 and not out.exists()


def test_generate_bounds_tensors_by_the_noise_not_a_weight(tmp_path: Path) -> None:
    """A generator whose 16 values per image are Concatenated with
    themselves 23 times (then averaged and multiplied back in), with an
    input that is a weight of 60,000 zeros declaring N x 60,000: the walk
    counted it among the values per image, so 60,016 x 4,096 were allowed.
    `generate -n 1` ran it: 0.9 GB. Only the inputs styler feeds count:
    refused at the 13th Concat."""
    model = onnx.load(str(_noise_model(tmp_path / "g.onnx", 8)))
    graph = model.graph
    graph.node[1].input[0] = "scaled"  # Tanh(flat) -> Tanh(flat * mean of the copies)
    last = "flat"
    for i in range(1, 24):
        graph.node.append(helper.make_node("Concat", [last, last], [f"c{i}"], axis=1))
        last = f"c{i}"
    graph.initializer.append(numpy_helper.from_array(np.array([1]), "axes"))
    graph.node.append(helper.make_node("ReduceMean", [last, "axes"], ["mean"], keepdims=1))
    graph.node.append(helper.make_node("Mul", ["flat", "mean"], ["scaled"]))
    _decoy(model, np.zeros((1, 60_000), np.float32), ["n", 60_000])
    path = tmp_path / "decoy.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    result, _, mb = _peak("generate", str(path), "-n", "1", "-o", str(out))
    assert result.returncode == 2
    assert _lines(result) == [f"styler: error: {path}: Concat 'c13' {COPIES}"]
    assert mb < 500 and not out.exists()


def test_a_weight_of_more_dimensions_than_the_walk_reads_is_refused(tmp_path: Path) -> None:
    """A weight of rank 70, 66 dimensions of 1 then 40,000 x 1 x 1 x 1
    (160 KB), added to the image: the walk reads at most 65 numbers of a
    field, took the weight for 65 ones and the sum for the image's size,
    where onnxruntime broadcast it to 40,000 copies. `apply` of a 64 x 64
    image: 1.4 s, 2.0 GB, "1 styled". Refused from the file."""
    k = 40_000
    dims = [1] * 66 + [k, 1, 1, 1]
    weight = helper.make_tensor(
        "k", TensorProto.FLOAT, dims, np.zeros(k, np.float32).tobytes(), True
    )
    axes = helper.make_tensor("axes", TensorProto.INT64, [67], np.arange(67).tobytes(), True)
    nodes = [
        helper.make_node("Add", ["image", "k"], ["big"]),
        helper.make_node("ReduceMean", ["big", "axes"], ["mean"], keepdims=0),
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Reshape", ["mean", "shape"], ["styled"]),
    ]
    path = _model(tmp_path / "rank70.onnx", nodes, {})
    model = onnx.load(str(path))
    model.graph.initializer.extend([weight, axes])
    onnx.save(model, str(path))
    _png(tmp_path / "in" / "a.png", 64, 64)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(path), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {path}: a tensor's size cannot be bounded from the file "
        "(weight 'k' has more than 64 dimensions)"
    ]
    assert mb < 500 and not out.exists()


def test_tensors_kept_at_once_are_bounded_together(tmp_path: Path) -> None:
    """24 chains of 11 Concats of a 64 x 64 image (each head 2,048 times
    it, within the bound), each chain started from a mean of the one before
    and every head kept for a sum taken last (the last head first), so that
    onnxruntime holds them all: 15 KB, `apply` 3.4 s, 2.6 GB, "1 styled"
    (8 chains 1.0 GB, 20 chains 2.2 GB: no end but the node count). The
    bounds of all tensors together are now held to 32 times
    MAX_GROWTH; the shipped models' are 882 and 1,172."""
    from styler.onnxshapes import MAX_TOTAL

    consts = {"axes": np.array([0]), "hw": np.array([2, 3]), "z": np.array([0]), "o": np.array([1])}
    nodes, heads, start = [], [], "image"
    for chain in range(24):
        last = start
        for i in range(1, 12):
            nodes.append(helper.make_node("Concat", [last, last], [f"k{chain}c{i}"], axis=0))
            last = f"k{chain}c{i}"
        heads.append(last)
        nodes += [
            helper.make_node("Slice", [last, "z", "o", "z"], [f"k{chain}s"]),
            helper.make_node("ReduceMean", [f"k{chain}s", "hw"], [f"k{chain}m"], keepdims=1),
            helper.make_node("Add", ["image", f"k{chain}m"], [f"k{chain}next"]),
        ]
        start = f"k{chain}next"
    total = heads.pop()
    for i, head in enumerate(reversed(heads)):
        nodes.append(helper.make_node("Add", [total, head], [f"sum{i}"]))
        total = f"sum{i}"
    nodes.append(helper.make_node("ReduceMean", [total, "axes"], ["styled"], keepdims=1))
    path = _model(tmp_path / "kept.onnx", nodes, consts)
    _png(tmp_path / "in" / "a.png", 64, 64)
    out = tmp_path / "out"
    result, _, mb = _peak("apply", "-m", str(path), str(tmp_path / "in"), "-o", str(out))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {path}: its tensors may hold 145,409 times the input's values "
        f"together (styler's models at most {MAX_TOTAL:,})"
    ]
    assert mb < 500 and not out.exists()
    for shipped, expected in (("photo2painting.onnx", 882), ("photo2painting.int8.onnx", 1172)):
        assert onnxsize.together((WEIGHTS / shipped).read_bytes()) == pytest.approx(expected, 1e-3)
