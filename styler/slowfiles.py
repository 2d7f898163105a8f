"""Files made to be slow to open, told from their headers before Pillow
reads them.

Pillow parses the headers of WebP, TIFF, GIF, PPM, BMP and ICO files in
Python, and some of that work grows with what the file claims, not with its
image: it reads a WebP whole, every TIFF tag's data whole, a BMP's header
of any claimed size, and steps over a GIF's or a PPM comment's stray bytes
one at a time. A file of a few KB on disk holding a hole of gigabytes took
minutes and gigabytes of memory to open. Each check reads only headers;
JPEG's and PNG's walks have their own modules (:mod:`styler.jpegscans`,
:mod:`styler.pngchunks`), called from here.
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

from styler.jpegscans import count_scans
from styler.pngchunks import MAX_CHUNKS, PNG_SIGNATURE
from styler.pngchunks import too_costly as png_too_costly
from styler.pngchunks import walk as png_walk

#: Largest WebP read (Pillow reads the whole file into memory; a photo is a
#: few MB, a lossless one of 179 megapixels a few hundred at worst).
MAX_WEBP = 256 << 20
#: Most bytes of tag data in a TIFF's first directory (its strips' offsets
#: and counts, a profile, XMP: a few MB).
MAX_TIFF_TAGS = 64 << 20
#: Most stray bytes (outside any block) a GIF, or comment bytes a PPM's
#: header, may hold.
MAX_STRAY = 1 << 20
#: Most sub-blocks a GIF may hold (a 179-megapixel frame's data fills
#: about 700,000 of 255 bytes).
MAX_GIF_BLOCKS = 4_000_000
#: Largest BMP header (the largest real one, BITMAPV5HEADER, is 124 bytes).
MAX_BMP_HEADER = 1024
#: Most ICO entries of its largest size (Pillow decodes one of them, a PNG
#: or a BMP at an offset, each checked; real icons hold one or two).
MAX_ICO_ENTRIES = 256
#: Most run-length BMP or plain PNM data taken without asking whether the
#: file holds it (Pillow steps through 16 MB of it in about 2 s).
MAX_HOLES = 16 << 20
#: Most holes counted one by one (then the blocks allocated tell).
MAX_SEGMENTS = 4096
#: The sizes of the headers Pillow takes for a headerless BMP (a DIB).
DIB_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})

#: What Pillow takes for a TIFF (both byte orders of each magic number, as
#: it does, and BigTIFF).
TIFF_HEADS = (b"II*\x00", b"MM\x00*", b"II\x00*", b"MM*\x00", b"II+\x00", b"MM\x00+")

_SLOW = "(made to be slow to read)"
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
_GIF_BLOCK_START = re.compile(rb"[!,;]")
#: TIFF tags that point at a directory Pillow reads too: EXIF, GPS, interoperability.
_SUB_DIRECTORIES = frozenset({34665, 34853, 40965})


def claimed_format(head: bytes) -> str | None:
    """The format a file's first bytes claim, by its magic number: "JPEG",
    "PNG", "WebP", "TIFF", "GIF", "PNM", "BMP" or "icon" (TGA and headerless
    DIBs have none), or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == PNG_SIGNATURE:
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in TIFF_HEADS:
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"f", b"F"):
        return "PNM"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"\x00\x00\x01\x00":
        return "icon"
    return None


def too_costly(head: bytes, f: BinaryIO, whole: bool = False) -> str | None:
    """Why opening ``f`` (whose first bytes are ``head``) would take
    minutes or gigabytes, or None; with ``whole``, why decoding it would
    (a JPEG's scans are walked to its end, not only its header). A file
    whose headers cannot be followed is left to the decoder, which says
    what is wrong with it."""
    kind = claimed_format(head)
    if kind == "JPEG":
        return count_scans(f, header_only=not whole).too_costly()
    if kind == "PNG":
        return png_too_costly(f)
    if kind == "WebP":
        stat = os.fstat(f.fileno())
        if stat.st_size > MAX_WEBP and (
            on_disk(f, stat) < stat.st_size // 2 or stat.st_size > 4 * MAX_WEBP
        ):
            return f"a WebP of {stat.st_size >> 20} MB, mostly holes or too large {_SLOW}"
        return None
    if kind == "TIFF":
        return _tiff(head, f)
    if kind == "GIF":
        return _gif(f)
    if kind == "PNM":
        return _ppm(f)
    if kind == "BMP":
        return _bmp_header(f, 14) or _bmp_rle(f, 14)
    if kind == "icon":
        return _ico(f)
    if len(head) >= 4 and struct.unpack("<I", head[:4])[0] in DIB_HEADERS:
        return _bmp_rle(f, 0)
    return None


