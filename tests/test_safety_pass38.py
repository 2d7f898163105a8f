"""Reliability, the thirty-eighth pass: icons and headerless bitmaps. Good
icons were taken for TGA files and refused; run-length bitmaps without a
file header (DIBs, and the bitmaps inside icons) escaped the run-length
check; the icon check looked at the first 256 entries while Pillow decodes
the largest one, wherever it stands; and a folder's ``.dib``, ``.mpo`` and
``.pfm`` files, which styler reads, were passed over. The header checks run
in the default suite; the same files go through `styler apply` with
``-m slow``. Each fails on the code of the pass's start (5e3fef3) for the
reason its docstring gives. The thirty-ninth pass reviewed those fixes;
its test fails on 719bc38. The fortieth pass's tests, at the end, fail on
5698ff1.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

SLOW = "(made to be slow to read)"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLOAT_TIFF = (
    "damaged or unsupported TIFF data (the decoder cannot open it; it does not read "
    "floating-point colour, for one)"
)


def _noise(size: int, rows: int | None = None) -> Image.Image:
    """A ``size`` x ``size`` picture, noise in its first ``rows`` rows."""
    pixels = np.full((size, size, 3), 90, np.uint8)
    rows = size if rows is None else rows
    pixels[:rows] = np.random.default_rng(size).integers(0, 255, (rows, size, 3), np.uint8)
    return Image.fromarray(pixels)


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _icon(entries: list[tuple[int, bytes]]) -> bytes:
    """An ICO file of ``(side, data)`` entries (a PNG, or a BMP without its
    file header), stored in that order."""
    at = 6 + 16 * len(entries)
    directory, data = b"", b""
    for side, blob in entries:
        directory += struct.pack("<BBBBHHII", side % 256, side % 256, 0, 0, 1, 32, len(blob), at)
        at += len(blob)
        data += blob
    return struct.pack("<HHH", 0, 1, len(entries)) + directory + data


def _rle_dib(side: int = 16, height_factor: int = 1) -> bytes:
    """A run-length (RLE8) bitmap's header and palette, without a file
    header (a DIB, as in an icon, whose header counts the mask's rows too)."""
    bmp = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).convert("P").save(bmp, "BMP")
    dib = bytearray(bmp.getvalue()[14:])
    dib[8:12] = struct.pack("<i", side * height_factor)
    dib[16:20] = struct.pack("<I", 1)  # RLE8
    return bytes(dib)


