"""Atomic file writing: a reader sees the old file or the whole new one, never
half of one, whatever happens to the writer (crash, Ctrl-C, SIGKILL)."""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (the process ids alone tell)
    fcntl = None  # type: ignore[assignment]

from styler.errors import OutputError, OutputExistsError, StylerError, UsageError
from styler.log import logger

#: What :func:`path_kind` finds at a path.
Kind = Literal["file", "dir", "other"]
#: The errors of a path that leads nowhere: nothing is there (pathlib's
#: ``exists()`` says False for these and raises for any other).
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR})


def path_kind(path: str | Path, error: type[StylerError] = UsageError) -> Kind | None:
    """What ``path`` is (symlinks followed): a regular file, a folder, something
    else (a pipe, a device), or None when nothing is there. A path that cannot
    be checked (a name too long, a folder without permission, a symlink loop)
    raises ``error`` naming it and the OS's reason, where pathlib's
    ``exists()``, ``is_dir()`` and ``is_file()`` raise a bare OSError."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise error(f"cannot read: {exc.strerror or exc}", path) from None
    except ValueError:  # a NUL in the name
        raise error("not a valid file name (it holds a NUL byte)", path) from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def resolved(path: str | Path, error: type[StylerError] = UsageError) -> Path:
    """``Path(path).resolve()``, a symbolic link loop raising ``error`` naming
    it (Python 3.11's pathlib raises a bare RuntimeError for one)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise error(f"cannot read: {os.strerror(errno.ELOOP)}", path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", path) from None


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


#: Temporary files are named ``.styler-<pid>-<token>.part``: a fixed prefix, the
#: writer's process id and mkstemp's random token. Only names of exactly this
#: shape are ever removed (:func:`remove_stale_parts`), so a user's own
#: ``.notes.2024.01.part`` is never touched; the name does not grow with the
#: target's, so a target of 255 bytes still has a valid temporary name.
TEMP_PREFIX = ".styler-"
TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"\.styler-([0-9]{1,10})-([a-z0-9_]{8})\.part")
#: A writer locks its temporary file an instant after making it: one that
#: nobody holds is taken for a killed writer's once it is this old (seconds).
WRITER_GRACE = 1.0
#: How long a writer waits for the lock of its new temporary file (seconds).
LOCK_WAIT = 2.0
#: Largest process id Linux gives (``pid_max`` is at most 2**22): a name
#: with a larger one was not written by styler, and is kept.
PID_MAX = 2**22


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Move the finished ``tmp`` to ``path``. Without ``replace``, never over
    a file that is there: a hard link is made (which fails if ``path``
    exists, atomically), then ``tmp`` removed; on a file system without hard
    links, ``path`` is checked just before the rename. A file there with the
    very bytes written is this write, done already."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        _taken(tmp, path)
    except OSError:  # no hard links here (FAT, some network file systems)
        if os.path.lexists(path):
            _taken(tmp, path)
        else:
            os.replace(tmp, path)
            return
    tmp.unlink()


def _taken(tmp: Path, path: Path) -> None:
    """``path`` exists: the very bytes written are this write done already
    (a retry whose first attempt was cut short after publishing: a Ray
    worker's block run again); anything else is someone else's file, kept."""
    try:
        same = filecmp.cmp(tmp, path, shallow=False)
    except OSError:
        same = False
    if not same:
        raise OutputExistsError("appeared while styler wrote it: kept as it is", path)


