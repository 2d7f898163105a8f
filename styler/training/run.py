"""A run folder and the files in it:

RUN_DIR/config.json        the run's TrainConfig
RUN_DIR/checkpoints/       step_NNNNNNN.safetensors (the newest few), best.safetensors
RUN_DIR/samples/           step_NNNNNNN.png sample grids
RUN_DIR/metrics.jsonl      one JSON line per step (and per evaluation)
RUN_DIR/curves.svg, report.html
RUN_DIR/*.onnx             the exported generators, at the end
RUN_DIR/tensorboard/       with --tensorboard
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import tempfile
import time
from pathlib import Path

from styler.errors import BadCheckpointError, OutputError, StylerError, UsageError
from styler.fsutil import (
    atomic_path,
    atomic_write_bytes,
    folders_to_make,
    live_writers,
    path_kind,
    remove_made,
    remove_stale_parts,
    stale_writer,
)
from styler.log import logger
from styler.training import metricslog, runfiles, state
from styler.training.config import TrainConfig

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

#: The best-scoring checkpoint of a run with --eval-every.
BEST = "best.safetensors"
#: config.json is a few KB; a larger one is not styler's.
MAX_CONFIG_BYTES = 1 << 20


class RunFolder:
    """The files of a run folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.samples = root / "samples"
        self.metrics = root / "metrics.jsonl"
        self.config = root / "config.json"
        self.best = self.checkpoints / BEST
        #: Damaged checkpoints said so far (each is said once in a run).
        self.reported: set[str] = set()
        self._lock: int | None = None

    def check_new(self) -> None:
        """Refuse a run folder that is not empty, unless it holds only what
        a run writes before its first checkpoint (and no process works in
        it): a new run starts afresh there, those files kept aside."""
        found = path_kind(self.root)
        if found is None:
            return
        if found != "dir":
            raise UsageError(f"{self.root} exists and is not a folder: choose another --output")
        try:
            with os.scandir(self.root) as entries:
                empty = next(entries, None) is None
        except OSError as exc:
            raise UsageError(f"cannot read: {exc.strerror or exc}", self.root) from None
        if empty:
            return
        if self._lock is None:
            self.lock()  # (refused when another process holds it)
            self.unlock()
        if self.leftover() is None:
            writers = [pid for pid in live_writers(self.root) if pid != os.getpid()]
            if writers:
                raise UsageError(
                    f"{self.root}: another styler process (pid {writers[0]}) is writing in it: "
                    "wait for it to end or choose another --output"
                )
            try:
                self.read_config()
            except StylerError:
                raise UsageError(
                    f"{self.root} exists, is not empty and is not a styler run folder: "
                    "choose another --output"
                ) from None
            if state.list_checkpoints(self.checkpoints):
                raise UsageError(
                    f"{self.root} exists and is not empty: continue it with `styler train "
                    f"--resume {shlex.quote(str(self.root))}` or choose another --output"
                )
            raise UsageError(
                f"{self.root} holds a run without checkpoints and files styler did not write "
                "there: choose another --output"
            )

    def leftover(self) -> list[Path] | None:
        """The files of a run folder without step checkpoints that holds only
        what a run writes (a readable config.json, metrics, report, sample
        grids, its exported models, its best checkpoint, temporary files of
        killed writers; and the folders earlier fresh starts set aside), or
        None when it holds anything else. Such a run failed before its first
        checkpoint (NaN, an error, a kill) or ended and lost its step
        checkpoints; a fresh start keeps its files aside (:meth:`set_aside`).
        A folder that holds only what a start that failed after its set-aside
        or while writing its config.json left (the ``earlier-*`` folders,
        empty subfolders, killed writers' temporary files, no config.json)
        has nothing to set aside but those temporary files."""
        try:
            entries = list(os.scandir(self.root))
            try:
                config = self.read_config()
            except StylerError:
                return runfiles.only_set_aside(entries)
            return runfiles.first_files(entries, runfiles.exported_names(config))
        except (OSError, StylerError):
            return None

    def set_aside(self, files: list[Path]) -> Path | None:
        """Move ``files`` (:meth:`leftover`'s) into a new ``earlier-<time>``
        folder of the run folder, keeping their places below it (styler's
        temporary files are removed): a fresh start there loses nothing."""
        kept = [f for f in files if stale_writer(f.name) is None]
        for path in files:
            if path not in kept:
                path.unlink(missing_ok=True)
        if not kept:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.root / f"earlier-{stamp}"
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = self.root / f"earlier-{stamp}-{n}"
        # config.json goes last: a set-aside cut short (a file that cannot
        # be moved, a kill) leaves a run folder the next start sets aside.
        for path in sorted(kept, key=lambda p: p == self.config):
            target = aside / path.relative_to(self.root)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, target)
            except OSError as exc:
                raise UsageError(
                    f"cannot set it aside in {aside.name}: {exc.strerror or exc}", path
                ) from None
        return aside

    def check_writable(self) -> None:
        """Refuse at once (before any image is decoded) a new run folder that
        cannot be created or written to; what this made to find out is removed."""
        self.check_new()
        made = folders_to_make(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise UsageError(
                f"cannot create or write the run folder: {exc.strerror or exc}", self.root
            ) from None
        finally:
            remove_made(made)

    def check_own(self) -> None:
        """Refuse a run folder whose parts are not what styler made: its
        subfolders must be folders (a symlink would send checkpoints, and
        their pruning, elsewhere) and the files it rewrites regular files."""
        folders = (self.checkpoints, self.samples, self.root / "tensorboard")
        files = (self.metrics, self.root / "report.html", self.root / "curves.svg")
        for path, folder in [*((f, True) for f in folders), *((f, False) for f in files)]:
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BadCheckpointError(f"cannot read: {exc.strerror or exc}", path) from None
            if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
                kind = "a folder" if folder else "a regular file"
                raise BadCheckpointError(f"not {kind}, as in a styler run folder", path)

    def create(self, config: TrainConfig) -> None:
        """Make the run folder (held for this process, see :meth:`lock`) and
        write its config; what a run that stopped before its first
        checkpoint left there is removed first (said in one line)."""
        self.check_new()
        made = folders_to_make(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            remove_made(made)
            raise UsageError(
                f"cannot create or write the run folder: {exc.strerror or exc}", self.root
            ) from None
        self.lock()
        self.check_new()
        leftover = self.leftover() or []
        try:
            aside = self.set_aside(leftover)
        except OSError as exc:  # (a temporary file that cannot be removed)
            raise UsageError(f"cannot set aside: {exc.strerror or exc}", self.root) from None
        if aside is not None:
            logger.warning(
                "%s held a run without checkpoints: its files are kept in %s; starting afresh",
                self.root,
                aside,
            )
        try:  # config.json first: a start that cannot write it leaves nothing made
            atomic_write_bytes(self.config, config.to_json().encode())
        except BaseException:
            remove_made(made)
            raise
        for folder in (self.checkpoints, self.samples):
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:  # (the folder left is one the same command starts)
                raise OutputError(f"cannot create: {exc.strerror or exc}", folder) from None

    def read_config(self) -> TrainConfig:
        if path_kind(self.root) != "dir" or path_kind(self.config) != "file":
            raise UsageError(f"{self.root} is not a styler run folder (no config.json)")
        try:
            with open(self.config, "rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise BadCheckpointError(f"cannot read: {exc.strerror or exc}", self.config) from None
        if len(data) > MAX_CONFIG_BYTES:
            raise BadCheckpointError(f"larger than {MAX_CONFIG_BYTES} bytes", self.config)
        return TrainConfig.from_json(data, self.config)

    def resume_point(self) -> state.TrainState:
        """The newest checkpoint that reads whole and is of the config in
        config.json (damaged newer ones, and those of another run, are
        reported and left alone); a run folder with none is refused, and left
        as it is, and so is one whose config.json was edited (no checkpoint
        is of its config: a resumed run keeps the config it began with)."""
        config = self.read_config()
        self.check_own()
        found, skipped = state.newest(self.checkpoints, config)
        foreign = [exc for exc in skipped if isinstance(exc, state.ForeignCheckpoint)]
        if found is None and foreign:
            raise BadCheckpointError(
                f"differs from the run's checkpoints in {_changes(config, foreign[0])}: it was "
                "edited after the run began, and a run keeps the config it began with (undo "
                "the edit, or start a new run with the new settings); nothing was changed",
                self.config,
            )
        if found is None:
            why = f" ({len(skipped)} passed over; the newest: {skipped[0]})" if skipped else ""
            left = self.leftover()
            if left is not None:
                # (whether there ever was one cannot be told: a run's exports may
                # come from its best checkpoint, which may come before the first)
                best = any(f.parent == self.checkpoints for f in left) and runfiles.reads(
                    self.best, config
                )
                why = (
                    " (no step checkpoint in it"
                    + (", only the best one, which `styler export` uses" if best else "")
                    + "): the same `styler train` starts afresh, keeping its files aside"
                )
            raise BadCheckpointError(f"no usable checkpoint{why}; nothing was changed", self.root)
        for exc in skipped:
            state.report_damaged(exc, self.reported)
        return found

    def edited_steps(self, config: TrainConfig) -> int | None:
        """The length config.json asks for when it was edited by hand to
        differ from ``config`` (the checkpoints'), taken as ``--steps``
        would be (said, not replaced silently); None when it was not."""
        edited = self.read_config()
        if edited.steps == config.steps or edited.time_budget:
            return None
        logger.warning(
            "%s asks for %d steps, the run's checkpoints %d: resuming to %d steps",
            self.config,
            edited.steps,
            config.steps,
            edited.steps,
        )
        return edited.steps

    def update_config(self, config: TrainConfig) -> None:
        """Rewrite config.json when a resume changed the config (a new --steps)."""
        if config != self.read_config():
            atomic_write_bytes(self.config, config.to_json().encode())

    def remove_stale(self) -> None:
        """Remove what writes cut short by a kill left (styler's ``.part``
        files) in the run folder and every subfolder styler writes into."""
        for folder in (self.root, self.checkpoints, self.samples):
            for stale in remove_stale_parts(folder):
                logger.info("removed %s, left by an interrupted run", stale)

    def lock(self) -> None:
        """Hold the run folder for this process until :meth:`unlock`: a second
        ``styler train`` in it at the same time (a new run or a resume) is
        refused. An advisory lock (flock) of the folder, which the system
        releases when the process ends, however it ends."""
        if self._lock is not None or fcntl is None:
            return
        try:
            fd = os.open(self.root, os.O_RDONLY)
        except OSError as exc:
            raise BadCheckpointError(f"cannot open: {exc.strerror or exc}", self.root) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(
                f"{self.root} is in use by another styler train: wait for it to end"
            ) from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (written after the checkpoint a resume
        starts from), and lines that do not read (said once): the records
        kept are copied, one at a time, to a new file that replaces it."""
        damaged = metricslog.Damaged()
        with atomic_path(self.metrics) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for record in metricslog.iter_metrics(self.metrics, damaged):
                if record["step"] <= step:
                    out.write(json.dumps(record) + "\n")
        if damaged.count:
            logger.warning(
                "%s: dropping %d damaged line%s (%s)",
                self.metrics,
                damaged.count,
                "s" if damaged.count > 1 else "",
                damaged.first,
            )

    def models(self) -> list[Path]:
        return sorted(self.root.glob("*.onnx"))


def _changes(config: TrainConfig, foreign: state.ForeignCheckpoint) -> str:
    """The first fields in which ``config`` differs from a checkpoint's, with
    both values: ``lr (0.5 here, 0.0002 in step_0000004.safetensors)``."""
    mine, theirs = config.to_dict(), foreign.config.to_dict()
    name = Path(foreign.path or "").name
    shown = []
    for key in foreign.fields[:3]:
        here, there = mine.get(key), theirs.get(key)
        while isinstance(here, dict) and isinstance(there, dict):  # down to where they differ
            inner = next((k for k in {**here, **there} if here.get(k) != there.get(k)), None)
            if inner is None:
                break
            key, here, there = f"{key}.{inner}", here.get(inner), there.get(inner)
        shown.append(f"{key} ({_short(here)} here, {_short(there)} in {name})")
    more = len(foreign.fields) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
