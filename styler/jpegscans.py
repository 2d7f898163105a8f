"""How much work a JPEG's scans ask of the decoder, read from its markers
before any pixel is decoded.

Each scan of a progressive JPEG is decoded over the whole image, so a small
file of thousands of empty scans, or a few hundred over a very large image,
takes minutes (libjpeg-turbo's many-scans problem). Encoders write about 10
scans (libjpeg's progressive script: 10 in colour, 6 in grey). The file's
markers are walked as the decoder walks them: each segment skipped by its
length (bytes inside an APPn segment are not markers), stray bytes between
segments skipped, each scan's entropy-coded data skipped to the next marker,
and the walk stops at the first end-of-image marker (what a phone's "motion
photo" or a second frame appends after it is never decoded).

The file is read in chunks (never mapped: a file cut short while it is read
would kill the process), and no further than :func:`byte_limit` of its
frame: a scan's data runs to the next marker, and one that runs on past
what any image of its size holds (a download cut short and padded, or a
file made to be slow) is refused, not read to its end, unless the decoder
already has all it reads (a sequential scan of every component). A
megabyte of 0xFF fill is refused wherever it stands (Pillow would take
minutes over a few hundred).
"""

from __future__ import annotations

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
#: Most markers outside entropy-coded data a JPEG may hold (a real one has
#: a few dozen; a file of millions of empty markers is made to be slow).
MAX_MARKERS = 65536
#: Bytes of image data (from the first scan) a JPEG may hold before its
#: end, per pixel of its frame (a photo at quality 100 holds 1-3), and at
#: least :data:`MIN_BYTES`.
BYTES_PER_PIXEL = 16
MIN_BYTES = 64 << 20
#: Most bytes before the first scan (segments of metadata: Photoshop's
#: extended XMP reaches tens of MB), and of them, most stray bytes between
#: segments, which Pillow's header parser reads one at a time (80 ns each).
MAX_HEADER = 256 << 20
MAX_STRAY = 1 << 20
_STRAY = "a JPEG of megabytes of stray bytes between its segments (made to be slow to read)"
#: A run of 0xFF fill that no encoder writes.
_FILL = b"\xff" * 4096

#: Start-of-frame markers (their segment gives the image's size): C0-CF
#: but DHT (C4), JPG (C8) and DAC (CC); of them, the progressive ones.
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOS, _EOI = 0xDA, 0xD9
#: Markers without a length: TEM and the restart markers RST0-7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: The next marker: the last 0xFF of a run (fill) and a byte that is not
#: a stuffed 0x00. The decoder skips stray bytes before it, and so does this.
_MARKER = re.compile(rb"\xff[^\x00\xff]")
#: The next marker after entropy-coded data, where restart markers are part
#: of the scan.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Bytes read at a time: a search of one chunk holds Python's lock for
#: milliseconds, so a Ctrl-C is answered at once.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ScanCount:
    scans: int
    #: Width x height from the first start-of-frame (0 if none was read).
    pixels: int
    #: Why the walk stopped early (too many scans or markers, too much
    #: data), or None.
    refusal: str | None = None

    def too_costly(self) -> str | None:
        """Why decoding would take minutes, or None."""
        if self.refusal:
            return self.refusal
        if self.scans > FREE_SCANS and self.scans * self.pixels > MAX_SCAN_PIXELS:
            megapixels = self.pixels / 1e6
            return (
                f"a JPEG of {self.scans} scans over {megapixels:.0f} megapixels "
                "(made to take minutes to decode)"
            )
        return None


def byte_limit(pixels: int) -> int:
    """Bytes walked at most in a JPEG whose frame has ``pixels``."""
    return max(MIN_BYTES, BYTES_PER_PIXEL * pixels)


class _TooLong(Exception):
    """The walk would read past its byte limit."""


class _Fill(Exception):
    """A run of 0xFF fill: Pillow reads a JPEG's fill in time that grows
    with its square (32 MB: 10 s; 200 MB: minutes), and so it does fill
    broken by a stuffed zero now and then. Encoders write none."""


class _Stray(Exception):
    """More than :data:`MAX_STRAY` stray bytes between header segments."""


