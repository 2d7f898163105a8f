"""When a run checkpoints, which checkpoints it keeps, and its best one.

:class:`Checkpointer` saves every ``every`` steps and at least every
``minutes`` of wall-clock time, and keeps the newest few; :class:`BestKeeper`
keeps ``best.safetensors``, the checkpoint with the lowest score so far.
Both take their clock and their trainer from the caller, so their decisions
can be tested without a training run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from styler.errors import BadCheckpointError, OutputError, StylerError
from styler.log import logger
from styler.training import state
from styler.training.config import TrainConfig
from styler.training.trainer import Trainer

#: Unless asked for by step count, checkpoints are at least this far apart
#: (fast runs would otherwise spend their time writing them).
MIN_CHECKPOINT_SECONDS = 60.0


class Checkpointer:
    """Checkpoints in ``folder``: due every ``every`` steps (at least
    :data:`MIN_CHECKPOINT_SECONDS` apart unless ``by_steps``, the step count
    was asked for) and whenever ``minutes`` have passed; the newest ``keep``
    are kept. ``saved`` and ``path``: the checkpoint the run started from."""

    def __init__(
        self,
        folder: Path,
        *,
        every: int,
        by_steps: bool = False,
        minutes: float = 10.0,
        keep: int = 3,
        saved: int = 0,
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        reported: set[str] | None = None,
    ) -> None:
        self.folder = folder
        #: Damaged checkpoints said so far (shared with the run folder's).
        self.reported = set() if reported is None else reported
        self.every = every
        self.by_steps = by_steps
        self.minutes = minutes
        self.keep = keep
        self.saved = saved
        self.path = path
        self.clock = clock
        self.last = clock()

    def due(self, done: int) -> bool:
        """Whether to checkpoint after ``done`` steps."""
        since = self.clock() - self.last
        on_step = done % self.every == 0 and (self.by_steps or since >= MIN_CHECKPOINT_SECONDS)
        return on_step or since > 60 * self.minutes

    def save(self, trainer: Trainer, done: int, info: dict[str, Any]) -> Path | None:
        """Checkpoint the whole training state after ``done`` steps."""
        path = self.folder / state.checkpoint_name(done)
        if path.is_dir() and not path.is_symlink():  # passed over on resume: left alone
            logger.warning("not saving step %d: %s is a folder (left as it is)", done, path)
            return self.path
        whose = _whose(path, trainer)
        if whose is not None:
            logger.warning("not saving step %d: %s holds %s (left as it is)", done, path, whose)
            return self.path
        _keep_aside(path, f"saving step {done}")
        state.save(path, trainer, done, info)
        state.prune(self.folder, self.keep, self.reported, upto=done, run=trainer.config)
        self.saved, self.path, self.last = done, path, self.clock()
        return path

    def save_last(self, trainer: Trainer, done: int, info: dict[str, Any]) -> Path | None:
        """The checkpoint of the last step, written unless it already was."""
        if self.saved != done or self.path is None:
            return self.save(trainer, done, info)
        return self.path


def _whose(path: Path, trainer: Trainer) -> str | None:
    """What ``path`` holds if it is a checkpoint styler must never replace:
    another run's, or one a newer styler wrote; None otherwise."""
    if not os.path.lexists(path):
        return None
    try:
        state.peek(path, trainer.config)
    except state.ForeignCheckpoint:
        return "another run's checkpoint"
    except state.NewerCheckpoint:
        return "a checkpoint of a newer styler"
    except BadCheckpointError:
        pass  # damaged: passed over on resume, and kept aside when replaced
    return None


def _keep_aside(path: Path, then: str) -> None:
    """Move the file at ``path`` (one resume passed over) to ``<name>.kept``
    (``.kept-2``, ... if taken) before styler writes there: never
    overwritten, and out of the way of resume and pruning."""
    if not os.path.lexists(path):
        return
    for n in range(1, 10_000):
        aside = path.with_name(f"{path.name}.kept" + (f"-{n}" if n > 1 else ""))
        try:
            if not _moved(path, aside):
                continue
        except OSError as exc:  # a read-only folder, a file system gone bad
            raise OutputError(
                f"cannot keep it aside as {aside.name}: {exc.strerror or exc}", path
            ) from None
        logger.warning("kept %s as %s; %s in its place", path, aside.name, then)
        return
    raise StylerError(f"cannot keep it aside: {path.name}.kept-1..9999 are all taken", path)


def _moved(path: Path, aside: Path) -> bool:
    """Move ``path`` to ``aside`` unless that is taken (False)."""
    try:
        os.link(path, aside, follow_symlinks=False)  # fails, never clobbers, if taken
    except FileExistsError:
        return False
    except OSError:
        if os.path.lexists(aside):
            return False
        os.rename(path, aside)  # no hard links here
    else:
        os.unlink(path)
    return True


class BestKeeper:
    """``path``, the checkpoint with the lowest score of the run (read back
    from the file on resume). With ``run`` (the run's config), a file there of
    another config (copied in from another run) is not this run's best: it
    is reported and replaced by the run's first scored checkpoint."""

    def __init__(self, path: Path, run: TrainConfig | None = None, key: str = "kid") -> None:
        self.path = path
        self.run = run
        self.key = key
        #: Whether the file at ``path`` is the run's own (or none is there):
        #: anything else is kept aside, not overwritten, when the best is saved.
        self.own = not os.path.lexists(path)
        self.best, self.best_std = self._read()

    def _read(self) -> tuple[float, float]:
        """The best checkpoint's score and its standard deviation."""
        if not self.path.exists():
            return math.inf, 0.0
        try:
            info = state.load(self.path, self.run).header.get("info", {})
            best = float(info.get(self.key, math.inf)), float(info.get(f"{self.key}_std", 0.0))
        except (StylerError, TypeError, ValueError) as exc:
            logger.warning("ignoring %s; it will be kept aside for the run's best", exc)
            return math.inf, 0.0
        self.own = True
        return best

    def offer(self, trainer: Trainer, step: int, info: dict[str, Any]) -> bool:
        """Save ``trainer`` as the best if its score (``info[key]``) is lower
        than the best so far; ``info`` goes into the checkpoint."""
        if not float(info[self.key]) < self.best:
            return False
        return self.keep(trainer, step, info)

    def keep(self, trainer: Trainer, step: int, info: dict[str, Any]) -> bool:
        """Save ``trainer`` as the best, whatever its score."""
        if self.path.is_dir() and not self.path.is_symlink():
            logger.warning("not keeping the best checkpoint: %s is a folder", self.path)
            self.best = -math.inf  # (said once)
            return False
        self.best, self.best_std = float(info[self.key]), float(info.get(f"{self.key}_std", 0.0))
        if not self.own:
            _keep_aside(self.path, "keeping the run's best")
            self.own = True
        state.save(self.path, trainer, step, info)
        return True
