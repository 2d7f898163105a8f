"""Atomic file writing: a reader sees the old file or the whole new one, never
half of one, whatever happens to the writer (crash, Ctrl-C, SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from styler.errors import OutputError


def _read_umask() -> int:
    """The process umask, read without changing it (Linux), else the usual 022."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


#: Permissions of new files: what open() would give (mkstemp makes them 0600).
FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``
    (after fsync), on any error it is removed. The temporary name starts with
    a dot, holds the writer's process id and ends in ``.part``, so that it is
    never mistaken for a result and a later run can remove what a killed
    writer left (:func:`remove_stale_parts`). A failed write (disk full,
    read-only folder, ...) raises :class:`OutputError` naming ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{_shortened(path.name)}.{os.getpid()}.", suffix=".part", dir=path.parent
        )
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Longest file name most file systems take (bytes), and what the temporary
#: name adds to the target's: a dot, the pid, mkstemp's 8 characters, dots, ".part".
NAME_MAX = 255
_TEMP_EXTRA = 1 + 1 + 10 + 1 + 8 + len(".part")


def _shortened(name: str) -> str:
    """``name`` cut so that the temporary name built from it stays within
    NAME_MAX bytes (a target of 250 bytes is valid; its temporary name must
    be too)."""
    limit = NAME_MAX - _TEMP_EXTRA
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove temporary files that writers killed mid-write (SIGKILL, power
    loss) left in ``folder``; files of writers still running are kept."""
    removed = []
    try:
        entries = list(folder.glob(".*.part"))
    except OSError:
        return removed
    for part in entries:
        fields = part.name.rsplit(".", 3)  # ".name", pid, random, "part"
        if len(fields) != 4 or not fields[1].isdigit():
            continue
        if int(fields[1]) != os.getpid() and not _alive(int(fields[1])):
            try:
                part.unlink()
                removed.append(part)
            except OSError:
                pass
    return removed
