"""Which files to style and where their outputs go; folders of images.

Inputs are files, directories (walked recursively by default) or paths read
from stdin. Every output lands inside the output folder, whatever the input
names: a directory argument's tree is mirrored below it; a file given by a
relative path keeps that path; anything else keeps its name only.

The same walk lists the folders that ``styler train`` and ``styler eval``
read (:func:`list_images`), and pairs their files by stem
(:func:`pair_by_stem`): ``a/x.png`` goes with ``b/x.jpg``.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

from styler.errors import UsageError
from styler.fsutil import path_kind, resolved
from styler.log import logger

#: Extensions styler treats as images when walking a directory (files named
#: on the command line or on stdin are tried whatever their extension).
#: Not walked, though read when named: ``.mpo`` (3D cameras write each
#: beside a ``.JPG`` of the same picture, whose output it would collide
#: with) and ``.pfm`` (floating-point light levels, not pixel values).
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".gif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
        ".dib",
    ]
)


@dataclass(frozen=True)
class Job:
    """One input image and the output path it maps to (without extension
    decisions: ``output`` keeps the input's stem and gets its final suffix
    from the output format)."""

    input: Path
    #: Path relative to the output folder, without suffix.
    relative: PurePath
    #: Set when the input could not even be listed (unreadable directory, ...).
    error: str | None = None


def _clean_relative(path: PurePath) -> PurePath | None:
    """``path`` as a relative path with no '..', or None if it cannot be one."""
    if path.is_absolute() or any(part in ("..", "") for part in path.parts):
        return None
    parts = [p for p in path.parts if p != "."]
    return PurePath(*parts) if parts else None


def _walk(root: Path, recursive: bool, exclude: Path | None) -> Iterator[tuple[Path, str | None]]:
    """Image files below ``root`` in a stable order, never following symlinked
    directories (no loops), skipping ``exclude`` (the output folder)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield folder, f"cannot list directory: {exc.strerror or exc}"
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            problem = None
            try:
                if entry.is_dir(follow_symlinks=False):
                    hidden = entry.name.startswith(".")
                    if recursive and not hidden and not same_file(path, exclude):
                        subdirs.append(path)
                    continue
                is_file = entry.is_file()  # follows file symlinks
            except OSError as exc:
                is_file = False
                problem = (
                    "symbolic link loop"
                    if exc.errno == errno.ELOOP
                    else f"cannot read: {exc.strerror or exc}"
                )
            if entry.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                if is_file:
                    yield path, None
                elif problem:
                    yield path, problem
                elif entry.is_symlink() and not path.exists():
                    yield path, "broken symbolic link"
                elif not path.is_dir():  # a named pipe, a device, a socket
                    yield path, "not a regular file (named pipe, device or socket)"
        stack.extend(reversed(subdirs))


def same_file(a: Path, b: Path | None) -> bool:
    """Whether ``a`` and ``b`` are one file (False where either cannot be looked up)."""
    if b is None:
        return False
    try:  # by identity: a symbolic link or a bind mount cannot hide it
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def collect_jobs(
    inputs: Iterable[str | Path],
    *,
    recursive: bool = True,
    output_dir: Path | None = None,
    made: Collection[Path] = (),
) -> Iterator[Job]:
    """Expand command-line inputs into jobs, in order, lazily (so that paths
    from stdin stream through). The output folder given as a folder input is
    walked (styled in place) only when it is the one input: among others
    (``styler apply * -o styled`` run again, when ``*`` holds ``styled/``)
    it holds this run's results and is left out, as it is when it lies
    inside a walked folder. An entry that is not a path (a dataset row's
    missing value) fails alone, and so does a folder of ``made`` (made by
    making the output folder: it was not there before the run)."""
    inputs = iter(inputs)
    first = list(itertools.islice(inputs, 2))
    alone = len(first) == 1
    for raw in itertools.chain(first, inputs):
        if isinstance(raw, bytes):
            raw = os.fsdecode(raw)
        if not isinstance(raw, (str, os.PathLike)):
            yield Job(Path(f"<{raw!r}>"), PurePath("image"), f"not a path: {raw!r}")
            continue
        path = Path(raw)
        try:
            found, problem = path_kind(path), None
        except UsageError as exc:  # a name too long, a folder without permission
            found, problem = None, exc.reason
        if found == "dir" and any(same_file(path, folder) for folder in made):
            yield Job(path, PurePath(path.name or "image"), "no such file")
            continue
        if found == "dir":
            if not alone and same_file(path, output_dir):
                logger.info("leaving out %s: it is the output folder", path)
                continue
            for file, error in _walk(path, recursive, output_dir):
                rel = file.relative_to(path)
                yield Job(file, rel.with_suffix(""), error)
            continue
        rel = _clean_relative(PurePath(raw)) or PurePath(path.name or "image")
        yield Job(path, rel.with_suffix(""), problem)


