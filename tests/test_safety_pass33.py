"""Reliability, the thirty-third pass: what the thirty-third hostile review
found in the code of passes 30-32. The scan counter is checked on real JPEG
bytes (cheap, in the default suite); the rest runs through the real CLI on
tiny files (``-m slow``). Each fails on the code of the pass's start
(51559d8) for the reason its docstring gives.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from styler.jpegscans import MAX_MARKERS, ScanCount, count_scans

FILL = "a JPEG holding a run of 0xFF fill (damaged, and slow to read)"
STRAY = "a JPEG of megabytes of stray bytes between its segments (made to be slow to read)"
T = TypeVar("T")

#: An empty progressive DC scan of the three components: what crafted
#: many-scan files repeat.
EMPTY_SCAN = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x10\x03\x10\x00\x00\x00"


def _progressive(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def _count(tmp_path: Path, data: bytes) -> ScanCount:
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    with open(path, "rb") as f:
        return count_scans(f)


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its start-of-frame saying ``width`` x ``height``."""
    at = jpeg.index(b"\xff\xc2")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def test_the_scan_count_follows_the_markers_as_the_decoder_does(tmp_path: Path) -> None:
    """`FF DA` was counted wherever the byte pair stood: inside an APPn
    segment, in a "motion photo"'s video after the end of the image, in the
    later frames of joined JPEGs. Such files, which decode in milliseconds,
    were refused as "more than 256 scans". Only the first image's real
    scans count now, and stray bytes between segments (which the decoder
    skips) do not hide scans from the count."""
    good = _progressive()
    assert _count(tmp_path, good).scans == 10  # libjpeg's progressive script
    assert _count(tmp_path, _with_app1(good, b"\xff\xda" * 30000)).scans == 10
    trailer = os.urandom(1 << 16).replace(b"\xff", b"\x00") + b"\xff\xda\x00\x04" * 400
    assert _count(tmp_path, good + trailer).scans == 10
    assert _count(tmp_path, good * 300).scans == 10
    assert good[2:4] == b"\xff\xe0"  # JFIF's APP0: stray bytes after it, as the decoder allows
    junk = good[:20] + b"\x00\x17" + good[20:]
    hostile = junk[:-2] + EMPTY_SCAN * 300 + b"\xff\xd9"
    assert _count(tmp_path, hostile).too_costly() == (
        "a JPEG of more than 256 scans (made to take minutes to decode)"
    )
    assert _count(tmp_path, good + b"\xff\x01" * (MAX_MARKERS + 1)).too_costly() is None
    tems = good[:2] + b"\xff\x01" * (MAX_MARKERS + 1) + good[2:]
    assert "more than 65536 markers" in str(_count(tmp_path, tems).too_costly())


def test_the_walk_stops_where_the_decoder_stops_reading(tmp_path: Path) -> None:
    """The walk read the whole file (a JPEG left by a download that
    reserved 32 GiB took 67 s, and a Ctrl-C waited for it) through a memory
    map (a file cut short meanwhile killed the process with SIGBUS). It
    reads in chunks, at most 64 MB past a sequential JPEG's only scan;
    a progressive one whose data runs on is refused, and so is a run of
    0xFF fill, which Pillow reads in time growing with its square."""
    baseline = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    Image.fromarray(pixels).save(baseline, "JPEG")
    for i, jpeg in enumerate((baseline.getvalue(), _progressive())):
        path = tmp_path / f"hole{i}.jpg"
        with open(path, "wb") as f:
            f.write(jpeg[:-2])
            f.truncate(32 << 30)  # a hole: nothing on disk
        with open(path, "rb") as f:
            reason = count_scans(f).too_costly()
        assert reason == (
            None
            if i == 0
            else "a JPEG whose data runs on past 64 MB without an end "
            "(damaged, or made to be slow to read)"
        )
        fill = _count(tmp_path, jpeg[:-2] + b"\xff" * (3 << 20)).too_costly()
        assert fill == FILL


