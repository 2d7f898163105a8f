"""What the main process does around the training steps: a line in
metrics.jsonl per step, and now and then a sample grid, report.html, a score
(keeping the best checkpoint) and a checkpoint; at the end the last
checkpoint, samples and score, and the export.

Each of these has its own small object (:class:`~styler.training.metricslog.MetricsLog`,
:class:`~styler.training.checkpointing.Checkpointer`,
:class:`~styler.training.scoring.Evaluator`, :mod:`~styler.training.export`);
:class:`Upkeep` says when each one runs. Processes other than the main one
(``torchrun``) keep nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from styler.errors import OutputError
from styler.log import logger
from styler.training import report, state
from styler.training.batches import TrainingData
from styler.training.checkpointing import BestKeeper, Checkpointer
from styler.training.config import TrainConfig
from styler.training.display import Display
from styler.training.export import best_checkpoint, export_trainer
from styler.training.metricslog import MetricsLog
from styler.training.run import RunFolder
from styler.training.trainer import KEPT, Trainer, TrainingError

if TYPE_CHECKING:
    from styler.training.loop import WatchOptions
    from styler.training.scoring import Evaluator, Scorer

#: A sample grid's rows: (label, images (N, C, H, W) per column).
Rows = list[tuple[str, list[torch.Tensor]]]
#: Sample grids (and report updates) per run unless --sample-every says.
SAMPLES_PER_RUN = 40


@dataclass
class Progress:
    """How far a run is: steps done, seconds spent in them, newest
    checkpoint, and the loop's wall time (steps and upkeep; a budget's clock)."""

    step: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    wall: float = 0.0


def sample_every(watch: WatchOptions, steps: int) -> int:
    """Steps between sample grids: as asked, else about 40 per run (at most 1000 apart)."""
    return watch.sample_every or max(1, min(1000, steps // SAMPLES_PER_RUN or 1))


class Idle:
    """The upkeep of the processes other than the main one: nothing."""

    def begin(self) -> None:
        pass

    def step_done(self, losses: dict[str, float], seconds: float, lr: float) -> None:
        pass

    def between_steps(self, display: Display) -> None:
        pass

    def finish(self, display: Display) -> list[Path]:
        return []

    def replan(self, config: TrainConfig) -> None:
        pass

    def time_spent(self) -> dict[str, float]:
        """Seconds spent on each kind of upkeep."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> Idle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Upkeep(Idle):
    """When the main process writes metrics, samples, reports, scores and
    checkpoints, and what it does at the end."""

    def __init__(
        self,
        run: RunFolder,
        trainer: Trainer,
        data: TrainingData,
        watch: WatchOptions,
        progress: Progress,
        device: str,
        scorer: Scorer | None = None,
    ) -> None:
        config = trainer.config
        self.run, self.trainer, self.config, self.watch = run, trainer, config, watch
        self.progress, self.device = progress, device
        self.evaluator = _evaluator(run, scorer, config) if scorer is not None else None
        self.every = sample_every(watch, config.steps)
        self.eval_every = watch.eval_every or eval_every(config.steps)
        self.checkpointer = Checkpointer(
            run.checkpoints,
            every=watch.checkpoint_every or self.every,
            by_steps=watch.checkpoint_every is not None,
            minutes=watch.checkpoint_minutes,
            keep=_keep(watch, run.checkpoints),
            saved=progress.step,
            path=progress.checkpoint,
            reported=run.reported,
        )
        self.sample_inputs = data.samples()
        self.epoch_steps = data.epoch_steps
        self.log = MetricsLog(run, tensorboard=watch.tensorboard)
        #: Seconds spent on each kind of upkeep (where a run's time goes).
        self.spent: dict[str, float] = {}

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent[kind] = self.spent.get(kind, 0.0) + time.perf_counter() - began

    def begin(self) -> None:
        """A fresh run shows its untrained networks."""
        if self.progress.step == 0:
            self.samples(0)
            self.report(0)

    def step_done(self, losses: dict[str, float], seconds: float, lr: float) -> None:
        """The step's line in metrics.jsonl."""
        done = self.progress.step
        record = {
            "step": done,
            "epoch": round(done / self.epoch_steps, 4),
            "lr": lr,
            "sec_per_step": round(seconds, 4),
            "time": round(self.progress.seconds, 2),
            **losses,
        }
        if self.config.time_budget:  # the budget's clock when the step was checked
            record["wall"] = round(self.progress.wall, 6)
        self.log.write(record)

    def between_steps(self, display: Display) -> None:
        """After a step that is not the last: whatever is due (nothing with
        NaN weights)."""
        done = self.progress.step
        score = self.evaluator is not None and done % self.eval_every == 0
        sample, save = done % self.every == 0, self.checkpointer.due(done)
        rows = self.check(done) if score or sample or save else []
        if score:
            self.evaluate(display)
        if save:  # before the grid: a grid at a run's last step says it was saved (RunFolder)
            with self.timed("checkpoints"):
                path = self.checkpointer.save(self.trainer, done, self.info())
            if path is not None and self.checkpointer.saved == done:
                display.note(f"saved {path.name}")
        if sample:
            self.samples(done, rows)
            self.report(done)

    def finish(self, display: Display) -> list[Path]:
        """The last checkpoint and samples; a finished run's score and its
        exported models."""
        done, finished = self.progress.step, self.progress.step >= self.config.steps
        rows = self.check(done)
        with self.timed("checkpoints"):
            self.progress.checkpoint = self.checkpointer.save_last(self.trainer, done, self.info())
        self.samples(done, rows)
        if finished and self.evaluator is not None:
            self.evaluate(display, final=True)
        models = self.export(display) if finished and self.watch.export else []
        self.report(done)
        return models

    def export(self, display: Display) -> list[Path]:
        """Export the best checkpoint's generators (with --eval-every), else the last's."""
        step = self.progress.step
        best = best_checkpoint(self.run, self.trainer)
        if best is not None:
            step = best.step
            kid = best.header["info"].get("kid", float("nan"))
            display.note(f"exporting the best checkpoint: step {step}, KID {kid:.4f}")
        else:
            display.note("exporting the generators to ONNX")
        with self.timed("export"):
            results = export_trainer(self.trainer, self.config, self.run.root, step)
        return [r.path for r in results]

    def evaluate(self, display: Display, final: bool = False) -> None:
        if self.evaluator is not None:
            step, seconds = self.progress.step, self.progress.seconds
            with self.timed("scores"):
                note = self.evaluator.evaluate(self.trainer, step, seconds, self.log, final)
            display.note(note)

    def info(self) -> dict[str, Any]:
        p = self.progress
        return {"seconds": p.seconds, "wall": p.wall, "device": self.device}

    def replan(self, config: TrainConfig) -> None:
        """The run's length changed (a time budget's estimate): samples and
        checkpoints keep their share of it."""
        self.config = config
        self.run.update_config(config)
        self.every = sample_every(self.watch, config.steps)
        if self.watch.checkpoint_every is None:
            self.checkpointer.every = self.every
        if not self.watch.eval_every:
            self.eval_every = eval_every(config.steps)

    def check(self, step: int) -> Rows:
        """The sample grid's rows, made in float32 (as the exported models
        run) to check the networks first: nothing is sampled, scored, saved
        or exported from weights or outputs that are NaN or infinite (a run
        that blew up keeps the checkpoints saved before)."""
        with self.timed("checks"):
            self.trainer.check_finite(step)
            with self.trainer.exact():
                rows = self.sample_rows()
        if not all(bool(torch.isfinite(t).all()) for _, cols in rows for t in cols):
            raise TrainingError(
                f"the generators' outputs became NaN or infinite by step {step}; {KEPT}: "
                "train again with a lower --lr, or --precision fp32"
            )
        return rows

    def sample_rows(self) -> Rows:
        self.trainer.train(False)
        rows = self.trainer.sample_rows(self.sample_inputs)
        self.trainer.train(True)
        return rows

    def samples(self, step: int, rows: Rows | None = None) -> None:
        with self.timed("samples"):
            rows = rows or self.sample_rows()
            image = report.grid_image(rows, self.trainer.column_names(), f"step {step}")
            try:
                report.save_png(image, self.run.samples / report.sample_name(step))
            except OutputError as exc:  # a folder of that name, a full disk: the run goes on
                logger.warning("skipping the sample grid of step %d: %s", step, exc)

    def report(self, step: int) -> None:
        with self.timed("report"):
            report.write_report(
                self.run.root,
                title=f"styler {self.config.mode.name}: {self.run.root.name}",
                losses=self.trainer.loss_names,
                summary=report.summary(self.config, step, self.device, self.progress.seconds),
                models=self.run.models(),
            )

    def time_spent(self) -> dict[str, float]:
        return dict(self.spent)

    def close(self) -> None:
        self.log.close()


def eval_every(steps: int) -> int:
    """Steps between scores of a run without --eval-every (one with a time
    budget): about ten per run."""
    from styler.training.scoring import BUDGET_EVALS

    return max(1, steps // BUDGET_EVALS)


def _evaluator(run: RunFolder, scorer: Scorer, config: TrainConfig) -> Evaluator:
    from styler.training.scoring import Evaluator

    return Evaluator(scorer, BestKeeper(run.best, config))


#: Step checkpoints a run keeps unless told (--keep-checkpoints).
KEEP_CHECKPOINTS = 3


def _keep(watch: WatchOptions, folder: Path) -> int:
    """How many step checkpoints to keep: as asked, else 3, or as many as
    ``folder`` holds already (a resume without --keep-checkpoints never
    prunes what the run was told to keep when it began)."""
    if watch.keep_checkpoints is not None:
        return watch.keep_checkpoints
    held = len(state.list_checkpoints(folder)) if folder.is_dir() else 0
    if held > KEEP_CHECKPOINTS:
        logger.info("keeping %d checkpoints, as many as the run folder holds", held)
    return max(KEEP_CHECKPOINTS, held)