#: Longest path accepted on stdin, in bytes (Linux's PATH_MAX). A longer
#: "line" is not a path (``styler apply - < /dev/zero``, a binary file): the
#: list is refused there instead of read into memory without end.
PATH_MAX = 4096


def read_path_list(stream: BinaryIO, nul: bool = False) -> Iterator[str]:
    """Paths from a binary stream (stdin), as they arrive: one per line, or
    NUL-separated with ``nul`` (``find -print0``). Names are decoded the way
    the OS does (``os.fsdecode``), so non-UTF-8 names survive. A path longer
    than :data:`PATH_MAX` bytes raises :class:`UsageError` (after every path
    before it has been yielded)."""
    sep = b"\0" if nul else b"\n"
    read = getattr(stream, "read1", stream.read)
    buffer = b""
    while True:
        chunk = read(65536)
        if not chunk:
            break
        buffer += chunk
        *done, buffer = buffer.split(sep)
        for raw in done:
            yield from _path_entry(raw, nul)
        if len(buffer) > PATH_MAX:
            break
    yield from _path_entry(buffer, nul)


def _path_entry(raw: bytes, nul: bool) -> Iterator[str]:
    if not nul:
        raw = raw.rstrip(b"\r")
    if len(raw) > PATH_MAX:
        what = "NUL-separated entry" if nul else "line"
        raise UsageError(
            f"a {what} longer than {PATH_MAX} bytes on stdin is not a path "
            f"(it starts {raw[:20]!r}); give one path per "
            f"{'NUL' if nul else 'line'}",
            "stdin",
        )
    if raw:
        yield os.fsdecode(raw)


def output_path(output_dir: Path, job: Job, extension: str, suffix: str = "") -> Path:
    """Where ``job``'s result goes; always inside ``output_dir``."""
    rel = job.relative
    name = rel.name + suffix + extension
    out = output_dir.joinpath(*rel.parts[:-1], name)
    root = os.path.abspath(output_dir)
    if os.path.commonpath([root, os.path.abspath(out)]) != root:  # pragma: no cover - defensive
        raise ValueError(f"output {out} would leave {output_dir}")
    return out


# -- folders of images ------------------------------------------------------------


def check_image_folder(folder: str | Path, what: str = "") -> Path:
    """``folder`` as a Path, if it is a folder (nothing is listed yet: a
    command checks its arguments with this before heavy imports)."""
    root = Path(folder)
    prefix = f"{what}: " if what else ""
    try:
        found = path_kind(root)
    except UsageError as exc:
        raise UsageError(f"{prefix}{exc.reason}", root) from None
    if found != "dir":
        raise UsageError(f"{prefix}not a folder of images", root)
    return root


def check_two_domains(a: str | Path, b: str | Path) -> None:
    """Two training folders that are one folder (by another name, through a
    link or a bind mount), or one inside the other, would put the same
    images in both domains (folders are walked with their subfolders)."""
    if same_file(Path(a), Path(b)):
        raise UsageError(f"the same folder as {a} (the two domains must be different folders)", b)
    outer, inner = resolved(a), resolved(b)
    for (x, shown_x), (y, shown_y) in (((outer, a), (inner, b)), ((inner, b), (outer, a))):
        if y.is_relative_to(x):
            raise UsageError(
                f"inside {shown_x}, whose images would include its own "
                "(the two domains must be separate folders)",
                shown_y,
            )


def list_images(folder: str | Path, what: str = "") -> list[Path]:
    """Image files below ``folder`` (recursive, stable order); those that
    cannot be listed are logged and left out. ``what`` says what the folder
    is for in errors ("photos", "reference")."""
    root = check_image_folder(folder, what)
    prefix = f"{what}: " if what else ""
    files = []
    for job in collect_jobs([root]):
        if job.error:
            logger.warning("%s: %s", job.input, job.error)
        else:
            files.append(job.input)
    if not files:
        raise UsageError(f"{prefix}no image files found", root)
    return files


def stem_key(path: Path, root: Path) -> str:
    """What pairs two files: the path below its folder, without extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def pair_by_stem(
    files_a: Iterable[Path], root_a: Path, files_b: Iterable[Path], root_b: Path
) -> list[tuple[Path, Path]]:
    """Files of A with the file of B of the same stem, in A's order (where
    several files of B share a stem, in other formats, the first listed)."""
    by_stem: dict[str, Path] = {}
    for path in files_b:
        by_stem.setdefault(stem_key(path, root_b), path)
    return [(f, by_stem[k]) for f in files_a if (k := stem_key(f, root_a)) in by_stem]
