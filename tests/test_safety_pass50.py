"""Reliability, the fiftieth pass: the smoothing path of a4626a6 through the
real CLI, and pass 49's bounds against generators. A config or generator
checkpoint whose ResNet path widths (``smooth``, ``detail``, ``color_mlp``)
were negative or huge crashed `train --resume` and `export` with a
traceback; a generator from noise whose metadata claimed a larger image
than its graph can make was allowed 4,096 times that claim. Each test fails
on the code of the pass's start (6876630) for the reason its docstring
gives."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402
from test_safety import _lines, _noise_model, _png  # noqa: E402
from test_safety_pass46 import _peak  # noqa: E402
from test_training_parts import tiny_cyclegan  # noqa: E402

from styler import zoo  # noqa: E402
from styler.checkpoint import save_generator  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402

COPIES = "may hold 8,192 times the input's values (styler's models at most 4,096)"
RESUMED = [("smooth", -1), ("detail", 10**9)]
EXPORTED = [("smooth", 10**9), ("color_mlp", -2)]


@pytest.mark.parametrize(("field", "value"), RESUMED)
def test_a_resumed_config_with_a_bad_path_width_is_one_line(
    tmp_path: Path, cli: Any, field: str, value: int
) -> None:
    """A run's config.json edited to `"smooth": -1` (or a `detail` or
    `smooth` of 10^9): `train --resume` built the network to count its
    parameters and crashed: a traceback ending "RuntimeError: Trying to
    create tensor with negative dimension -1" (or "Storage size calculation
    overflowed"), exit 1 (a `color_mlp` of -2 was taken for none). The
    widths are 0 to 4,096 now, like ngf: one line, exit 2, nothing
    written."""
    for name in ("A", "B"):
        _png(tmp_path / name / "0.png", 20, 20)
    config = tiny_cyclegan(data_a=str(tmp_path / "A"), data_b=str(tmp_path / "B")).to_dict()
    config["generator"][field] = value
    run = tmp_path / "run"
    run.mkdir()
    text = json.dumps(config)
    (run / "config.json").write_text(text)
    result = cli("train", "--resume", str(run), "--steps", "4")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"styler: error: {run / 'config.json'}: not a valid training config")
    assert f"'{field}'" in line
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert (run / "config.json").read_text() == text


@pytest.mark.parametrize(("field", "value"), EXPORTED)
def test_export_of_a_checkpoint_with_a_bad_path_width_is_one_line(
    tmp_path: Path, cli: Any, field: str, value: int
) -> None:
    """A generator checkpoint whose metadata gives `"smooth": -1` (or a
    `detail` or `smooth` of 10^9), its weights those of the network
    without: `styler export` built the network on PyTorch's meta device to
    check the weights, a traceback, exit 1 (a `color_mlp` of -2 was
    exported, the -2 written into the model's metadata). Now "bad styler
    metadata", exit 2, nothing written."""
    config = generator_preset("resnet_2blocks", ngf=4)
    net = zoo.build(config)
    meta = ModelMetadata(network=dataclasses.replace(config, **{field: value}), name="bad")
    checkpoint = save_generator(tmp_path / "bad.safetensors", net.state_dict(), meta)
    out = tmp_path / "bad.onnx"
    result = cli("export", str(checkpoint), "-o", str(out))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"styler: error: {checkpoint}: bad styler metadata: config field")
    assert f"'{field}'" in line
    assert not out.exists()


def _claims(path: Path, concats: int, size: int, channels: int) -> Path:
    """A generator from noise whose 4 x 4 grey image is the noise through a
    weight times the mean of ``concats`` Concats of those 16 values with
    themselves; its metadata claims images of ``channels`` x ``size`` x
    ``size``."""
    model = onnx.load(str(_noise_model(path, 8)))
    graph = model.graph
    graph.node[1].input[0] = "scaled"  # Tanh(flat) -> Tanh(flat * mean of the copies)
    last = "flat"
    for i in range(1, concats + 1):
        graph.node.append(helper.make_node("Concat", [last, last], [f"c{i}"], axis=1))
        last = f"c{i}"
    graph.initializer.append(numpy_helper.from_array(np.array([1]), "axes"))
    graph.node.append(helper.make_node("ReduceMean", [last, "axes"], ["mean"], keepdims=1))
    graph.node.append(helper.make_node("Mul", ["flat", "mean"], ["scaled"]))
    meta = json.loads(model.metadata_props[0].value)
    meta["network"].update(size=size, out_channels=channels)
    del model.metadata_props[:]
    helper.set_model_props(model, {"styler": json.dumps(meta)})
    onnx.save(model, str(path))
    return path


def test_generate_allows_no_more_than_the_image_its_graph_makes(tmp_path: Path) -> None:
    """A 2.3 KB generator whose graph makes 4 x 4 grey images, its metadata
    claiming 3 x 4096 x 4096: each tensor was allowed 4,096 times the
    claimed image (206 G values), so 24 Concats of its 16 values ran
    (`generate -n 1`: 1.3 s, 1.6 GB; 26 Concats: 12.9 s, 6.2 GB) before the
    image's shape was refused. The claim counts only as far as the graph's
    outputs may hold: refused at the 13th Concat, before any run."""
    path = _claims(tmp_path / "claims.onnx", 24, 4096, 3)
    out = tmp_path / "out"
    result, _, mb = _peak("generate", str(path), "-n", "1", "-o", str(out))
    assert result.returncode == 2
    assert _lines(result) == [f"styler: error: {path}: Concat 'c13' {COPIES}"]
    assert mb < 500 and not out.exists()


def test_a_generator_that_makes_the_image_it_claims_keeps_its_allowance(tmp_path: Path) -> None:
    """The same graph with 8 Concats (4,096 copies of its 16 values: 256
    times the 4 x 4 image it makes) is accepted, as are styler's own
    generators (their outputs' bound is the image their metadata gives)."""
    from styler import onnxsize

    path = _claims(tmp_path / "fits.onnx", 8, 4, 1)
    assert onnxsize.growth(path.read_bytes()) == pytest.approx(256.0)
    model = _noise_model(tmp_path / "g.onnx", 8)
    assert onnxsize.growth(model.read_bytes()) == pytest.approx(1.0)
