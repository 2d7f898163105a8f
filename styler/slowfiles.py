"""Files made to be slow to open, told from their headers before Pillow
reads them.

Pillow parses the headers of WebP, TIFF, GIF, PPM, BMP and ICO files in
Python, and some of that work grows with what the file claims, not with its
image: it reads a WebP whole, every TIFF tag's data whole, a BMP's header
of any claimed size, and steps over a GIF's or a PPM comment's stray bytes
one at a time. A file of a few KB on disk holding a hole of gigabytes took
minutes and gigabytes of memory to open. Each check reads only headers;
JPEG and PNG have their own modules (:mod:`styler.jpegscans`,
:mod:`styler.pngchunks`).
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

from styler.pngchunks import PNG_SIGNATURE
from styler.pngchunks import too_costly as png_too_costly

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
#: Most ICO entries checked (each is a PNG or a BMP at an offset).
MAX_ICO_ENTRIES = 256

_SLOW = "(made to be slow to read)"
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
_GIF_BLOCK_START = re.compile(rb"[!,;]")


def too_costly(head: bytes, f: BinaryIO) -> str | None:
    """Why opening ``f`` (whose first bytes are ``head``) would take
    minutes or gigabytes, or None. A file whose headers cannot be followed
    is left to the decoder, which says what is wrong with it."""
    if head[:8] == PNG_SIGNATURE:
        return png_too_costly(f)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        if os.fstat(f.fileno()).st_size > MAX_WEBP:
            return f"a WebP of more than {MAX_WEBP >> 20} MB {_SLOW}"
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II\x00*", b"MM*\x00", b"II+\x00", b"MM\x00+"):
        return _tiff(head, f)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(f)
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"f", b"F"):
        return _ppm(f)
    if head[:2] == b"BM":
        return _bmp_header(f, 14)
    if head[:4] == b"\x00\x00\x01\x00":
        return _ico(f)
    return None


def _tiff(head: bytes, f: BinaryIO) -> str | None:
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    f.seek(8 if big else 4)
    pointer = f.read(8 if big else 4)
    if len(pointer) < (8 if big else 4):
        return None
    (offset,) = struct.unpack(order + ("Q" if big else "I"), pointer)
    f.seek(offset)
    count_bytes = f.read(8 if big else 2)
    if len(count_bytes) < (8 if big else 2):
        return None
    (count,) = struct.unpack(order + ("Q" if big else "H"), count_bytes)
    entry, inline = (20, 8) if big else (12, 4)
    entries = f.read(min(count, 65536) * entry)
    total = 0
    for i in range(len(entries) // entry):
        raw = entries[i * entry : (i + 1) * entry]
        _, kind, n = struct.unpack(order + ("HHQ" if big else "HHI"), raw[: 12 if big else 8])
        size = _TIFF_TYPE_SIZES.get(kind, 1) * n
        if size > inline:
            total += size
    if total > MAX_TIFF_TAGS:
        return f"a TIFF whose tags hold more than {MAX_TIFF_TAGS >> 20} MB {_SLOW}"
    return None


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
    :data:`MAX_STRAY` bytes: Pillow reads a comment one byte at a time."""
    f.seek(0)
    header = f.read(MAX_STRAY)
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


def _ico(f: BinaryIO) -> str | None:
    f.seek(4)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    (count,) = struct.unpack("<H", raw)
    directory = f.read(16 * min(count, MAX_ICO_ENTRIES))
    for i in range(len(directory) // 16):
        (offset,) = struct.unpack("<I", directory[i * 16 + 12 : i * 16 + 16])
        f.seek(offset)
        if f.read(8) == PNG_SIGNATURE:
            reason = png_too_costly(f, start=offset)
        else:
            reason = _bmp_header(f, offset)
        if reason:
            return reason.replace("a PNG", "an icon's PNG").replace("a BMP", "an icon's BMP")
    return None