def test_a_few_hundred_scans_over_a_large_image_are_refused(tmp_path: Path) -> None:
    """256 scans were allowed whatever the image's size, and 256 empty
    scans over 168 megapixels took 97 s to decode (with a stop waiting for
    it). The limit is now on scans x pixels past 32 scans, read from the
    frame header before decoding; a real progressive JPEG of that size (10
    scans) passes."""
    big = _with_size(_progressive(), 12000, 14000)
    assert _count(tmp_path, big).too_costly() is None
    many = big[:-2] + EMPTY_SCAN * 30 + b"\xff\xd9"
    assert _count(tmp_path, many).too_costly() == (
        "a JPEG of 40 scans over 168 megapixels (made to take minutes to decode)"
    )
    small = _progressive()[:-2] + EMPTY_SCAN * 240 + b"\xff\xd9"
    assert _count(tmp_path, small).scans == 250
    assert _count(tmp_path, small).too_costly() is None


@pytest.mark.slow
def test_jpegs_with_data_beside_their_scans_are_styled(tmp_path: Path) -> None:
    """Through `styler apply`: the files above that decode in milliseconds
    are styled; a large image of many scans is refused in one line before
    decoding; the batch goes on."""
    from test_safety import _lines, _model
    from test_safety_pass7 import _run

    onnx = pytest.importorskip("onnx")
    photos = tmp_path / "in"
    photos.mkdir()
    good = _progressive()
    (photos / "app.jpg").write_bytes(_with_app1(good, b"\xff\xda" * 30000))
    (photos / "motion.jpg").write_bytes(good + b"\xff\xda\x00\x04" * 400)
    (photos / "frames.jpg").write_bytes(good * 300)
    big = _with_size(good, 12000, 14000)
    (photos / "big.jpg").write_bytes(big[:-2] + EMPTY_SCAN * 30 + b"\xff\xd9")
    identity = [onnx.helper.make_node("Identity", ["image"], ["styled"])]
    model = _model(tmp_path / "m.onnx", identity)
    out = tmp_path / "out"
    r = _run("apply", str(photos), "-m", str(model), "-o", str(out), "-q", timeout=120)
    assert r.returncode == 1, _lines(r)
    assert _lines(r) == [
        f"styler: {photos / 'big.jpg'}: a JPEG of 40 scans over 168 megapixels "
        "(made to take minutes to decode)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["app.jpg", "frames.jpg", "motion.jpg"]


@pytest.mark.slow
def test_libtiff_says_nothing_on_stderr(tmp_path: Path) -> None:
    """A damaged JPEG-compressed TIFF made libtiff print "JPEGLib:
    Quantization table 0x00 was not defined." on stderr itself, before
    styler's line, which said only "cannot decode image: decoder error
    -2". Only styler's line is left, and it names the format."""
    from test_safety import _lines, _model
    from test_safety_pass7 import _run

    onnx = pytest.importorskip("onnx")
    photos = tmp_path / "in"
    photos.mkdir()
    pixels = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF", compression="jpeg")
    (photos / "cut.tif").write_bytes(buffer.getvalue()[:-100])
    # Read first: its magic number in the other byte order, which Pillow takes for a TIFF.
    lzw = io.BytesIO()
    Image.fromarray(pixels).save(lzw, "TIFF", compression="tiff_lzw")
    data = lzw.getvalue()
    (photos / "a_swapped.tif").write_bytes(data[:2] + data[3:4] + data[2:3] + data[4:])
    Image.fromarray(pixels).save(photos / "good.png")
    identity = [onnx.helper.make_node("Identity", ["image"], ["styled"])]
    model = _model(tmp_path / "m.onnx", identity)
    out = tmp_path / "out"
    r = _run("apply", str(photos), "-m", str(model), "-o", str(out), timeout=120)
    assert r.returncode == 1, _lines(r)
    errors = [line for line in _lines(r) if ".tif" in line or "TIFF" in line or "JPEG" in line]
    assert errors == [
        f"styler: {photos / name}: corrupt or unsupported TIFF data (decoder error -2)"
        for name in ("a_swapped.tif", "cut.tif")
    ], _lines(r)
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


@pytest.mark.slow
def test_a_broken_onnx_package_stops_train_export_and_import_at_once(tmp_path: Path) -> None:
    """An onnx package that fails to import was found only at the end:
    `train` trained, then printed a traceback as it exported (exit 1);
    `export` and `import` printed one; an onnx that calls sys.exit(0) made
    all three exit 0 having written nothing. Each now says so in one line
    before any work, exit 2."""
    from test_safety import _lines
    from test_safety_pass7 import _env, _photos, _run

    a, b = _photos(tmp_path / "A", 2, (40, 40)), _photos(tmp_path / "B", 2, (40, 40))
    tiny = ["--gen", "resnet_2blocks", "--ngf", "4", "--ndf", "4", "--size", "32"]
    run = tmp_path / "run"
    r = _run("train", str(a), str(b), *tiny, "--steps", "1", "-o", str(run), "--no-export", "-q",
             timeout=300)  # fmt: skip
    assert r.returncode == 0, _lines(r)
    checkpoint = Path(__file__).parent / "fixtures" / "reference"
    checkpoint = checkpoint / "resnet_6blocks_ngf16_instance.pth"
    for i, body in enumerate(("raise RuntimeError('boom')", "import sys; sys.exit(0)")):
        fake = tmp_path / f"fake{i}"
        (fake / "onnx").mkdir(parents=True)
        (fake / "onnx" / "__init__.py").write_text(body + "\n")
        env = _env(PYTHONPATH=str(fake))
        fresh = tmp_path / f"fresh{i}"
        cases = [
            ["train", str(a), str(b), *tiny, "--steps", "1", "-o", str(fresh)],
            ["export", str(run)],
            ["import", str(checkpoint), "-o", str(tmp_path / f"imported{i}.onnx")],
        ]
        for args in cases:
            r = _run(*args, env=env, timeout=300)
            said = _lines(r)
            assert r.returncode == 2 and len(said) == 1, (body, args[0], said)
            assert said[0].startswith("styler: error: the onnx package is installed but"), said
        assert not fresh.exists()
        assert not list(run.glob("*.onnx"))
        assert not (tmp_path / f"imported{i}.onnx").exists()


def _apply_folder(tmp_path: Path, make: Callable[[Path], T]) -> tuple[Any, Path, Path, T]:
    """``make(folder)`` fills a fresh folder, which `styler apply -q` then
    styles into ``out``: (the run, the folder, out, what make returned)."""
    from test_safety_pass7 import _run

    photos = tmp_path / "in"
    photos.mkdir()
    made = make(photos)
    out = tmp_path / "out"
    return _run("apply", str(photos), "-o", str(out), "-q", timeout=60), photos, out, made


def _baseline() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _pass35_files(folder: Path) -> None:
    """The thirty-fifth pass's files (sparse: a few KB on disk each)."""
    good = _baseline()
    app0_end = 4 + struct.unpack(">H", good[4:6])[0]
    with open(folder / "hole.jpg", "wb") as f:  # 1 GiB of zeros between two segments
        f.write(good[:app0_end])
        f.seek(1 << 30, 1)
        f.write(good[app0_end:])
    sos = good.index(b"\xff\xda")
    data = sos + 2 + struct.unpack(">H", good[sos + 2 : sos + 4])[0]
    stuffed = (b"\xff" * 8191 + b"\x00") * 4  # fill broken by stuffed zeros
    (folder / "stuffed.jpg").write_bytes(good[:data] + stuffed + good[data:])
    with open(folder / "meta.jpg", "wb") as f:  # 72 MB of APP1 segments (extended XMP)
        f.write(good[:2])
        for _ in range(1100):
            f.write(b"\xff\xe1" + struct.pack(">H", 65535))
            f.seek(65533, 1)
        f.write(good[2:])
    png = io.BytesIO()
    Image.open(io.BytesIO(good)).save(png, "PNG")
    ihdr_end = 8 + 25
    with open(folder / "chunks.png", "wb") as f:  # 4 unknown chunks of 1 GiB before the pixels
        f.write(png.getvalue()[:ihdr_end])
        for _ in range(4):
            f.write(struct.pack(">I", 1 << 30) + b"abCd")
            f.seek(1 << 30, 1)
            f.write(b"\0\0\0\0")
        f.write(png.getvalue()[ihdr_end:])


def test_what_pillow_reads_before_the_pixels_is_bounded(tmp_path: Path) -> None:
    """Pillow's own header parsers read a JPEG's stray bytes one at a time
    (a 10 GiB hole between two segments: minutes for each open, in apply's
    probe, which did not walk the file) and a PNG's chunks before IDAT
    whole (four unknown chunks of 1 GiB: 72 s and 5.3 GB); fill broken by a
    stuffed zero each megabyte escaped the fill rule (43 s); 72 MB of APP1
    segments, a good file, was refused as "data runs on past 64 MB". Stray
    bytes, fill runs and the bytes before the pixels are bounded now, each
    with its own reason, and metadata segments count apart from the data."""
    from styler.imageio import probe
    from styler.pngchunks import too_costly

    _pass35_files(tmp_path)
    with open(tmp_path / "hole.jpg", "rb") as f:
        assert count_scans(f, header_only=True).too_costly() == STRAY
    with open(tmp_path / "stuffed.jpg", "rb") as f:
        assert count_scans(f).too_costly() == FILL
    with open(tmp_path / "meta.jpg", "rb") as f:
        assert count_scans(f).too_costly() is None
    with open(tmp_path / "chunks.png", "rb") as f:
        assert too_costly(f) == (
            "a PNG of more than 64 MB of chunks besides its pixels (made to be slow to read)"
        )
    for name, reason in (("hole.jpg", STRAY), ("chunks.png", "64 MB of chunks")):
        with pytest.raises(Exception, match=re.escape(reason)):
            probe(tmp_path / name)
    assert probe(tmp_path / "meta.jpg").size == (64, 48)


@pytest.mark.slow
def test_files_slow_to_open_are_one_line_each_in_apply(tmp_path: Path) -> None:
    """Through `styler apply`: the files above take a second in all, each
    refused in one line, and the good one styled."""
    from test_safety import _lines

    r, photos, out, _ = _apply_folder(tmp_path, _pass35_files)
    assert r.returncode == 1, _lines(r)
    assert sorted(_lines(r)) == [
        f"styler: {photos / 'chunks.png'}: a PNG of more than 64 MB of chunks besides its "
        "pixels (made to be slow to read)",
        f"styler: {photos / 'hole.jpg'}: {STRAY}",
        f"styler: {photos / 'stuffed.jpg'}: {FILL}",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["meta.jpg"]


def _good_files_with_fill(folder: Path) -> list[str]:
    """Good files of the thirty-sixth pass: 0xFF runs where the decoder
    never reads (a comment, an ICC profile, after the end, in a second
    frame), and PNGs of large compressed metadata."""
    from PIL import PngImagePlugin

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))
    img.save(folder / "com_ff.jpg", comment=b"\xff" * 5000)
    img.save(folder / "icc_ff.jpg", icc_profile=bytes(128) + b"\xff" * 6000)
    baseline = _baseline()
    (folder / "trail_ff.jpg").write_bytes(baseline + b"\xff" * 8192)
    (folder / "prog_trail_ff.jpg").write_bytes(_progressive() + b"\xff" * 8192)
    commented = io.BytesIO()
    img.save(commented, "JPEG", comment=b"\xff" * 5000)
    (folder / "two_ff.jpg").write_bytes(baseline + commented.getvalue())
    img.save(folder / "icc.png", icc_profile=bytes(128) + bytes(1_500_000))
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", '{"a":1}' * 200_000, zip=True)  # 1.4 MB inflated
    img.save(folder / "ztxt.png", pnginfo=info)
    return sorted(p.name for p in folder.iterdir())


