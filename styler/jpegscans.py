"""How much work a JPEG's scans ask of the decoder, read from its markers
before any pixel is decoded.

Each scan of a progressive JPEG is decoded over the whole image, so a small
file of thousands of empty scans, or a few hundred over a very large image,
takes minutes (libjpeg-turbo's many-scans problem). Encoders write about 10
scans (libjpeg's progressive script: 10 in colour, 6 in grey). The file's
markers are walked as the decoder walks them: each segment skipped by its
length (bytes inside an APPn segment are not markers), each scan's
entropy-coded data skipped to the next marker, and the walk stops at the
first end-of-image marker (what a phone's "motion photo" or a second frame
appends after it is never decoded).
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

#: Most scans any JPEG may hold.
MAX_SCANS = 256
#: Scans any JPEG may hold, whatever its size (a real one holds about 10).
FREE_SCANS = 32
#: Most scans x pixels: the decoding work a JPEG may ask beyond
#: :data:`FREE_SCANS` (about 10 s of empty scans on a 2-core AMD EPYC:
#: 168 megapixels x 246 scans took 97 s).
MAX_SCAN_PIXELS = 4_000_000_000

#: Start-of-frame markers (their segment gives the image's size): C0-CF
#: but DHT (C4), JPG (C8) and DAC (CC).
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _EOI = 0xDA, 0xD9
#: Markers without a length: TEM and the restart markers RST0-7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: The next marker: the last 0xFF of a run (fill) and a byte that is not
#: a stuffed 0x00. The decoder skips stray bytes before it, and so does this.
_MARKER = re.compile(rb"\xff[^\x00\xff]")
#: The next marker after entropy-coded data, where restart markers are part
#: of the scan.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Most markers outside entropy-coded data a JPEG may hold (a real one has
#: a few dozen; a file of millions of empty markers is made to be slow).
MAX_MARKERS = 65536


@dataclass(frozen=True)
class ScanCount:
    scans: int
    #: Width x height from the first start-of-frame (0 if none was read).
    pixels: int
    #: The walk stopped early: more than :data:`MAX_SCANS`.
    more: bool = False
    #: The walk stopped early: more than :data:`MAX_MARKERS` markers.
    markers: bool = False

    def too_costly(self) -> str | None:
        """Why decoding would take minutes, or None."""
        if self.markers:
            return f"a JPEG of more than {MAX_MARKERS} markers (made to be slow to read)"
        if self.more:
            return f"a JPEG of more than {MAX_SCANS} scans (made to take minutes to decode)"
        if self.scans > FREE_SCANS and self.scans * self.pixels > MAX_SCAN_PIXELS:
            megapixels = self.pixels / 1e6
            return (
                f"a JPEG of {self.scans} scans over {megapixels:.0f} megapixels "
                "(made to take minutes to decode)"
            )
        return None


def count_scans(f: BinaryIO) -> ScanCount:
    """The scans of the first image in ``f`` (a regular file holding a
    JPEG), counted up to :data:`MAX_SCANS` + 1. A file the walk cannot
    follow (truncated, bad lengths) is counted as far as it goes: the
    decoder then says what is wrong with it."""
    try:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # an empty file
        return ScanCount(0, 0)
    with view:
        return _walk(view)


def _walk(data: mmap.mmap) -> ScanCount:
    n, pos, scans, pixels = len(data), 2, 0, 0
    for _ in range(MAX_MARKERS):
        found = _MARKER.search(data, pos)
        if found is None:
            return ScanCount(scans, pixels)
        marker, pos = data[found.start() + 1], found.end()
        if marker == _EOI:
            return ScanCount(scans, pixels)
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            return ScanCount(scans, pixels)
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            return ScanCount(scans, pixels)
        if marker in _FRAMES and not pixels and length >= 7:
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            pixels = height * width
        pos += length
        if marker == _SOS:
            scans += 1
            if scans > MAX_SCANS:
                return ScanCount(scans, pixels, more=True)
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return ScanCount(scans, pixels)
            pos = found.start()
    return ScanCount(scans, pixels, markers=True)
