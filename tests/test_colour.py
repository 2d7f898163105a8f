"""--keep-colours: the style's brightness and texture, the photo's chroma."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from styler.colour import TO_YCC, keep_colours


def _ycc(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255 @ TO_YCC.T


def test_keep_colours_takes_luma_from_the_style_and_chroma_from_the_photo() -> None:
    rng = np.random.default_rng(0)
    photo = rng.uniform(0.4, 0.6, (300, 40, 3)).astype(np.float32)  # > ROWS: chunked
    styled = rng.uniform(0.4, 0.6, (300, 40, 3)).astype(np.float32)  # (in gamut)
    out = keep_colours(photo, styled)
    ycc = out @ TO_YCC.T
    np.testing.assert_allclose(ycc[..., 0], styled @ TO_YCC[0], atol=1e-5)
    np.testing.assert_allclose(ycc[..., 1:], (photo @ TO_YCC.T)[..., 1:], atol=1e-5)
    np.testing.assert_allclose(keep_colours(photo, photo), photo, atol=1e-5)  # no change
    assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="one size"):
        keep_colours(photo, styled[:100])


def test_apply_keep_colours_keeps_each_photos_chroma(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """Through the real CLI and a real onnxruntime session: with
    --keep-colours the outputs' chroma is the photos' and their luma the
    plain run's; without it the model moves the chroma."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        pixels = rng.integers(80, 176, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    model = str(tiny_resnet_onnx)
    plain = run_cli("apply", str(photos), "-m", model, "-o", str(tmp_path / "plain"), "-q")
    kept = run_cli(
        "apply", str(photos), "-m", model, "-o", str(tmp_path / "kept"), "-q", "--keep-colours"
    )
    assert plain.returncode == 0 and kept.returncode == 0, (plain.stderr, kept.stderr)
    for i in range(2):
        photo, a, b = (
            _ycc(d / f"p{i}.png") for d in (photos, tmp_path / "plain", tmp_path / "kept")
        )
        assert np.abs(a[..., 1:] - photo[..., 1:]).mean() > 0.01  # the model changes colours
        # (to 8-bit rounding, and where the photo's colour at the style's
        # brightness is out of gamut, to the clip: on average)
        assert np.abs(b[..., 1:] - photo[..., 1:]).mean() < 0.004
        assert np.median(np.abs(b[..., 1:] - photo[..., 1:])) < 2 / 255
        assert np.median(np.abs(b[..., 0] - a[..., 0])) < 2 / 255


def test_a_model_that_says_keep_keeps_colours_unless_told(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A model whose metadata says `colours: keep` (the shipped default's)
    keeps each photo's chroma without a flag; --model-colours gives the
    model's own colours, as a model without the field does; `styler info`
    says which. A value styler does not know is refused in one line."""
    onnx = pytest.importorskip("onnx")
    from styler.export import _replace_metadata
    from styler.runtime import Model

    meta = Model.open(tiny_resnet_onnx, device="cpu").meta
    keeping = tmp_path / "keeping.onnx"
    data = tiny_resnet_onnx.read_bytes()
    keeping.write_bytes(_replace_metadata(data, dataclasses.replace(meta, colours="keep")))
    photos = tmp_path / "photos"
    photos.mkdir()
    pixels = np.random.default_rng(2).integers(80, 176, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photos / "p.png")
    runs = {
        "default": ("-m", str(keeping)),
        "told": ("-m", str(keeping), "--model-colours"),
        "plain": ("-m", str(tiny_resnet_onnx)),
    }
    chroma = {}
    for name, args in runs.items():
        out = tmp_path / name
        result = run_cli("apply", str(photos), *args, "-o", str(out), "-q")
        assert result.returncode == 0, result.stderr
        chroma[name] = _ycc(out / "p.png")[..., 1:]
    photo = _ycc(photos / "p.png")[..., 1:]
    assert np.abs(chroma["default"] - photo).mean() < 0.004
    assert np.abs(chroma["told"] - chroma["plain"]).max() < 1e-6
    assert np.abs(chroma["told"] - photo).mean() > 0.01
    assert "each input's own" in run_cli("info", str(keeping)).stdout
    assert "the model's" in run_cli("info", str(tiny_resnet_onnx)).stdout
    model = onnx.load(str(keeping))
    text = model.metadata_props[0].value.replace('"colours": "keep"', '"colours": "sepia"')
    onnx.helper.set_model_props(model, {model.metadata_props[0].key: text})
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    refused = run_cli("apply", str(photos), "-m", str(bad), "-o", str(tmp_path / "bad"))
    assert refused.returncode == 2 and "unknown colours 'sepia'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