def _good_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Files styler must read, and the (height, width) of each."""
    # An icon's first entry of 64-128 KB: the third byte of its size (1) is
    # what a TGA header holds there as its pixel depth, so the TGA decoder,
    # tried first, took the icon for its own and failed on it.
    favicon = _png(_noise(256, rows=120))
    assert 65536 <= len(favicon) < 131072
    (folder / "favicon.ico").write_bytes(_icon([(256, favicon)]))
    _noise(128).convert("RGBA").save(folder / "bitmap.ico", sizes=[(128, 128)], bitmap_format="bmp")
    # Three hundred small entries before the large one Pillow decodes.
    small, large = _png(_noise(16)), _png(_noise(64))
    (folder / "crowded.ico").write_bytes(_icon([(16, small)] * 300 + [(64, large)]))
    # Files of formats styler reads: a folder's walk passed over the DIB
    # (and takes neither the MPO nor the PFM, read when named).
    img = _noise(48)
    img.save(folder / "plain.dib", "DIB")
    img.save(folder / "camera.mpo", "MPO", save_all=True, append_images=[img])
    grey = np.random.default_rng(0).random((40, 56)).astype("<f4")
    (folder / "float.pfm").write_bytes(b"Pf\n56 40\n-1.0\n" + grey[::-1].tobytes())
    return {
        "favicon.ico": (256, 256),
        "bitmap.ico": (128, 128),
        "crowded.ico": (64, 64),
        "plain.dib": (48, 48),
        "camera.mpo": (48, 48),
        "float.pfm": (40, 56),
    }


def _slow_files(folder: Path) -> dict[str, str]:
    """Files that took Pillow seconds to minutes (sparse: a few KB on disk
    each), and the reason each is refused."""
    with open(folder / "rle.dib", "wb") as f:  # 64 MB of RLE data, decoded in Python
        f.write(_rle_dib())
        f.truncate(64 << 20)
    with open(folder / "rle.ico", "wb") as f:  # the same inside an icon
        f.write(_icon([(16, _rle_dib(height_factor=2))]))
        f.truncate(64 << 20)
    # 300 small entries, then a PNG with a chunk of 1 GiB in a hole: the
    # check looked at the first 256 entries, Pillow reads the largest.
    png = _png(_noise(64))
    icon = _icon([(16, _png(_noise(16)))] * 300 + [(64, png[:33])])
    with open(folder / "late.ico", "wb") as f:
        f.write(icon + struct.pack(">I", 1 << 30) + b"abCd")
        f.seek(1 << 30, 1)
        f.write(bytes(4) + png[33:])
    # 300 entries of one size, each a different bitmap: too many to check.
    tiny = _png(_noise(16))
    (folder / "many.ico").write_bytes(_icon([(16, tiny + bytes(i)) for i in range(300)]))
    return {
        "rle.dib": f"a run-length BMP of more data than its pixels can need {SLOW}",
        "rle.ico": f"an icon's run-length BMP of more data than its pixels can need {SLOW}",
        "late.ico": f"an icon's PNG of more than 64 MB of chunks besides its pixels {SLOW}",
        "many.ico": f"an icon of more than 256 images of one size {SLOW}",
    }


def _float_rgb_tiff(path: Path) -> None:
    """A 4 x 3 TIFF of 32-bit floating-point RGB (which Pillow has no mode for)."""
    pixels = np.random.default_rng(0).random((3, 4, 3)).astype("<f4").tobytes()
    short, long = 3, 4
    tags = [(256, short, 4), (257, short, 3), (259, short, 1), (262, short, 2)]
    tags += [(277, short, 3), (278, short, 3), (279, long, len(pixels))]
    end = 8 + 2 + 12 * (len(tags) + 3) + 4
    ifd = b"".join(
        struct.pack("<HHIHH", tag, kind, 1, value, 0)
        if kind == short
        else struct.pack("<HHII", tag, kind, 1, value)
        for tag, kind, value in tags
    )
    ifd += struct.pack("<HHII", 258, short, 3, end)  # bits per sample: 32, 32, 32
    ifd += struct.pack("<HHII", 339, short, 3, end + 6)  # sample format: float
    ifd += struct.pack("<HHII", 273, long, 1, end + 12)  # where the pixels are
    data = struct.pack("<3H", 32, 32, 32) + struct.pack("<3H", 3, 3, 3) + pixels
    count = struct.pack("<H", len(tags) + 3)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + count + ifd + bytes(4) + data)


def test_icons_and_headerless_bitmaps_are_read(tmp_path: Path) -> None:
    """A 256-pixel PNG favicon and a 128-pixel 32-bit bitmap icon were
    refused ("cannot decode image: cannot load this image": the TGA decoder
    had them); the others were read already and must stay so."""
    from styler.imageio import load_image

    for name, shape in _good_files(tmp_path).items():
        assert load_image(tmp_path / name).rgb.shape[:2] == shape, name


def test_run_length_bitmaps_anywhere_and_late_icon_entries_are_refused(tmp_path: Path) -> None:
    """A run-length DIB or icon over 64 MB of hole took 7 s each to fail
    (1 GiB: minutes, deaf to SIGTERM), and the icon whose large entry stood
    after 300 small ones 7 s and gigabytes: now each is refused from its
    headers, with its reason, at once."""
    from styler.errors import BadImageError
    from styler.imageio import probe

    for name, reason in _slow_files(tmp_path).items():
        with pytest.raises(BadImageError, match=re.escape(reason)):
            probe(tmp_path / name)


def test_a_tiff_pillow_cannot_read_is_called_a_tiff(tmp_path: Path) -> None:
    """A floating-point RGB TIFF was "not an image file (or a format styler
    does not read)": it is an image, of a kind the decoder does not read."""
    from styler.errors import BadImageError
    from styler.imageio import load_image

    _float_rgb_tiff(tmp_path / "float.tif")
    with pytest.raises(BadImageError, match=re.escape(FLOAT_TIFF)):
        load_image(tmp_path / "float.tif")


