"""Decoding and encoding real files in every mode, and refusing bad ones."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from styler.errors import BadImageError, OutputError
from styler.imageio import extension_for, load_image, output_format, save_image


def _rgb(w: int = 40, h: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("mode", "fmt", "has_alpha"),
    [
        ("RGB", "JPEG", False),
        ("RGB", "PNG", False),
        ("RGBA", "PNG", True),
        ("L", "PNG", False),
        ("LA", "PNG", True),
        ("1", "PNG", False),
        ("P", "PNG", False),
        ("CMYK", "JPEG", False),
        ("RGB", "WEBP", False),
        ("RGBA", "WEBP", True),
        ("RGB", "TIFF", False),
        ("RGB", "BMP", False),
        ("YCbCr", "JPEG", False),
    ],
)
def test_modes_decode_to_rgb(tmp_path: Path, mode: str, fmt: str, has_alpha: bool) -> None:
    base = Image.fromarray(_rgb())
    img = base.convert(mode) if mode != "RGBA" else base.copy()
    if mode == "RGBA":
        img.putalpha(
            Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40).astype(np.uint8))
        )
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = load_image(path)
    assert decoded.rgb.shape == (30, 40, 3) and decoded.rgb.dtype == np.float32
    assert decoded.rgb.min() >= 0.0 and decoded.rgb.max() <= 1.0
    assert decoded.format == fmt and decoded.mode == Image.open(path).mode
    assert (decoded.alpha is not None) == has_alpha
    if has_alpha:
        assert np.array_equal(decoded.alpha, np.asarray(Image.open(path).getchannel("A")))


def test_palette_transparency_becomes_alpha(tmp_path: Path) -> None:
    img = Image.fromarray(_rgb()).convert("P", palette=Image.ADAPTIVE, colors=16)
    img.info["transparency"] = 0
    path = tmp_path / "t.png"
    img.save(path, transparency=0)
    decoded = load_image(path)
    assert decoded.alpha is not None
    assert set(np.unique(decoded.alpha)) <= {0, 255} and decoded.alpha.min() == 0


def test_sixteen_bit_greyscale_keeps_precision(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    decoded = load_image(path)
    assert decoded.bit_depth == 16
    assert np.abs(decoded.rgb[:, :, 0] - values / 65535).max() < 1e-6


def test_icc_profile_and_alpha_survive_a_round_trip(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = Image.fromarray(np.dstack([_rgb(), np.full((30, 40), 100, np.uint8)]), "RGBA")
    path = tmp_path / "in.png"
    src.save(path, icc_profile=icc)
    decoded = load_image(path)
    for fmt in ("PNG", "WEBP"):
        out = tmp_path / f"out{extension_for(fmt)}"
        save_image(out, decoded.rgb, decoded, fmt)
        back = Image.open(out)
        assert back.info.get("icc_profile") == icc
        assert np.array_equal(np.asarray(back.getchannel("A")), decoded.alpha)
    jpg = tmp_path / "out.jpg"
    save_image(jpg, decoded.rgb, decoded, "JPEG")
    assert Image.open(jpg).mode == "RGB" and Image.open(jpg).info.get("icc_profile") == icc
    assert not list(tmp_path.glob("*.part"))


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF)
    )


def _truncated(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 150)).save(buf, format=fmt, quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am text", "not an image"),
        ("cut.jpg", _truncated("JPEG"), "truncated"),
        ("cut.png", _truncated("PNG"), "truncated"),
        ("cut.webp", _truncated("WEBP"), "WebP"),
        ("bomb.png", _png_header(100_000, 100_000), "too large"),
    ],
)
def test_bad_files_raise_one_clear_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImageError) as info:
        load_image(path)
    assert reason in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_limits_missing_directories_and_animations(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(BadImageError, match="directory"):
        load_image(folder)
    small = tmp_path / "s.png"
    Image.fromarray(_rgb(100, 100)).save(small)
    with pytest.raises(BadImageError, match="too large"):
        load_image(small, max_pixels=5000)
    gif = tmp_path / "anim.gif"
    frames = [Image.fromarray(_rgb(seed=i)).convert("P") for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with pytest.raises(BadImageError, match="animated"):
        load_image(gif)
    for w, h in ((1, 1), (1, 9), (9, 1)):
        tiny = tmp_path / f"t{w}x{h}.png"
        Image.fromarray(_rgb(w, h)).save(tiny)
        assert load_image(tiny).size == (w, h)


def test_unwritable_output_raises_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    src = tmp_path / "s.png"
    Image.fromarray(_rgb()).save(src)
    decoded = load_image(src)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError):
            save_image(locked / "o.png", decoded.rgb, decoded, "PNG")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_failed_encode_leaves_no_partial_file(tmp_path: Path) -> None:
    src = tmp_path / "s.png"
    Image.fromarray(_rgb()).save(src)
    decoded = load_image(src)
    with pytest.raises(OutputError):
        save_image(tmp_path / "o.png", decoded.rgb, decoded, "NOT-A-FORMAT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


def test_format_tables() -> None:
    assert output_format("JPEG") == "JPEG" and output_format("GIF") == "PNG"
    assert output_format("PNG", "jpg") == "JPEG" and output_format("JPEG", "webp") == "WEBP"
    assert extension_for("JPEG") == ".jpg" and extension_for("TIFF") == ".tif"
