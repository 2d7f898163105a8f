"""metrics.jsonl as a run writes it: one JSON line per step (and per
evaluation), flushed as it goes; with --tensorboard the step records also
go to RUN_DIR/tensorboard. And as the report, its curves and a resume read
it back: one line at a time, whatever the file holds; damaged lines (a
kill's half line, junk, a hole) are counted and skipped, never held whole."""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from styler import strictjson
from styler.errors import OutputError, UsageError

if TYPE_CHECKING:
    from styler.training.run import RunFolder


class MetricsLog:
    """metrics.jsonl, appended one JSON line at a time (and flushed, so that
    a kill loses at most the line being written); with ``tensorboard``, the
    step records also go to RUN_DIR/tensorboard."""

    def __init__(self, run: RunFolder, tensorboard: bool = False) -> None:
        self.file = open(run.metrics, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.writer = _tensorboard(run.root) if tensorboard else None

    def write(self, record: dict[str, Any], plot: bool = True) -> None:
        # A NaN or infinity is not JSON: written as null (a gap in the curve).
        record = {k: None if _not_finite(v) else v for k, v in record.items()}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if plot and self.writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _not_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _tensorboard(root: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=str(root / "tensorboard"))


# -- reading it back ---------------------------------------------------------------


#: A line of metrics.jsonl is a few hundred bytes: a longer one is damaged
#: (and is never read whole).
MAX_LINE = 1 << 16
#: Records that curves.svg and report.html are drawn from, at most: a longer
#: metrics.jsonl is thinned evenly (a chart is a few hundred pixels wide).
MAX_RECORDS = 20_000


@dataclass
class Damaged:
    """Lines of metrics.jsonl that do not read: how many, and the first."""

    count: int = 0
    first: str = ""

    def add(self, why: str) -> None:
        self.count += 1
        self.first = self.first or why


def iter_metrics(path: Path, damaged: Damaged | None = None) -> Iterator[dict[str, Any]]:
    """The records of metrics.jsonl, one at a time: JSON objects with a
    whole-number ``step``. Other lines (the half line a kill leaves, a line
    that is not UTF-8, not JSON, without a step or too long) are skipped, and
    counted in ``damaged``. Memory is bounded whatever the file holds."""
    try:
        f = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot read: {exc.strerror or exc}", path) from None
    with f:
        for number, line in enumerate(_lines(f), 1):
            record: Any = line
            if isinstance(line, bytes):
                try:
                    record = strictjson.loads(line)
                except ValueError as exc:
                    record = str(exc)
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
                yield record
            elif damaged is not None and line.strip():
                why = record if isinstance(record, str) else "no step number"
                damaged.add(f"line {number}: {why}")


def _lines(f: BinaryIO) -> Iterator[bytes | str]:
    """The lines of ``f``, each replaced by why it is damaged when longer
    than :data:`MAX_LINE` (its rest is skipped, never held, and a hole in
    it, which holds no line end, jumped over, not read)."""
    while line := f.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            _past_hole(f)
            line = f.readline(MAX_LINE)
        yield f"longer than {MAX_LINE} bytes"


def _past_hole(f: BinaryIO) -> None:
    """Move ``f`` past a hole it stands in (to the end, if only a hole
    follows); where the system cannot tell holes, leave it."""
    here = f.tell()
    try:
        data = os.lseek(f.fileno(), here, os.SEEK_DATA)
    except OSError as exc:  # ENXIO: nothing but a hole to the end
        data = os.fstat(f.fileno()).st_size if exc.errno == errno.ENXIO else here
    except AttributeError:  # no SEEK_DATA here
        data = here
    f.seek(data)


def read_metrics(path: Path, most: int = MAX_RECORDS) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (see :func:`iter_metrics`) in step order,
    at most about ``most``: every k-th step record and every k-th score, k
    doubling as needed, and the last of each."""
    kinds: dict[bool, _Thinned] = {False: _Thinned(most), True: _Thinned(most)}
    for record in iter_metrics(path):
        kinds[bool(record.get("eval"))].add(record)
    records = [*kinds[False].records(), *kinds[True].records()]
    return sorted(records, key=lambda r: r["step"])


class _Thinned:
    """Every ``stride``-th of the records added, at most ``most`` of them
    (the stride doubles when more would be kept), and the last."""

    def __init__(self, most: int) -> None:
        self.most, self.stride, self.seen = max(2, most), 1, 0
        self.kept: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None

    def add(self, record: dict[str, Any]) -> None:
        if self.seen % self.stride == 0:
            self.kept.append(record)
            if len(self.kept) > self.most:
                self.kept, self.stride = self.kept[::2], self.stride * 2
        self.seen += 1
        self.last = record

    def records(self) -> list[dict[str, Any]]:
        if self.last is not None and (not self.kept or self.kept[-1] is not self.last):
            return [*self.kept, self.last]
        return self.kept