@pytest.mark.slow
def test_the_thirty_eighth_pass_through_apply(tmp_path: Path) -> None:
    """Through `styler apply` on one folder: every good file is styled at
    its size (the ``.dib`` among them, which the walk passed over), every
    slow one is one line, in a few seconds. A 3D camera's ``.MPO`` beside
    the ``.JPG`` of the same picture is not walked (both would write one
    output), nor a ``.pfm``."""
    from test_safety import _lines
    from test_safety_pass7 import _run

    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    good = _good_files(photos)
    reasons = _slow_files(photos)
    _float_rgb_tiff(photos / "float.tif")
    reasons["float.tif"] = FLOAT_TIFF
    reasons.update(_pass39_files(photos))  # (passes 39 and 40 through the CLI too)
    del reasons["colour.pfm"]  # not walked
    with open(photos / "comment.ppm", "wb") as f:
        f.write(b"P3\n2 2\n255\n0 0 0 #")
        f.seek(1 << 30)
        f.write(b"\n0 0 0 0 0 0 0 0 0\n")
    reasons["comment.ppm"] = f"a plain-text PNM of 1024 MB, mostly holes {SLOW}"
    _noise(40).save(photos / "DSCF0001.JPG")
    _noise(40).save(photos / "DSCF0001.MPO", "MPO", save_all=True, append_images=[_noise(40)])
    walked = {n: size for n, size in good.items() if not n.endswith((".mpo", ".pfm"))}
    walked["DSCF0001.JPG"] = (40, 40)
    r = _run("apply", str(photos), "-o", str(out), "-q", timeout=60)
    assert r.returncode == 1, _lines(r)
    assert sorted(_lines(r)) == sorted(f"styler: {photos / n}: {why}" for n, why in reasons.items())
    styled = {p.stem: p for p in out.iterdir()}
    assert sorted(styled) == sorted(Path(n).stem for n in walked)
    for name, (height, width) in walked.items():
        with Image.open(styled[Path(name).stem]) as img:
            assert img.size == (width, height), name


@pytest.mark.slow
def test_a_file_named_twice_is_styled_once(tmp_path: Path) -> None:
    """The same file named twice failed the second time, "another input
    already writes out/a.png (a.png)", naming the file itself, with exit 1.
    It is styled once and the repeat skipped, saying so; exit 0."""
    import json

    from test_safety_pass7 import _run

    photo = tmp_path / "a.png"
    _noise(32).save(photo)
    out = tmp_path / "out"
    r = _run("apply", str(photo), str(photo), "-o", str(out), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["status"] for x in records] == ["ok", "skipped"]
    assert records[1]["error"] == f"named twice (as {photo} too)"
    assert [p.name for p in out.iterdir()] == ["a.png"]


def _pass39_files(folder: Path) -> dict[str, str]:
    """The thirty-ninth pass's files (sparse, or a few MB), and the line of each."""
    with open(folder / "hole.bmp", "wb") as f:  # 36 MP of run-length data, all hole
        bmp = _rle_dib(16)
        f.write(b"BM" + struct.pack("<IHHI", 0, 0, 0, 14 + len(bmp)) + bmp[:4])
        f.write(struct.pack("<ii", 6000, 6000) + bmp[12:])
        f.truncate(68 << 20)
    # 256 PNG entries whose first chunks all jump into one chain of 262,000
    # empty chunks: each entry's walk stayed under the limit, 256 of them 15 s.
    count, chain = 256, 262_000
    at = 6 + 16 * count
    start = at + 16 * count + 16  # the chain, after each entry's signature and first chunk
    directory, blobs = b"", b""
    for i in range(count):
        offset = at + 16 * i
        jump = start - (offset + 8 + 12)  # past the chunk's header, its data and CRC
        blobs += PNG_SIGNATURE + struct.pack(">I", jump) + b"abCd"
        directory += struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, 16, offset)
    empty = struct.pack(">I", 0) + b"zzXx" + bytes(4)
    head = struct.pack("<HHH", 0, 1, count) + directory + blobs + bytes(16)
    (folder / "chain.ico").write_bytes(head + empty * chain)
    png = bytearray(_png(_noise(16)))
    png[29] ^= 0xFF  # IHDR's CRC
    (folder / "crc.png").write_bytes(bytes(png))
    (folder / "cut.ico").write_bytes(_icon([(64, _png(_noise(64)))])[:60])
    colour = np.random.default_rng(0).random((8, 8, 3)).astype("<f4")
    (folder / "colour.pfm").write_bytes(b"PF\n8 8\n-1.0\n" + colour.tobytes())
    return {
        "hole.bmp": f"a run-length BMP of 68 MB, mostly holes {SLOW}",
        "chain.ico": f"an icon whose PNGs hold more than 262144 chunks {SLOW}",
        "crc.png": "damaged or unsupported PNG data (the decoder cannot open it)",
        "cut.ico": "damaged or unsupported icon data (the decoder cannot open it)",
        "colour.pfm": "a colour PFM (floating-point RGB), which styler's decoder does not read",
    }


