"""How much a PNG asks Pillow to read besides its pixels, from its chunk
headers alone.

Pillow reads every chunk but IDAT whole into memory, before the pixels as
it opens a PNG and after them as it finishes (an unknown ancillary chunk
too), and steps through the chunks one Python loop at a time. A file of 20
KB on disk can hold chunks of gigabytes as holes: four of 1 GiB took 72 s
and 5.3 GB; two million empty chunks, 7 s. The chunks are walked by their
lengths to the end, nothing read but their headers.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Most bytes of chunks other than the pixels' (a colour profile, EXIF and
#: XMP text hold at most a few MB).
MAX_BESIDES_PIXELS = 64 << 20
#: Most chunks (the pixels of a 2 GB PNG in chunks of 8 KB, as libpng
#: writes them, are 262,144).
MAX_CHUNKS = 262_144


def too_costly(f: BinaryIO, start: int = 0) -> str | None:
    """Why opening the PNG in ``f`` (at ``start``) would read too much, or
    None. A file the walk cannot follow is left to the decoder, which says
    what is wrong with it."""
    return walk(f, start)[0]


def walk(f: BinaryIO, start: int = 0, max_chunks: int = MAX_CHUNKS) -> tuple[str | None, int]:
    """:func:`too_costly`'s reason, walking at most ``max_chunks`` chunks,
    and how many it walked (an icon's PNGs share one allowance)."""
    pos, total = start + len(PNG_SIGNATURE), 0
    for walked in range(max_chunks):
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return None, walked
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND" or not kind.isalpha():  # the end, or damage the decoder names
            return None, walked
        if kind != b"IDAT":
            total += length
            if total > MAX_BESIDES_PIXELS:
                return (
                    f"a PNG of more than {MAX_BESIDES_PIXELS >> 20} MB of chunks besides its "
                    "pixels (made to be slow to read)"
                ), walked
        pos += 12 + length  # length, type, data, CRC
    return f"a PNG of more than {MAX_CHUNKS} chunks (made to be slow to read)", max_chunks
