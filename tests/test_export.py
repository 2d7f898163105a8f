"""Export round trips: torch network -> ONNX file -> onnxruntime, for each
architecture family at small widths, odd sizes, fp16, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from styler import zoo  # noqa: E402
from styler.errors import BadModelError, ExportError  # noqa: E402
from styler.export import FP16_TOLERANCE, export_onnx  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402
from styler.runtime import Model  # noqa: E402


def _calibrate_batchnorm(net: torch.nn.Module, channels: int, seed: int = 0) -> None:
    """Give batch-norm layers real running statistics (measured on random
    images in training mode) and non-trivial affine parameters, so that an
    export that used batch statistics instead would not pass."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    for m in norms:
        m.momentum = None  # cumulative average
        n = m.num_features
        m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
        m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(2, channels, 64, 64, generator=gen) * 2 - 1)
    net.eval()


def _pad_reflect(x: np.ndarray, multiple: int) -> np.ndarray:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")


CASES = [
    # (preset, overrides, odd input size (h, w)); without a norm the weights
    # are kaiming-initialised so that activations keep a sane scale.
    ("resnet_6blocks", {"ngf": 8}, (300, 200)),
    ("resnet_3blocks", {"ngf": 8, "norm": "none", "upsample": "resize"}, (97, 131)),
    ("resnet_2blocks", {"ngf": 8, "norm": "batch", "padding": "zero", "dropout": True}, (45, 61)),
    ("unet_32", {"ngf": 8, "dropout": True}, (70, 45)),
    ("unet_64", {"ngf": 4, "norm": "instance", "upsample": "resize"}, (130, 66)),
    ("resnet_2blocks", {"ngf": 8, "residual": True, "upsample": "resize"}, (61, 77)),
]


#: The two costliest cases (10 s each) run with -m slow.
SLOW_EXPORTS = {0, 4}


@pytest.mark.parametrize(
    ("preset", "overrides", "size"),
    [
        pytest.param(*c, marks=pytest.mark.slow) if i in SLOW_EXPORTS else c
        for i, c in enumerate(CASES)
    ],
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_round_trip_matches_torch_at_odd_sizes(
    tmp_path: Path, preset: str, overrides: dict[str, object], size: tuple[int, int]
) -> None:
    torch.manual_seed(1)
    config = generator_preset(preset, **overrides)
    if config.norm == "none":
        net = zoo.build(config, init="kaiming")
    else:
        net = zoo.build(config, init="normal", gain=0.2)
    _calibrate_batchnorm(net, config.in_channels)
    net.eval()
    meta = ModelMetadata(network=config, name=preset, train_size=64)
    result = export_onnx(net, meta, tmp_path / "m.onnx")
    assert result.parity_error <= 1e-4
    assert result.path.stat().st_size > 0

    model = Model.open(result.path, device="cpu")
    assert model.meta.network == config
    assert model.meta.parity_error == result.parity_error
    # An odd size, padded to the size multiple, and batch 2: dynamic axes at work.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, config.in_channels, *size)).astype(np.float32)
    padded = _pad_reflect(x, config.size_multiple)
    got = model.run(padded)[..., : size[0], : size[1]]
    with torch.no_grad():
        expected = net(torch.from_numpy(padded)).numpy()[..., : size[0], : size[1]]
    assert got.shape == (2, config.out_channels, *size)
    assert np.abs(got - expected).max() <= 1e-4
    # A real network output, not a constant.
    assert expected.std() > 1e-3


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_fp16_export_runs_and_stays_within_its_bound(tmp_path: Path) -> None:
    torch.manual_seed(2)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    result = export_onnx(
        net, ModelMetadata(network=config, name="half"), tmp_path / "h.onnx", fp16=True
    )
    assert 0 < result.parity_error <= FP16_TOLERANCE
    model = Model.open(result.path, device="cpu")
    assert model.meta.precision == "fp16"
    # Callers still feed float32 and get float32.
    out = model.run(np.zeros((1, 3, 32, 36), np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 3, 32, 36)
    fp32 = export_onnx(net, ModelMetadata(network=config, name="full"), tmp_path / "f.onnx")
    assert fp32.parity_error < result.parity_error
    import onnx

    weights = [
        t for t in onnx.load(str(result.path)).graph.initializer if len(t.dims) == 4
    ]  # convolution kernels
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)


def test_parity_failure_refuses_to_write(tmp_path: Path) -> None:
    config = generator_preset("resnet_1blocks", ngf=4)
    net = zoo.build(config)
    target = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match="refusing to write"):
        export_onnx(net, ModelMetadata(network=config, name="x"), target, tolerance=-1.0)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_complete_and_readable_by_onnx(tiny_resnet_onnx: Path) -> None:
    import onnx

    proto = onnx.load(str(tiny_resnet_onnx))
    props = {p.key: p.value for p in proto.metadata_props}
    data = json.loads(props["styler"])
    for key in (
        "format_version",
        "architecture",
        "network",
        "in_channels",
        "out_channels",
        "value_range",
        "size_multiple",
        "train_size",
        "direction",
        "name",
        "description",
        "license",
        "styler_version",
        "source",
        "parity_error",
    ):
        assert key in data, key
    assert data["architecture"] == "resnet_2blocks"
    assert data["size_multiple"] == 4
    assert data["train_size"] == 32
    assert data["value_range"] == [-1.0, 1.0]
    # Batch, height and width are dynamic.
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]
    assert dims[1].dim_value == 3


