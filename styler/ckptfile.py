"""What a PyTorch checkpoint file claims, checked before ``torch.load``
reads any of it.

``torch.load`` inflates whatever a zip archive's entries say they hold,
unpickles in pure Python (about 1.6 MB a second with ``weights_only=True``)
and tries every file that is not a zip as a tar archive first, reading the
whole of a tar header's claimed size into memory. A crafted file of a few
KB can therefore cost minutes or gigabytes. :func:`check` refuses such a
file from its headers alone, saying what it claims.
"""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
from pathlib import Path

from styler.errors import BadCheckpointError
from styler.slowfiles import on_disk

#: Most bytes of tensors a checkpoint may claim (the reference code's largest
#: generator, unet_256 at ngf 64, holds 218 MB in fp32).
MAX_CHECKPOINT_BYTES = 1 << 30
#: Most bytes of pickle a zip checkpoint may claim: a generator's state_dict
#: pickles to a few KB (names, shapes, storage keys), its tensors stored
#: beside it; PyTorch's safe unpickler would take minutes over 1 GB.
MAX_PICKLE_BYTES = 16 << 20
#: How many times its size a zip checkpoint may claim to inflate to (plus
#: :data:`MAX_PICKLE_BYTES`): torch.save stores every entry as it is, so a
#: checkpoint claims about its own size; a deflated entry of zeros claims
#: 1,000 times its own (a 1 MB file read into 1 GB).
MAX_INFLATION = 16
#: Compression PyTorch's zip reader (miniz) can read.
_READABLE = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
#: The end-of-archive records: their signatures and the zip64 locator's layout.
_END, _LOCATOR, _LOCATOR_FORMAT = b"PK\x05\x06", b"PK\x06\x07", "<4sIQI"
_END64_SIZE = 56


def check(path: Path) -> None:
    """Refuse ``path`` if reading it would cost far more than it holds, or
    if PyTorch would read other entries than Python's zipfile checks."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            stat = os.fstat(f.fileno())
            real = on_disk(f, stat)
    except OSError:
        return  # torch.load says why it cannot read it
    if head.startswith(b"PK\x03\x04"):  # what PyTorch takes for a zip checkpoint
        _check_zip(path, stat.st_size)
        return
    if len(head) == 512 and _is_tar(head):
        raise BadCheckpointError(
            "a checkpoint in PyTorch's oldest (tar) format, which cannot be read safely "
            "(weights_only=True); load and save it again with a PyTorch you trust",
            path,
        )
    if stat.st_size > MAX_CHECKPOINT_BYTES:
        raise BadCheckpointError(
            f"a {stat.st_size >> 20} MB legacy checkpoint, more than any generator styler "
            f"imports holds (at most {MAX_CHECKPOINT_BYTES >> 20} MB); nothing was loaded",
            path,
        )
    if real < stat.st_size // 2:
        raise BadCheckpointError(
            f"it claims {stat.st_size >> 20} MB but holds {real >> 20} MB (mostly holes); "
            "nothing was loaded",
            path,
        )


def _is_tar(head: bytes) -> bool:
    """Whether the first 512 bytes are a tar header (its checksum right)."""
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except (tarfile.TarError, ValueError):
        return False
    return True


def _check_zip(path: Path, size: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            start = archive.start_dir
        _check_end(path, start)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        # PyTorch's reader is laxer: what it would inflate cannot be known.
        raise BadCheckpointError(f"a damaged zip archive ({exc})", path) from None
    for info in infos:
        if info.compress_type not in _READABLE:
            method = _NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise BadCheckpointError(
                f"its entry {info.filename} is compressed with {method}, which PyTorch's "
                "reader cannot read (a checkpoint is stored or deflated)",
                path,
            )
        # Tensors are stored under <archive>/data/; every other entry (the
        # pickle, the records beside it) is a few KB. PyTorch's reader finds
        # names whatever their case (DATA.PKL is data.pkl).
        if "/data/" not in info.filename.lower() and info.file_size > MAX_PICKLE_BYTES:
            what = "pickle" if info.filename.lower().endswith(".pkl") else f"entry {info.filename}"
            raise BadCheckpointError(
                f"its {what} claims {info.file_size >> 20} MB (a state_dict's pickle is a few "
                f"KB; at most {MAX_PICKLE_BYTES >> 20} MB is read); nothing was loaded",
                path,
            )
    claimed = sum(info.file_size for info in infos)
    if claimed > MAX_CHECKPOINT_BYTES:
        raise BadCheckpointError(
            f"it claims {claimed >> 20} MB of tensors, more than any generator styler imports "
            f"holds (at most {MAX_CHECKPOINT_BYTES >> 20} MB); nothing was loaded",
            path,
        )
    if claimed > MAX_INFLATION * size + MAX_PICKLE_BYTES:
        raise BadCheckpointError(
            f"its entries claim {claimed >> 20} MB in a file of {_megabytes(size)} (torch.save "
            "stores tensors as they are; these would be inflated from far less); nothing was "
            "loaded",
            path,
        )


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB" if size < 10 << 20 else f"{size >> 20} MB"


def _check_end(path: Path, start: int) -> None:
    """Refuse an archive whose end records point elsewhere than where
    Python's zipfile found its central directory: Python allows data before
    an archive and looks just before the end record; PyTorch follows the
    offsets the records give. The two would read different entries."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(_END)
    if at < 0 or len(tail) < at + 22:
        raise zipfile.BadZipFile("no end-of-archive record")
    end = size - len(tail) + at
    recorded = struct.unpack("<I", tail[at + 16 : at + 20])[0]
    locator = tail[at - 20 : at] if at >= 20 else b""
    if locator[:4] == _LOCATOR:
        _, _, end64, _ = struct.unpack(_LOCATOR_FORMAT, locator)
        if end64 != end - 20 - _END64_SIZE:
            raise zipfile.BadZipFile(
                f"its zip64 locator points to {end64}, the record is at {end - 20 - _END64_SIZE}"
            )
        with open(path, "rb") as f:
            f.seek(end64 + 48)
            recorded = struct.unpack("<Q", f.read(8))[0]
    if recorded != start:
        raise zipfile.BadZipFile(
            f"its central directory is at {start} but the end record says {recorded}"
        )