def test_the_thirty_ninth_pass(tmp_path: Path) -> None:
    """A run-length BMP claiming 36 MP over a hole passed the size bound and
    took 7.5 s (a hole's zeros are line ends, stepped two at a time); an
    icon whose 256 PNGs walk one chain of 262,000 chunks took 15 s; a PNG
    with a damaged IHDR, a cut icon (read as a TGA, now tried last) and a
    colour PFM were "not an image file". Each is refused at once, saying
    what it is."""
    from styler.errors import BadImageError
    from styler.imageio import probe

    for name, reason in _pass39_files(tmp_path).items():
        with pytest.raises(BadImageError, match=re.escape(reason)):
            probe(tmp_path / name)


def test_the_fortieth_pass_files_with_holes(tmp_path: Path) -> None:
    """A plain (text) PNM with a comment that runs into a hole of 1 GiB:
    Pillow looks for the comment's end through the hole, a megabyte at a
    time (64 GiB: 23 s, in apply, train and quantize alike). Refused from
    its header now. Holes are found with SEEK_HOLE, so a file a compressing
    filesystem stores in few blocks is not taken for one of holes."""
    from styler.errors import BadImageError
    from styler.imageio import probe
    from styler.slowfiles import on_disk

    with open(tmp_path / "comment.ppm", "wb") as f:
        f.write(b"P3\n2 2\n255\n0 0 0 #")
        f.seek(1 << 30)
        f.write(b"\n0 0 0 0 0 0 0 0 0\n")
    reason = f"a plain-text PNM of 1024 MB, mostly holes {SLOW}"
    with pytest.raises(BadImageError, match=re.escape(reason)):
        probe(tmp_path / "comment.ppm")
    with open(tmp_path / "comment.ppm", "rb") as f:
        stored = on_disk(f, os.fstat(f.fileno()))
    assert stored < 1 << 20  # the bytes written, not the hole
    dense = tmp_path / "dense.bin"
    dense.write_bytes(os.urandom(1 << 20))
    with open(dense, "rb") as f:
        assert on_disk(f, os.fstat(f.fileno())) == 1 << 20


def _bytes_read(io_stats: Path) -> int | None:
    """Bytes this process has read so far (``rchar``), where the system says."""
    try:
        fields = dict(line.split(": ") for line in io_stats.read_text().splitlines())
    except OSError:
        return None
    return int(fields["rchar"])


def test_a_metrics_file_with_a_hole_is_not_read_through(tmp_path: Path) -> None:
    """`train --resume` on a run whose metrics.jsonl holds a hole of 8 GiB
    read all of it, 64 KB at a time (25 s, 1 GB). A damaged line's holes
    are jumped over now (a hole holds no line end), and the records after
    it are kept (pass 41: stopping at the line lost them on resume)."""
    from styler.training.metricslog import Damaged, iter_metrics

    path = tmp_path / "metrics.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"step": 1, "G": 0.5}\n{"step": 2, "G": 0.4}\nx')
        f.seek(1 << 30, 1)
        f.write(b'\n{"step": 3, "G": 0.3}\n')
    io_stats = Path("/proc/self/io")
    before = _bytes_read(io_stats)
    damaged = Damaged()
    assert [r["step"] for r in iter_metrics(path, damaged)] == [1, 2, 3]
    assert damaged.first == "line 3: longer than 65536 bytes"
    if before is not None:  # Linux: what the reads asked for, the hole's GiB not among them
        assert _bytes_read(io_stats) - before < 64 << 20


