"""A corpus of hostile and awkward input files, built by the tests (nothing
committed): every kind of bad file styler meets in folders nobody looked at,
with good neighbours beside them.

:func:`build_corpus` writes it into a folder and returns one :class:`Case`
per file with what styler must do with it: ``ok`` (styled, size kept, written
to ``output`` below the output folder), ``failed`` (one line whose reason
contains ``reason``) or ``ignored`` (no record at all: hidden files, and
folders, which are walked rather than decoded).

Cases that need file permissions to hold (an unreadable file, an unreadable
folder) are only built with ``permissions=True``; a root caller must then run
styler without the capabilities that bypass permissions
(:func:`no_dac_override`).
"""

from __future__ import annotations

import ctypes
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Expect = Literal["ok", "failed", "ignored"]

#: Lines the reliability tests leave for the end of the pytest run (printed
#: by conftest's pytest_terminal_summary; quoted in docs/RELIABILITY.md).
SUMMARY: list[str] = []

#: Linux capabilities that let root read and write whatever the permissions say.
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_PR_CAPBSET_DROP = 24


@dataclass(frozen=True)
class Case:
    """One file of the corpus and what styler must do with it."""

    name: str  # what the case is, for reports and the docs table
    path: Path  # the file as it lies in the corpus
    expect: Expect
    reason: str | None = None  # for "failed": a substring of the one-line reason
    output: str | None = None  # for "ok": the output's path relative to the output folder
    size: tuple[int, int] | None = None  # for "ok": (width, height) of the output
    #: "list" when walking the folder already refuses it, else "decode".
    stage: Literal["list", "decode"] = "decode"
    #: Whether the file is a good image in itself (None: when it is styled);
    #: one may still fail in apply for another reason (a clashing output name).
    image: bool | None = None

    @property
    def decodable(self) -> bool:
        return self.expect == "ok" if self.image is None else self.image


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB uint8 image."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_bytes(width: int, height: int, depth: int, colour: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (for what Pillow cannot write: 48-bit RGB, a
    header that declares an enormous size with no pixel data behind it)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if rows is not None:
        body += _chunk(b"IDAT", zlib.compress(rows))
    return body + _chunk(b"IEND", b"")


def rgb48_png(width: int, height: int) -> bytes:
    values = np.linspace(0, 65535, width * height * 3).astype(">u2").reshape(height, width * 3)
    rows = b"".join(b"\x00" + row.tobytes() for row in values)
    return png_bytes(width, height, 16, 2, rows)