@contextlib.contextmanager
def atomic_path(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it takes the place
    of ``path`` (after fsync), on any error it is removed. The temporary name
    (``.styler-<pid>-<token>.part``) is hidden, never mistaken for a result,
    and a later run can remove what a killed writer left
    (:func:`remove_stale_parts`). A failed write (disk full, read-only
    folder, a name too long, ...) raises :class:`OutputError` naming ``path``.
    With ``replace`` False, a file that is at ``path`` when the write ends
    (one that appeared after the caller looked) is kept, and
    :class:`OutputExistsError` raised."""
    try:
        if path_kind(path.parent, OutputError) not in (None, "dir"):
            raise OutputError(f"{path.parent} is not a folder", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The folder as the kernel found it: `link/../out` is beside the link's
        # target (tempfile names its file with `..` taken as text).
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{os.getpid()}-",
            suffix=TEMP_SUFFIX,
            dir=os.path.realpath(path.parent),
        )
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None
    tmp = Path(tmp_name)
    try:
        _hold(fd)  # (until the end: the mark of a live writer, whatever its process id)
        os.chmod(tmp, FILE_MODE)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _publish(tmp, path, replace)
    except OutputExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _hold(fd: int) -> None:
    """Lock a temporary file for as long as its writer works on it (flock:
    the system lets go when the writer ends, however it ends). It waits: a
    check by another command (:func:`_held`) holds the lock for an instant,
    and a writer that gave up then would write unlocked; but not for long
    (:data:`LOCK_WAIT`), so that a stop is never held up by whoever holds
    it (the write then goes on unlocked, judged by its process id)."""
    if fcntl is None:
        return
    waited = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if waited >= LOCK_WAIT:
                logger.debug("a temporary file's lock is held elsewhere: writing unlocked")
                return
            time.sleep(0.005)
            waited += 0.005
        except OSError:
            return


def _held(path: str | os.PathLike[str]) -> bool | None:
    """Whether a writer holds the lock of the file at ``path`` (None: cannot tell)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (``replace`` as for :func:`atomic_path`)."""
    with atomic_path(path, replace) as tmp:
        tmp.write_bytes(data)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_writer(name: str) -> int | None:
    """The process id in a temporary name of styler's, or None when ``name``
    is not one (only these are ever removed)."""
    match = _TEMP_NAME.fullmatch(name)
    if match is None or not 0 < int(match.group(1)) <= PID_MAX:
        return None
    return int(match.group(1))


def dead_writer(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a temporary file of styler's whose writer is gone
    (killed mid-write). A writer holds a lock on its file while it works
    (:func:`atomic_path`), which the system drops when the writer ends, in
    whatever container or process-id namespace it ran: a file nobody holds
    that is older than :data:`WRITER_GRACE` is dead. Beside that, and where
    locks cannot tell, its process id: dead when no process of that id runs,
    or when the one that does (this one, or another) started after the file
    was last written (its id was given again: a container's processes have
    the same ids every start; ids come round again after a reboot)."""
    pid = stale_writer(os.path.basename(path))
    if pid is None:
        return False
    try:
        written_ago = time.time() - os.lstat(path).st_mtime
    except OSError:
        return False
    held = _held(path)
    if held:
        return False
    if held is False and pid != os.getpid() and written_ago > WRITER_GRACE:
        return True  # (this process's own are told by its start: NFS's locks are per process)
    if pid != os.getpid() and not process_alive(pid):
        return True
    running_for = _running_for(pid)
    # (the start time is counted in clock ticks, rounded down: the process
    # looks older than it is, so a file said to be older still was written
    # before it started)
    return running_for is not None and written_ago > running_for + 0.005


def _running_for(pid: int) -> float | None:
    """Seconds since process ``pid`` started (Linux's /proc), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        ticks = int(fields[19])  # (field 22, starttime: clock ticks after boot)
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def live_writers(folder: Path) -> list[int]:
    """The ids of the processes still writing a temporary file of styler's
    in ``folder`` (this one included)."""
    try:
        with os.scandir(folder) as entries:
            paths = [entry.path for entry in entries]
    except OSError:
        return []
    pids = {stale_writer(os.path.basename(p)) for p in paths if not dead_writer(p)}
    return sorted(pid for pid in pids if pid is not None)


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove temporary files that styler writers killed mid-write (SIGKILL,
    power loss) left in ``folder``; files of writers still running, and every
    file whose name is not exactly styler's temporary name, are kept."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not dead_writer(entry.path):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def check_output_folder(folder: Path) -> None:
    """Refuse at once (a :class:`UsageError`, before any work) an output folder
    that cannot be created or written to: every output would fail."""
    if path_kind(folder) not in (None, "dir"):
        raise UsageError("the output folder is a file", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the output folder: {exc.strerror or exc}", folder
        ) from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write in the output folder: {exc.strerror or exc}", folder
        ) from None


#: Said of an output path that exists as something else than a file: styler
#: never takes it for an earlier result, nor puts a file in its place.
NOT_A_FILE = "exists and is not a file (a folder, named pipe, device or socket): left alone"


def check_new_output(source: Path | Sequence[Path], output: Path, overwrite: bool) -> None:
    """Refuse to write ``output`` when it exists (unless ``overwrite``), is
    one of the command's inputs, ``source`` (even with ``overwrite``: the
    input would be lost), or is not a file (a folder, a named pipe, a device:
    the atomic rename would put a file in its place)."""
    sources = [source] if isinstance(source, Path) else list(source)
    kind = path_kind(output)
    exists = kind is not None or os.path.islink(output)  # a dangling link is a file there
    for src in sources:
        try:
            same = exists and os.path.samefile(src, output)
        except OSError:
            same = False
        if same:
            raise UsageError(f"the output is the input {src}; choose another --output", output)
    if kind in ("dir", "other"):  # replacing /dev/null or a pipe is never what was meant
        raise UsageError(f"{NOT_A_FILE}; choose another --output", output)
    for folder in Path(output).parents:  # the nearest that exists must be a folder
        if os.path.lexists(folder):
            if path_kind(folder) != "dir":
                raise UsageError(f"{folder} is not a folder; choose another --output", output)
            break
    if exists and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")


def is_missing(path: str | Path) -> bool:
    """Whether nothing is at ``path`` (a name too long, a folder without
    permission: not known to be missing, said later as what it is)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def folders_to_make(folder: Path) -> list[Path]:
    """The folders making ``folder`` (``mkdir -p``) makes, deepest first, by
    where they are: every prefix of the path as written (``new/../photos``
    makes ``new``, and ``photos`` when missing), resolved; a folder there
    before is never among them."""
    prefixes = [Path(*folder.parts[:n]) for n in range(1, len(folder.parts) + 1)]
    places = {Path(os.path.realpath(p)) for p in prefixes}
    return sorted((p for p in places if is_missing(p)), key=lambda p: -len(p.parts))


def remove_made(made: list[Path]) -> None:
    """Remove the folders of ``made`` (:func:`folders_to_make`'s, deepest
    first) that are empty, with the empty subfolders failed writes left in
    them (a folder a command made holds only what it made). One that is
    now a link (swapped in meanwhile) is no folder it made: left, and what
    it leads to too."""
    for folder in made:
        if os.path.islink(folder):
            continue
        for root, _, _ in os.walk(folder, topdown=False):  # (links inside are not followed)
            with contextlib.suppress(OSError):
                os.rmdir(root)