def test_fill_where_the_decoder_never_reads_is_no_reason_to_refuse(tmp_path: Path) -> None:
    """The fill rule looked at the whole megabyte read ahead, not at the
    bytes searched up to the marker found: a JPEG with a run of 0xFF in a
    comment, an ICC profile, an uncompressed EXIF thumbnail of a bright
    scene or after its end was refused. Such JPEGs are read, as are PNGs
    whose ICC profile or text inflates past Pillow's 1 MB default."""
    from styler.imageio import load_image

    names = _good_files_with_fill(tmp_path)
    for name in names:
        if name.endswith(".jpg"):
            with open(tmp_path / name, "rb") as f:
                assert count_scans(f).too_costly() is None, name
        assert load_image(tmp_path / name).rgb.shape[:2] in ((64, 80), (48, 64)), name


@pytest.mark.slow
def test_good_files_with_fill_are_styled(tmp_path: Path) -> None:
    from test_safety import _lines

    r, _, out, names = _apply_folder(tmp_path, _good_files_with_fill)
    assert r.returncode == 0 and not _lines(r), _lines(r)
    assert sorted(p.name for p in out.iterdir()) == names


def _slow_headers(folder: Path) -> dict[str, str]:
    """Files of the thirty-sixth pass whose headers Pillow reads in Python
    for minutes or gigabytes (sparse: a few KB on disk each), and the
    reason each is refused."""
    import zlib

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))
    encoded = {}
    for fmt in ("WEBP", "TIFF", "GIF", "BMP", "PNG"):
        buffer = io.BytesIO()
        img.save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    with open(folder / "hole.webp", "wb") as f:  # read whole by Pillow: 76 s, 8.5 GB at 4 GiB
        f.write(encoded["WEBP"])
        f.truncate(1 << 30)
    tiff = encoded["TIFF"]  # its directory again at the end, with a tag of 1 GiB in a hole
    (ifd,) = struct.unpack("<I", tiff[4:8])
    (n,) = struct.unpack("<H", tiff[ifd : ifd + 2])
    tag = struct.pack("<HHII", 65000, 7, 1 << 30, len(tiff))
    directory = struct.pack("<H", n + 1) + tiff[ifd + 2 : ifd + 2 + 12 * n] + tag + bytes(4)
    with open(folder / "tag.tif", "wb") as f:
        f.write(tiff[:4] + struct.pack("<I", len(tiff)) + tiff[8:] + directory)
        f.truncate(len(tiff) + (1 << 30))
    with open(folder / "hole.gif", "wb") as f:  # a hole before its trailer: stepped byte by byte
        f.write(encoded["GIF"][:-1])
        f.seek(64 << 20, 1)
        f.write(b";")
    with open(folder / "comment.ppm", "wb") as f:  # a comment read byte by byte
        f.write(b"P6\n#")
        f.seek(8 << 20, 1)
        f.write(b"\n80 64\n255\n" + img.tobytes())
    bmp = bytearray(encoded["BMP"])
    bmp[14:18] = struct.pack("<I", 0x7FFFFFF0)  # a header of 2 GiB, read whole
    with open(folder / "header.bmp", "wb") as f:
        f.write(bmp)
        f.truncate(1 << 30)
    png = encoded["PNG"]
    end = png.rindex(b"IEND") - 4
    with open(folder / "after.png", "wb") as f:  # unknown chunks after the pixels
        f.write(png[:end])
        for _ in range(2):
            f.write(struct.pack(">I", 1 << 30) + b"zzXx")
            f.seek(1 << 30, 1)
            f.write(bytes(4))
        f.write(png[end:])
    empty = struct.pack(">I", 0) + b"zzXx" + struct.pack(">I", zlib.crc32(b"zzXx"))
    (folder / "many.png").write_bytes(png[:end] + empty * 270_000 + png[end:])
    with open(folder / "png.ico", "wb") as f:  # an icon's PNG with a chunk of 1 GiB
        f.write(struct.pack("<HHHBBBBHHII", 0, 1, 1, 64, 64, 0, 0, 1, 32, 100, 22))
        f.write(png[:33] + struct.pack(">I", 1 << 30) + b"abCd")
        f.seek(1 << 30, 1)
        f.write(bytes(4) + png[33:])
    slow = "(made to be slow to read)"
    return {
        "hole.webp": f"a WebP of 1024 MB, mostly holes or too large {slow}",
        "tag.tif": f"a TIFF whose tags claim 1024 MB, more than the file holds {slow}",
        "hole.gif": f"a GIF of megabytes of stray bytes between its blocks {slow}",
        "comment.ppm": f"a PPM whose header runs past 1 MB {slow}",
        "header.bmp": f"a BMP header of 2147483632 bytes {slow}",
        "after.png": f"a PNG of more than 64 MB of chunks besides its pixels {slow}",
        "many.png": f"a PNG of more than 262144 chunks {slow}",
        "png.ico": f"an icon's PNG of more than 64 MB of chunks besides its pixels {slow}",
    }