def gif_bomb() -> bytes:
    """A 1x1 GIF whose screen and frame declare 65535 x 65535 pixels."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen size
    frame = data.index(b"\x2c")  # image descriptor: ',' x y w h
    data[frame + 5 : frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def tiff_with_tag(data: bytes, tag: int, value: int) -> bytes:
    """``data`` (a little-endian TIFF) with ``tag``'s short value replaced."""
    out = bytearray(data)
    assert out[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", out, entry)[0] == tag:
            struct.pack_into("<HHIHH", out, entry, tag, 3, 1, value, 0)
            return bytes(out)
    raise ValueError(f"tag {tag} not in the TIFF")


def good_samples() -> dict[str, bytes]:
    """Small valid files of the formats styler reads, for mutation (fuzzing)."""
    rgb = Image.fromarray(photo(24, 16, 7))
    return {
        "png": encode(rgb, "PNG"),
        "jpeg": encode(rgb, "JPEG", quality=80),
        "webp": encode(rgb, "WEBP", quality=80),
        "webp-lossless": encode(rgb, "WEBP", lossless=True),
        "gif": encode(rgb.convert("P", palette=Image.ADAPTIVE, colors=16), "GIF"),
        "png-rgba": encode(rgb.convert("RGBA"), "PNG"),
        "tiff": encode(rgb, "TIFF"),
        "bmp": encode(rgb, "BMP"),
    }


def no_dac_override() -> Callable[[], None] | None:
    """For a root caller: a ``preexec_fn`` that drops the capabilities that
    bypass file permissions from the child (so chmod 000 means unreadable to
    it, as for any user). None when that cannot be done; for other users a
    no-op."""
    if os.geteuid() != 0:
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    # Check it works here, in a throwaway child, before promising it.
    import subprocess

    try:
        probe = subprocess.run(
            ["sh", "-c", "grep CapEff /proc/self/status"],
            preexec_fn=drop,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if probe.returncode != 0 or not probe.stdout.split():
        return None
    effective = int(probe.stdout.split()[-1], 16)
    if effective & ((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)):
        return None
    return drop


def build_corpus(root: Path, *, permissions: bool = True) -> list[Case]:
    """Write the hostile corpus into ``root`` (created) and return its cases."""
    root.mkdir(parents=True)
    cases: list[Case] = []

    def ok(name: str, rel: str, data: bytes, size: tuple[int, int], output: str = "") -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(name, path, "ok", output=output or rel, size=size))

    def bad(name: str, rel: str, data: bytes, reason: str, image: bool | None = None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(name, path, "failed", reason=reason, image=image))

    rgb = Image.fromarray(photo(40, 28, 1))
    jpeg, png = encode(rgb, "JPEG", quality=90), encode(rgb, "PNG")
    webp = encode(rgb, "WEBP", quality=90)

    # -- good neighbours and awkward but valid files ------------------------------------
    ok("good JPEG", "good.jpg", jpeg, (40, 28))
    ok("good PNG", "good.png", png, (40, 28))
    ok("good WebP", "good.webp", webp, (40, 28))
    ok("good file in a subfolder", "sub/deeper/good.png", png, (40, 28))
    ok("1x1 image", "one_by_one.png", encode(Image.fromarray(photo(1, 1, 2)), "PNG"), (1, 1))
    ok("1xN image (1 wide)", "one_wide.png", encode(Image.fromarray(photo(1, 9, 3)), "PNG"), (1, 9))
    ok(
        "Nx1 image (1 high)",
        "one_high.png",
        encode(Image.fromarray(photo(13, 1, 4)), "PNG"),
        (13, 1),
    )
    grey16 = Image.fromarray(np.linspace(0, 65535, 20 * 14).reshape(14, 20).astype(np.uint16))
    ok("16-bit greyscale PNG", "grey16.png", encode(grey16, "PNG"), (20, 14))
    ok("16-bit RGB PNG (48 bits per pixel)", "rgb48.png", rgb48_png(18, 12), (18, 12))
    ok("16-bit greyscale TIFF", "grey16.tif", encode(grey16, "TIFF"), (20, 14))
    ok("CMYK JPEG", "cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG", quality=90), (40, 28))
    palette = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    ok(
        "palette PNG with a transparent colour",
        "palette_transparent.png",
        encode(palette, "PNG", transparency=0),
        (40, 28),
    )
    ok("LA (grey + alpha) PNG", "la.png", encode(rgb.convert("LA"), "PNG"), (40, 28))
    ok(
        "single-frame GIF (written as PNG)",
        "still.gif",
        encode(palette, "GIF"),
        (40, 28),
        "still.png",
    )
    for orientation in range(1, 9):
        stored = Image.fromarray(photo(30, 20, 10 + orientation))
        exif = stored.getexif()
        exif[0x0112] = orientation
        upright = (20, 30) if orientation >= 5 else (30, 20)
        data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
        ok(f"EXIF orientation {orientation}", f"exif_{orientation}.jpg", data, upright)
    stored = Image.fromarray(photo(30, 20, 19))
    exif = stored.getexif()
    exif[0x0112] = 9  # no such orientation
    data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    ok("EXIF orientation 9 (invalid: ignored)", "exif_9.jpg", data, (30, 20))
    pages = [Image.fromarray(photo(22, 18, 40)), Image.fromarray(photo(10, 10, 41))]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    ok("multi-page TIFF (first page)", "pages.tif", buf.getvalue(), (22, 18))
    ok(
        "PNG content named .jpg (written as .png)",
        "png_inside.jpg",
        png,
        (40, 28),
        "png_inside.png",
    )
    ok(
        "JPEG content named .webp (written as .jpg)",
        "jpeg_inside.webp",
        jpeg,
        (40, 28),
        "jpeg_inside.jpg",
    )
    ok("upper-case extension (written as .jpg)", "SHOUT.JPG", jpeg, (40, 28), "SHOUT.jpg")
    latin1 = os.fsdecode(b"caf\xe9_latin1.png")  # not valid UTF-8
    ok("non-UTF-8 file name", latin1, png, (40, 28))
    ok("unicode file name", "café 日本 🎨.png", png, (40, 28))
    ok("name with spaces", "  two  spaces .png", png, (40, 28))
    ok("name with a leading dash", "-rf.png", png, (40, 28))
    ok("name with two leading dashes", "--help.jpg", jpeg, (40, 28))
    ok("name with a newline", "new\nline.png", png, (40, 28))
    ok("name of 250 bytes", "n" * 246 + ".png", png, (40, 28))
    ok("image inside a directory named like an image", "folder.jpg/inner.png", png, (40, 28))

    # -- bad files ----------------------------------------------------------------------
    bad("empty file", "empty.jpg", b"", "empty file")
    bad("text named .jpg", "text.jpg", b"I am plain text, not a JPEG\n", "not an image")
    bad("random bytes named .png", "random.png", bytes(range(256)) * 8, "not an image")
    bad("truncated JPEG", "cut.jpg", jpeg[: len(jpeg) // 2], "truncated")
    bad("truncated PNG", "cut.png", png[: len(png) // 2], "truncated")
    bad("truncated WebP", "cut.webp", webp[: len(webp) // 2], "truncated or corrupt WebP data")
    broken = bytearray(png)
    broken[-20] ^= 0xFF  # inside the last IDAT: its CRC no longer matches
    bad("PNG with a bad checksum", "bad_crc.png", bytes(broken), "corrupt")
    bad("failed file with a newline in its name", "bad\nname.jpg", b"nope", "not an image")
    bad(
        "decompression bomb (PNG header declaring 100000 x 100000)",
        "bomb.png",
        png_bytes(100_000, 100_000, 8, 2, None),
        "too large",
    )
    bad(
        "decompression bomb (GIF declaring 65535 x 65535)",
        "gif_bomb.gif",
        gif_bomb(),
        "too large",
    )
    bad(
        "TIFF with a corrupt tag (2000 samples per pixel)",
        "bad_tag.tif",
        tiff_with_tag(encode(rgb, "TIFF"), 277, 2000),
        "damaged or unsupported TIFF data",
    )
    ok(
        "still GIF beside a PNG of the same stem",
        "clash.gif",
        encode(palette, "GIF"),
        (40, 28),
        "clash.png",
    )
    bad("PNG whose output name a GIF took", "clash.png", png, "another input already writes", True)
    frames = [Image.fromarray(photo(24, 16, 20 + i)).convert("P") for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    bad("animated GIF", "anim.gif", buf.getvalue(), "animated")
    rgb_frames = [Image.fromarray(photo(24, 16, 30 + i)) for i in range(3)]
    buf = io.BytesIO()
    rgb_frames[0].save(buf, format="WEBP", save_all=True, append_images=rgb_frames[1:])
    bad("animated WebP", "anim.webp", buf.getvalue(), "animated")

    loop = root / "loop.png"
    loop.symlink_to("loop.png")  # a symbolic link to itself
    cases.append(
        Case("symbolic link loop", loop, "failed", reason="symbolic link loop", stage="list")
    )
    dangling = root / "dangling.jpg"
    dangling.symlink_to(root / "no" / "such" / "file.jpg")
    cases.append(
        Case(
            "dangling symbolic link",
            dangling,
            "failed",
            reason="broken symbolic link",
            stage="list",
        )
    )
    fifo = root / "pipe.png"
    os.mkfifo(fifo)  # reading it would block forever
    cases.append(
        Case("named pipe named .png", fifo, "failed", reason="not a regular file", stage="list")
    )
    up = root / "sub" / "up"
    up.symlink_to("..")  # a folder loop: walking must not follow it
    cases.append(Case("symbolic link to a parent folder", up, "ignored"))
    linked = root / "linked_dir.png"
    linked.symlink_to("sub")
    cases.append(Case("symbolic link to a folder, named like an image", linked, "ignored"))
    empty_dir = root / "empty_dir.png"
    empty_dir.mkdir()
    cases.append(Case("empty directory named like an image", empty_dir, "ignored"))
    hidden = root / ".hidden.png"
    hidden.write_bytes(png)
    cases.append(Case("hidden file", hidden, "ignored"))

    if permissions:
        locked = root / "locked.png"
        locked.write_bytes(png)
        locked.chmod(0)
        cases.append(
            Case("unreadable file (mode 000)", locked, "failed", reason="permission denied")
        )
        closed = root / "closed"
        closed.mkdir()
        (closed / "inside.png").write_bytes(png)
        closed.chmod(0)
        cases.append(
            Case(
                "unreadable folder (mode 000)",
                closed,
                "failed",
                reason="cannot list directory",
                stage="list",
            )
        )
    return cases


def unlock(root: Path) -> None:
    """Give back the permissions the corpus took away (so that it can be removed)."""
    for path in (root / "locked.png", root / "closed"):
        if path.exists() and not path.is_symlink():
            path.chmod(0o700)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """Apply fuzzing edits to ``data``: ("flip", position, bit), ("cut",
    position, _) keeps the bytes before position, ("insert", position, byte),
    ("delete", position, count). Positions wrap around the current length."""
    out = bytearray(data)
    for kind, position, value in edits:
        if not out:
            break
        at = position % len(out)
        if kind == "flip":
            out[at] ^= 1 << (value % 8)
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value % 256])
        elif kind == "delete":
            del out[at : at + 1 + value % 16]
        elif kind == "set":
            out[at] = value % 256
    return bytes(out)