def _tiff(head: bytes, f: BinaryIO) -> str | None:
    """The tag data of the first directory and of its EXIF, GPS and
    interoperability directories, all of which Pillow reads whole. Data a
    file really holds is allowed (Photoshop keeps a layered image's layers
    in one tag of hundreds of MB); what lies in holes is not."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    f.seek(8 if big else 4)
    pointer = f.read(8 if big else 4)
    if len(pointer) < (8 if big else 4):
        return None
    (offset,) = struct.unpack(order + ("Q" if big else "I"), pointer)
    stat = os.fstat(f.fileno())
    total, pending, seen = 0, [offset], set()
    while pending and len(seen) < 8:
        offset = pending.pop()
        if offset in seen or offset >= stat.st_size:  # past the end: the decoder says so
            continue
        seen.add(offset)
        entries = _tiff_directory(f, order, big, offset)
        if entries is None:
            return f"a TIFF directory of more than 65536 entries {_SLOW}"
        for tag, size, value in entries:
            total += size
            if tag in _SUB_DIRECTORIES:
                pending.append(value)
    if total > max(MAX_TIFF_TAGS, on_disk(f, stat)):
        return f"a TIFF whose tags claim {total >> 20} MB, more than the file holds {_SLOW}"
    return None


def on_disk(f: BinaryIO, stat: os.stat_result) -> int:
    """Bytes a file really holds: its size less its holes. The holes are
    found with SEEK_HOLE and SEEK_DATA, so a file that a compressing
    filesystem (ZFS, btrfs) stores in fewer blocks than its size is not
    mistaken for one of holes; past :data:`MAX_SEGMENTS` holes, or where the
    system cannot say, the blocks allocated (``st_blocks``) tell instead."""
    blocks = getattr(stat, "st_blocks", None)
    allocated = stat.st_size if blocks is None else min(stat.st_size, blocks * 512)
    if allocated >= stat.st_size:
        return stat.st_size
    fd, holes, pos = f.fileno(), 0, 0
    where = os.lseek(fd, 0, os.SEEK_CUR)  # put back after: the reader buffers above it
    try:
        for _ in range(MAX_SEGMENTS):
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= stat.st_size:
                return stat.st_size - holes
            try:
                pos = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # no data after it: a hole to the end
                return stat.st_size - holes - (stat.st_size - hole)
            holes += pos - hole
    except (OSError, AttributeError):  # SEEK_HOLE unknown here
        pass
    finally:
        os.lseek(fd, where, os.SEEK_SET)
    return allocated


def _tiff_directory(
    f: BinaryIO, order: str, big: bool, offset: int
) -> list[tuple[int, int, int]] | None:
    """(tag, bytes of data beyond the entry, value or offset) of each entry
    of the directory at ``offset``; None for more entries than any real
    directory has (tags are 16-bit numbers, each once)."""
    f.seek(offset)
    count_bytes = f.read(8 if big else 2)
    if len(count_bytes) < (8 if big else 2):
        return []
    (count,) = struct.unpack(order + ("Q" if big else "H"), count_bytes)
    if count > 65536:
        return None
    entry, inline = (20, 8) if big else (12, 4)
    raw = f.read(count * entry)
    out = []
    for i in range(len(raw) // entry):
        tag, kind, n, value = struct.unpack(
            order + ("HHQQ" if big else "HHII"), raw[i * entry : (i + 1) * entry]
        )
        size = _TIFF_TYPE_SIZES.get(kind, 1) * n
        out.append((tag, size if size > inline else 0, value))
    return out


def _gif(f: BinaryIO) -> str | None:
    f.seek(10)
    flags = f.read(1)
    if not flags:
        return None
    pos = 13 + (3 << ((flags[0] & 7) + 1) if flags[0] & 0x80 else 0)
    stray = blocks = 0
    while True:
        f.seek(pos)
        kind = f.read(1)
        if not kind or kind == b";":
            return None
        if kind == b"!":
            pos += 2  # the label
        elif kind == b",":
            f.seek(pos + 9)
            local = f.read(1)
            if not local:
                return None
            pos += 10 + (3 << ((local[0] & 7) + 1) if local[0] & 0x80 else 0) + 1  # + LZW size
        else:  # Pillow steps over stray bytes one at a time: find the next block
            skipped = _skip_to_block(f, pos)
            if skipped is None:
                return None
            stray += skipped
            if stray > MAX_STRAY:
                return f"a GIF of megabytes of stray bytes between its blocks {_SLOW}"
            pos += skipped
            continue
        while True:  # the block's sub-blocks, to an empty one
            f.seek(pos)
            size = f.read(1)
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                return f"a GIF of more than {MAX_GIF_BLOCKS} data blocks {_SLOW}"
            if not size:
                return None
            pos += 1 + size[0]
            if not size[0]:
                break


def _skip_to_block(f: BinaryIO, pos: int) -> int | None:
    """Bytes from ``pos`` to the next block's first byte (at most a little
    past :data:`MAX_STRAY`), or None at the end of the file."""
    skipped = 0
    while skipped <= MAX_STRAY:
        f.seek(pos + skipped)
        chunk = f.read(1 << 16)
        if not chunk:
            return None
        found = _GIF_BLOCK_START.search(chunk)
        if found is not None:
            return skipped + found.start()
        skipped += len(chunk)
    return skipped


def _ppm(f: BinaryIO) -> str | None:
    """The header's tokens (magic number, width, height and, but for
    bitmaps, the maximum or scale) must end within the first
    :data:`MAX_STRAY` bytes: Pillow reads a comment one byte at a time. A
    plain (text) PNM's pixels must be on disk: Pillow looks for the end of a
    comment among them through any hole, a megabyte at a time."""
    f.seek(0)
    header = f.read(MAX_STRAY)
    stat = os.fstat(f.fileno())
    plain = header[:2] in (b"P1", b"P2", b"P3") and stat.st_size > MAX_HOLES
    if plain and on_disk(f, stat) < stat.st_size // 2:
        size = round(stat.st_size / (1 << 20))
        return f"a plain-text PNM of {size} MB, mostly holes {_SLOW}"
    if len(header) < MAX_STRAY:
        return None
    needed = 3 if header[:2] in (b"P1", b"P4") else 4
    values = 0
    for token in re.finditer(rb"#[^\r\n]*|[^\s#]+", header):
        if not token.group().startswith(b"#"):
            values += 1
            if values == needed and token.end() < len(header):
                return None
    return f"a PPM whose header runs past {MAX_STRAY >> 20} MB {_SLOW}"


def _bmp_header(f: BinaryIO, at: int) -> str | None:
    f.seek(at)
    raw = f.read(4)
    if len(raw) == 4 and struct.unpack("<I", raw)[0] > MAX_BMP_HEADER:
        return f"a BMP header of {struct.unpack('<I', raw)[0]} bytes {_SLOW}"
    return None


def _bmp_rle(f: BinaryIO, at: int) -> str | None:
    """Pillow decodes run-length BMPs in Python, two bytes a loop, and goes
    on through data that adds no pixels: the data after the header at
    ``at`` (a BMP's, a headerless DIB's or an icon's) may be at most what
    the image could need (two bytes a pixel and four a row, as absolute
    runs). An OS/2 header (12 bytes) has no compression field."""
    f.seek(at)
    raw = f.read(20)
    if len(raw) < 20 or struct.unpack("<I", raw[:4])[0] == 12:
        return None
    width, height, _, _, compression = struct.unpack("<iiHHI", raw[4:])
    if compression not in (1, 2):
        return None
    needed = 2 * abs(width * height) + 4 * abs(height) + (1 << 20)
    stat = os.fstat(f.fileno())
    data = stat.st_size - at
    if data > needed:
        return f"a run-length BMP of more data than its pixels can need {_SLOW}"
    # A hole reads as zeros, which the decoder steps through two at a time
    # as line ends that add no pixel: run-length data must be on disk.
    if data > MAX_HOLES and on_disk(f, stat) < data // 2:
        return f"a run-length BMP of {round(data / (1 << 20))} MB, mostly holes {_SLOW}"
    return None


def _ico(f: BinaryIO) -> str | None:
    """The entries of the icon's largest size, one of which Pillow decodes
    (whatever their place in the directory): each PNG's chunks, each BMP's
    header and run-length data."""
    f.seek(4)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    (count,) = struct.unpack("<H", raw)
    directory = f.read(16 * count)
    entries = [directory[i * 16 : i * 16 + 16] for i in range(len(directory) // 16)]
    if not entries:
        return None

    def area(entry: bytes) -> int:
        return (entry[0] or 256) * (entry[1] or 256)  # (0 is 256, as in Pillow)

    largest = max(area(e) for e in entries)
    offsets = {struct.unpack("<I", e[12:16])[0] for e in entries if area(e) == largest}
    if len(offsets) > MAX_ICO_ENTRIES:
        return f"an icon of more than {MAX_ICO_ENTRIES} images of one size {_SLOW}"
    chunks = MAX_CHUNKS  # shared by the PNGs: two may walk into one chain of chunks
    for offset in sorted(offsets):
        f.seek(offset)
        if f.read(8) == PNG_SIGNATURE:
            reason, walked = png_walk(f, offset, chunks)
            chunks -= walked
            if chunks <= 0:
                return f"an icon whose PNGs hold more than {MAX_CHUNKS} chunks {_SLOW}"
        else:
            reason = _bmp_header(f, offset) or _bmp_rle(f, offset)
        if reason:
            return re.sub(r"^an? ((run-length )?(PNG|BMP))", r"an icon's \1", reason)
    return None