def test_headers_pillow_reads_in_python_are_bounded(tmp_path: Path) -> None:
    """A WebP followed by a hole (read whole: 76 s, 8.5 GB), TIFF tags
    pointing into one (73 s, 9.5 GB), a GIF's or a PPM comment's stray bytes
    (stepped over one at a time: 52 s, 20 s), a BMP header claiming 2 GiB
    (30 s, 4.3 GB), PNG chunks after the pixels (36 s, 9.5 GB; or two
    million empty ones) and an icon's PNG: each is refused from its headers
    in milliseconds; the same formats, well made, are read."""
    from styler.imageio import probe

    for name, reason in _slow_headers(tmp_path).items():
        with pytest.raises(Exception, match=re.escape(reason)):
            probe(tmp_path / name)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), np.uint8))
    for ext in ("webp", "tif", "gif", "ppm", "bmp", "ico", "png", "tga"):
        img.save(tmp_path / f"good.{ext}")
        assert probe(tmp_path / f"good.{ext}").size[0] in (400, 256), ext  # ICO: 256 at most


@pytest.mark.slow
def test_slow_headers_are_one_line_each_in_apply(tmp_path: Path) -> None:
    from test_safety import _lines

    r, photos, out, reasons = _apply_folder(tmp_path, _slow_headers)
    assert r.returncode == 1, _lines(r)
    assert sorted(_lines(r)) == sorted(f"styler: {photos / n}: {why}" for n, why in reasons.items())
    assert not out.exists() or not list(out.iterdir())