class _Chunks:
    """A file read forwards in chunks, never past ``limit`` bytes."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.limit = MAX_HEADER

    def read(self, pos: int, n: int) -> bytes:
        if pos + n > self.limit or pos >= self.limit:
            raise _TooLong
        self.f.seek(pos)
        return self.f.read(n)

    def find(
        self, pattern: re.Pattern[bytes], pos: int, within: int | None = None
    ) -> tuple[int, int] | None:
        """Where a two-byte ``pattern`` first matches at ``pos`` or after,
        and its second byte (the marker); None at the end of the file. With
        ``within``, :class:`_Stray` after that many bytes without a match."""
        start = pos
        while True:
            if within is not None and pos - start > within:
                raise _Stray
            chunk = self.read(pos, min(_CHUNK + 1, self.limit - pos))
            found = pattern.search(chunk)
            # Fill counts only where the decoder reads: up to the marker found.
            if _FILL in (chunk if found is None else chunk[: found.start() + 1]):
                raise _Fill
            if found is not None:
                return pos + found.start(), chunk[found.start() + 1]
            if len(chunk) <= _CHUNK:
                if pos + len(chunk) >= self.limit:
                    raise _TooLong
                return None
            pos += _CHUNK


def count_scans(f: BinaryIO, header_only: bool = False) -> ScanCount:
    """The scans of the first image in ``f`` (a file holding a JPEG),
    counted up to :data:`MAX_SCANS` + 1; with ``header_only``, the walk
    stops at the first scan (what Pillow reads to open the file). A file
    the walk cannot follow (truncated, bad lengths) is counted as far as
    it goes: the decoder then says what is wrong with it."""
    chunks = _Chunks(f)
    scans, pixels, components, progressive = 0, 0, 0, False
    complete = False  # a sequential scan of every component read: all the decoder needs
    pos, stray = 2, 0  # after the start-of-image marker
    try:
        for _ in range(MAX_MARKERS):
            # Pillow's header parser reads stray bytes one at a time.
            found = chunks.find(_MARKER, pos, None if scans else MAX_STRAY - stray)
            if found is None or found[1] == _EOI:
                return ScanCount(scans, pixels)
            if not scans:
                stray += found[0] - pos
                if stray > MAX_STRAY:
                    raise _Stray
            pos, marker = found[0] + 2, found[1]
            if marker in _STANDALONE:
                continue
            head = chunks.read(pos, 8)
            if len(head) < 2 or (length := struct.unpack(">H", head[:2])[0]) < 2:
                return ScanCount(scans, pixels)
            if marker in _FRAMES and not pixels and len(head) == 8:
                height, width = struct.unpack(">HH", head[3:7])
                pixels, components = height * width, head[7]
                progressive = marker in _PROGRESSIVE
            pos += length
            if marker == _SOS:
                if header_only:
                    return ScanCount(1, pixels)
                if not scans:  # the image's data starts: its own limit
                    chunks.limit = pos + byte_limit(pixels)
                scans += 1
                if scans > MAX_SCANS:
                    return ScanCount(scans, pixels, f"a JPEG of more than {MAX_SCANS} scans"
                                     " (made to take minutes to decode)")  # fmt: skip
                complete |= not progressive and len(head) > 2 and head[2] >= components
                found = chunks.find(_NEXT_MARKER, pos)
                if found is None:
                    return ScanCount(scans, pixels)
                pos = found[0]
        return ScanCount(scans, pixels, f"a JPEG of more than {MAX_MARKERS} markers"
                         " (made to be slow to read)")  # fmt: skip
    except _Stray:
        return ScanCount(scans, pixels, _STRAY)
    except _Fill:
        return ScanCount(scans, pixels, "a JPEG holding a run of 0xFF fill"
                         " (damaged, and slow to read)")  # fmt: skip
    except _TooLong:
        if complete:  # the rest is never read
            return ScanCount(scans, pixels)
        if not scans:
            return ScanCount(scans, pixels, f"a JPEG of more than {MAX_HEADER >> 20} MB"
                             " before its image data (made to be slow to read)")  # fmt: skip
        megabytes = byte_limit(pixels) / (1 << 20)
        return ScanCount(scans, pixels, f"a JPEG whose data runs on past {megabytes:.0f} MB"
                         " without an end (damaged, or made to be slow to read)")  # fmt: skip
