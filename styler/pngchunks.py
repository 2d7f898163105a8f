"""How much a PNG asks Pillow to read before its pixels, from its chunk
headers alone.

Pillow reads every chunk before the first IDAT whole into memory as it
opens a PNG (an unknown ancillary chunk too). A file of 20 KB on disk can
hold chunks of gigabytes as holes: four of 1 GiB took 72 s and 5.3 GB. The
chunks are walked by their lengths, nothing read but their headers.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

#: Most bytes of chunks before the first IDAT (a colour profile, EXIF and
#: XMP text hold at most a few MB).
MAX_BEFORE_PIXELS = 64 << 20
#: Most chunks before the first IDAT.
MAX_CHUNKS = 65536


def too_costly(f: BinaryIO) -> str | None:
    """Why opening the PNG in ``f`` would read too much, or None. A file
    the walk cannot follow is left to the decoder, which says what is wrong."""
    pos, total = 8, 0  # after the signature
    for _ in range(MAX_CHUNKS):
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        if kind in (b"IDAT", b"IEND"):
            return None
        total += length
        if total > MAX_BEFORE_PIXELS:
            return (
                f"a PNG of more than {MAX_BEFORE_PIXELS >> 20} MB of chunks before its "
                "pixels (made to be slow to read)"
            )
        pos += 12 + length  # length, type, data, CRC
    return f"a PNG of more than {MAX_CHUNKS} chunks before its pixels (made to be slow to read)"