def test_tiff_and_bmp_headers_of_the_thirty_seventh_pass(tmp_path: Path) -> None:
    """A BigTIFF pointing at its directory past 2^63 was a traceback that
    ended the batch; a BigTIFF directory claiming 5,000,000 entries took
    49 s, EXIF tags in holes 19 s and 4.3 GB, a run-length BMP over a hole
    minutes (Pillow decodes it in Python); a layered Photoshop TIFF (its
    layers in one tag of 70 MB, really in the file) was refused. Each is
    now read or refused at once."""
    from styler.errors import BadImageError
    from styler.imageio import load_image, probe

    slow = "(made to be slow to read)"
    (tmp_path / "far.tif").write_bytes(b"II+\0" + struct.pack("<HHQ", 8, 0, 2**64 - 1) + bytes(64))
    with pytest.raises(BadImageError):  # the decoder's own reason, not a traceback
        probe(tmp_path / "far.tif")
    with open(tmp_path / "entries.tif", "wb") as f:
        f.write(b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 5_000_000))
        f.truncate(100 << 20)
    with pytest.raises(BadImageError, match=re.escape(f"more than 65536 entries {slow}")):
        probe(tmp_path / "entries.tif")
    grey = Image.fromarray(np.zeros((8, 8), np.uint8))
    buffer = io.BytesIO()
    grey.save(buffer, "TIFF")
    base = buffer.getvalue()
    (ifd,) = struct.unpack("<I", base[4:8])
    (n,) = struct.unpack("<H", base[ifd : ifd + 2])
    sub = len(base)  # an EXIF directory at the end: one comment claiming 1 GiB after it
    exif_dir = struct.pack("<H", 1) + struct.pack("<HHII", 0x9286, 7, 1 << 30, sub + 64) + bytes(4)
    first = len(base) + 64
    entries = base[ifd + 2 : ifd + 2 + 12 * n] + struct.pack("<HHII", 34665, 13, 1, sub)
    directory = struct.pack("<H", n + 1) + entries + bytes(4)
    tiff = base[:4] + struct.pack("<I", first) + base[8:]
    tiff += exif_dir + bytes(64 - len(exif_dir)) + directory
    with open(tmp_path / "exif.tif", "wb") as f:
        f.write(tiff)
        f.truncate(len(tiff) + (1 << 30))
    with pytest.raises(BadImageError, match="more than the file holds"):
        probe(tmp_path / "exif.tif")
    bmp = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).convert("P").save(bmp, "BMP")
    rle = bytearray(bmp.getvalue())
    rle[30:34] = struct.pack("<I", 1)  # RLE8
    with open(tmp_path / "rle.bmp", "wb") as f:
        f.write(rle)
        f.truncate(64 << 20)
    with pytest.raises(BadImageError, match=re.escape(f"than its pixels can need {slow}")):
        probe(tmp_path / "rle.bmp")
    layered = Image.fromarray(np.zeros((60, 80, 3), np.uint8))
    info = {37724: b"Adobe Photoshop Document Data Block\0" + os.urandom(70 << 20)}
    layered.save(tmp_path / "layered.tif", tiffinfo=info)
    assert load_image(tmp_path / "layered.tif").rgb.shape == (60, 80, 3)