@pytest.mark.slow
def test_import_refuses_a_checkpoint_claiming_gigabytes(tmp_path: Path) -> None:
    """A .pth whose one tensor (1.1 GB of zeros) is deflated into a zip of
    about a megabyte: `styler import` read every tensor before any check
    (a 2.8 MB file: 3.4 GB of memory). What the zip's entries claim is
    summed first; over 1 GiB, nothing is loaded: one line, exit 2."""
    import zipfile

    import torch
    from test_safety import _lines
    from test_safety_pass7 import _run

    small = tmp_path / "small.pth"
    torch.save({"model.1.weight": torch.zeros(70_000)}, small)  # its count, patched below
    numel = 17 * (1 << 24)  # 1088 MiB of float32
    pth = tmp_path / "latest_net_G_A.pth"
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(pth, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(struct.pack("<i", 70_000), struct.pack("<i", numel))
            if not info.filename.endswith("/data/0"):
                dst.writestr(info.filename, data, compresslevel=1)
                continue
            with dst.open(info.filename, "w", force_zip64=True) as entry:
                for _ in range(17):
                    entry.write(bytes(64 << 20))
    assert pth.stat().st_size < 8 << 20
    r = _run("import", str(pth), "-o", str(tmp_path / "x.onnx"), timeout=120)
    assert r.returncode == 2, _lines(r)
    assert _lines(r) == [
        f"styler: error: {pth}: it claims 1088 MB of tensors, more than any generator styler "
        "imports holds (at most 1024 MB); nothing was loaded"
    ]
    assert not (tmp_path / "x.onnx").exists()
    damaged = tmp_path / "damaged_net_G_A.pth"  # pass 41: an extra field that runs over
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            if info.filename.endswith("/data.pkl"):
                entry.extra = b"\x99\x99\x10\x00ab"
            dst.writestr(entry, src.read(info))
    r = _run("import", str(damaged), "-o", str(tmp_path / "y.onnx"), timeout=120)
    assert r.returncode == 2, _lines(r)
    assert _lines(r) == [
        f"styler: error: {damaged}: a damaged zip archive (Corrupt extra field 9999 (size=16))"
    ]


def test_import_refuses_a_damaged_zip_and_names_a_forged_legacy_file(tmp_path: Path) -> None:
    """Pass 41: an extra field whose stated length runs past its entry made
    Python's zipfile refuse the archive, so the size check fell back to the
    file's size, while PyTorch's laxer reader loaded it (a 4.2 MB file: 4.7
    GB of memory): a zip that cannot be read is refused as damaged now. A
    legacy (pre-zip) file whose pickle claims more than it holds gave
    PyTorch's raw text, "expected %ld got %ld2800008589934588"."""
    import zipfile

    import torch

    from styler.errors import BadCheckpointError
    from styler.importer import load_state_dict

    small = tmp_path / "small.pth"
    torch.save({"model.1.weight": torch.zeros(70_000)}, small)
    forged = tmp_path / "forged.pth"
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            if info.filename.endswith("/data.pkl"):
                entry.extra = b"\x99\x99\x10\x00ab"  # says 16 bytes follow; 2 do
            dst.writestr(entry, src.read(info))
    with pytest.raises(BadCheckpointError, match=re.escape("a damaged zip archive (Corrupt extra")):
        load_state_dict(forged)
    legacy = tmp_path / "legacy.pth"
    weights = {"model.1.weight": torch.zeros(70_000)}
    torch.save(weights, legacy, _use_new_zipfile_serialization=False)
    count, claim = struct.pack("<i", 70_000), struct.pack("<i", 1 << 30)
    legacy.write_bytes(legacy.read_bytes().replace(b"J" + count, b"J" + claim, 1))
    with pytest.raises(BadCheckpointError, match="do not match the sizes it states"):
        load_state_dict(legacy)
