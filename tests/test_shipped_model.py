"""The model that ships in weights/: it loads, carries its card, is the
default, and keeps image sizes, with onnxruntime alone."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from styler.apply import Stylizer
from styler.runtime import Model
from styler.shipped import DEFAULT_MODEL, resolve_model, shipped_models

Cli = Callable[..., subprocess.CompletedProcess[str]]
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_the_default_model_ships_with_its_card() -> None:
    models = {m.name: m for m in shipped_models()}
    assert DEFAULT_MODEL in models
    shipped = models[DEFAULT_MODEL]
    assert shipped.is_default and resolve_model(None) == shipped.path
    assert shipped.card is not None
    card = shipped.card.read_text(encoding="utf-8")
    for must in ("styler train", "styler eval", "KID ratio", "second", "hue", "Licence", "Wesnoth"):
        assert must in card, must
    meta = Model.open(shipped.path, device="cpu").meta
    assert meta.task == "translate" and meta.name == DEFAULT_MODEL
    assert meta.license and meta.license != "unknown"
    assert meta.domains == ("photos", "paintings") and meta.direction == "AtoB"
    assert meta.norm_stats > 0  # seamless tiles
    assert meta.parity_error is not None and meta.parity_error < 1e-4
    # The network casts photos in the paintings' grade: styler apply keeps the photos' colours.
    assert meta.colours == "keep" and "--model-colours" in card


def test_the_default_model_keeps_sizes_and_alpha() -> None:
    stylizer = Stylizer(None, device="cpu")
    rng = np.random.default_rng(0)
    rgb = rng.random((45, 67, 3)).astype(np.float32)
    out = stylizer.apply_array(rgb)
    assert out.shape == rgb.shape and np.isfinite(out).all()
    assert not np.allclose(out, rgb, atol=0.02)  # it does something
    rgba = Image.fromarray((rng.random((33, 21, 4)) * 255).astype(np.uint8), "RGBA")
    styled = stylizer.apply(rgba)
    assert styled.size == rgba.size and styled.mode == "RGBA"
    assert np.array_equal(np.asarray(styled)[:, :, 3], np.asarray(rgba)[:, :, 3])


def test_apply_without_a_model_uses_it_and_styles_the_examples(tmp_path: Path, cli: Cli) -> None:
    photos = sorted((EXAMPLES / "photos").glob("*.jpg"))[:2]
    assert photos
    result = cli("apply", *map(str, photos), "-o", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    for photo, record in zip(photos, records, strict=True):
        assert Image.open(record["output"]).size == Image.open(photo).size
    listed = json.loads(cli("models", "--json").stdout)
    assert [m["name"] for m in listed if m["default"]] == [DEFAULT_MODEL]


def test_the_int8_copy_ships_with_its_card_and_stays_close_to_fp32(
    tmp_path: Path, cli: Cli
) -> None:
    """photo2painting.int8: listed, described, int8 inside, and through the
    real CLI its outputs on example photos its calibration never saw stay
    within 37 dB PSNR of the fp32 model's."""
    models = {m.name: m for m in shipped_models()}
    shipped = models[f"{DEFAULT_MODEL}.int8"]
    assert not shipped.is_default and shipped.card is not None
    card = shipped.card.read_text(encoding="utf-8")
    for must in ("styler quantize", "PSNR", "calibration", "VNNI"):
        assert must in card, must
    meta = Model.open(shipped.path, device="cpu").meta
    assert meta.precision == "int8" and meta.extra["int8_psnr_db"] >= 39  # 40.0 recorded
    assert meta.colours == "keep"  # as the fp32 model
    assert meta.norm_stats > 0  # tiles like the fp32 model
    import onnx

    ops = {n.op_type for n in onnx.load(str(shipped.path)).graph.node}
    assert "QLinearConv" in ops and "ReduceMean" not in ops

    held_out = [EXAMPLES / "photos" / n for n in ("dandelions.jpg", "rocket.jpg")]
    outputs = {}
    for name in (DEFAULT_MODEL, f"{DEFAULT_MODEL}.int8"):
        result = cli("apply", *map(str, held_out), "-m", name, "-o", str(tmp_path / name), "-q")
        assert result.returncode == 0, result.stderr
        outputs[name] = result.stdout.split()
    from styler.metrics import psnr

    for fp32, int8, photo in zip(*outputs.values(), held_out, strict=True):
        a = np.asarray(Image.open(fp32), np.float32) / 255
        b = np.asarray(Image.open(int8), np.float32) / 255
        assert a.shape == b.shape == np.asarray(Image.open(photo)).shape
        assert psnr(a, b) >= 37, photo.name  # 40.0 dB through the CLI (JPEG), 40.7-41.4 unencoded