def test_runtime_rejects_models_that_are_not_styler_models(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["image"], ["styled"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, ["n", 3, "h", "w"])],
    )
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    plain.ir_version = 10
    path = tmp_path / "plain.onnx"
    onnx.save(plain, str(path))
    with pytest.raises(BadModelError, match="not a styler model"):
        Model.open(path, device="cpu")

    # Styler metadata that does not fit the graph: 1 input channel declared, 3 in the graph.
    config = generator_preset("resnet_1blocks", in_channels=1)
    meta = ModelMetadata(network=config, name="liar")
    helper.set_model_props(plain, {"styler": meta.to_json()})
    onnx.save(plain, str(path))
    with pytest.raises(BadModelError, match="3 channels, the metadata says 1"):
        Model.open(path, device="cpu")

    # Rank 3 input.
    graph.input[0].CopyFrom(
        helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "h", "w"])
    )
    graph.output[0].CopyFrom(
        helper.make_tensor_value_info("styled", TensorProto.FLOAT, [3, "h", "w"])
    )
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    bad.ir_version = 10
    helper.set_model_props(
        bad,
        {"styler": ModelMetadata(network=generator_preset("resnet_1blocks"), name="r3").to_json()},
    )
    onnx.save(bad, str(path))
    with pytest.raises(BadModelError, match="rank 3"):
        Model.open(path, device="cpu")


def test_int8_quantisation_is_checked_and_runs_at_full_size(
    tmp_path: Path, tiny_resnet_onnx: Path, cli: Any
) -> None:
    """styler quantize: calibrated int8 copy, PSNR against fp32 measured, the
    model styles any size (and tiles) with onnxruntime alone."""
    import numpy as np
    from PIL import Image

    from styler.apply import Stylizer
    from styler.runtime import Model

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.random((6, 8, 3))
        img = Image.fromarray((base * 255).astype(np.uint8)).resize((64, 48), Image.BICUBIC)
        img.save(photos / f"{i}.png")
    out = tmp_path / "tiny.int8.onnx"
    result = cli(
        "quantize",
        str(tiny_resnet_onnx),
        "--calibration",
        str(photos),
        "-o",
        str(out),
        "--min-psnr",
        "20",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and "dB PSNR against fp32" in result.stderr
    # Only styler's lines: onnxruntime's quantiser advice stays off stderr.
    assert "pre-processing" not in result.stderr
    info = cli("info", str(out))
    assert info.returncode == 0 and "int8 (" in info.stdout
    assert "dB PSNR against fp32" in info.stdout
    meta = Model.open(out, device="cpu").meta
    assert meta.precision == "int8" and meta.extra["int8_psnr_db"] >= 20
    # Convolutions are int8 but the thin ones (the RGB head, and at this tiny
    # width the first layer), which int8 makes slower.
    import onnx

    from styler.quantize import MIN_INT8_CHANNELS

    graph = onnx.load(str(out)).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    float_convs = [shapes[n.input[1]][0] for n in graph.node if n.op_type == "Conv"]
    assert 3 in float_convs and max(float_convs) < MIN_INT8_CHANNELS
    assert sum(n.op_type == "QLinearConv" for n in graph.node) >= 4
    # Transposed convolutions, which have no int8 kernel, went in sub-pixel form.
    ops = [n.op_type for n in graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 2
    rgb = rng.random((37, 51, 3)).astype(np.float32)
    styled = Stylizer(out, device="cpu").apply_array(rgb)
    reference = Stylizer(tiny_resnet_onnx, device="cpu").apply_array(rgb)
    assert styled.shape == (37, 51, 3)
    assert np.abs(styled - reference).mean() < 0.05
    tiled = Stylizer(out, device="cpu", tile=16).apply_array(rgb)
    assert tiled.shape == (37, 51, 3) and np.isfinite(tiled).all()
    # An impossible bar is refused and nothing is written.
    again = cli(
        "quantize",
        str(tiny_resnet_onnx),
        "--calibration",
        str(photos),
        "-o",
        str(tmp_path / "no.onnx"),
        "--min-psnr",
        "200",
    )
    assert again.returncode == 2 and "refusing" in again.stderr
    assert not (tmp_path / "no.onnx").exists()


def test_precision_advice_for_each_device() -> None:
    """The warning Stylizer logs when a model's precision does not suit the
    device (the choice is tested here; a GPU is not needed to make it)."""
    from styler.apply import precision_advice

    assert "GPUs" in (precision_advice("fp16", "cpu") or "")
    assert "CPUs" in (precision_advice("int8", "cuda") or "")
    for precision, device in (("fp32", "cpu"), ("fp32", "cuda"), ("fp16", "cuda"), ("int8", "cpu")):
        assert precision_advice(precision, device) is None


def test_an_fp16_model_on_the_cpu_styles_and_warns_through_the_cli(
    tmp_path: Path, cli: Any
) -> None:
    """The advice reaches the user on stderr, once, and the run still succeeds."""
    from PIL import Image

    torch.manual_seed(2)
    config = generator_preset("resnet_1blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    model = tmp_path / "half.onnx"
    export_onnx(net, ModelMetadata(network=config, name="half"), model, fp16=True)
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray(np.full((30, 41, 3), 120, np.uint8)).save(photo)
    out = tmp_path / "out"
    result = cli("apply", str(photo), "-m", str(model), "-o", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("meant for GPUs") == 1
    assert Image.open(result.stdout.strip()).size == (41, 30)
