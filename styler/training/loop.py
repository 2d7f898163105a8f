"""The training loop: one run folder, one loop, any mode.

    config, found = make_config("photos/", "paintings/")
    result = train(config, Path("runs/photos_to_paintings"))

Each step: seed the step, set the learning rate, take the step's batch (built
ahead in worker threads), run the mode's ``train_step``, append a line to
``metrics.jsonl``. Every so often (:mod:`~styler.training.upkeep`): a sample
grid of held-out images, a checkpoint of the whole state, a fresh
``report.html``. The first Ctrl-C (or SIGTERM, SIGHUP) finishes the step, saves a
checkpoint and returns; a second one aborts. At the end the generators are
exported to ONNX.

Everything a step computes follows from the config, the step number and the
checkpointed state, so ``resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from styler.errors import UsageError
from styler.log import logger
from styler.training import limits, state
from styler.training.batches import TrainingData, default_workers
from styler.training.budget import Budget
from styler.training.config import TrainConfig
from styler.training.data import Found, load_data
from styler.training.device import Hardware, choose_device
from styler.training.display import Display, make_display
from styler.training.distributed import DistInfo, barrier, from_env, init, shutdown
from styler.training.images import DEFAULT_CACHE_BYTES
from styler.training.modes import build_trainer
from styler.training.run import RunFolder
from styler.training.schedule import lr_factor
from styler.training.scoring import scorer_for
from styler.training.seeds import step_seed
from styler.training.stopping import StopRequest
from styler.training.trainer import KEPT, Trainer, TrainingError
from styler.training.upkeep import Idle, Progress, Upkeep

#: How PyTorch's CPU allocator says it is out of memory (a RuntimeError).
OOM = "can't allocate memory"
#: What --display takes.
DISPLAYS = ("auto", "live", "plain", "quiet")


@dataclass(frozen=True)
class WatchOptions:
    """How a run is watched and kept (not saved in the config: changing
    these never changes what is computed)."""

    #: Steps between sample grids and report updates (None: about 40 per run).
    sample_every: int | None = None
    #: Steps between checkpoints (None: like samples) ...
    checkpoint_every: int | None = None
    #: ... and at least this often in wall-clock minutes.
    checkpoint_minutes: float = 10.0
    #: Step checkpoints kept (None: 3, or on resume as many as the run
    #: folder holds, so that a resume never prunes what a run was told to keep).
    keep_checkpoints: int | None = None
    display: str = "auto"
    tensorboard: bool = False
    workers: int = field(default_factory=default_workers)
    cache_bytes: int = DEFAULT_CACHE_BYTES
    export: bool = True
    #: Steps between scores of the A -> B generator (KID of held-out photos
    #: against the B images); the best-scoring checkpoint is kept and exported.
    eval_every: int | None = None
    #: Photos to score (default: the held-out A images) and the reference
    #: style (default: the B folder).
    eval_photos: str | None = None
    eval_reference: str | None = None
    #: Stop (as a Ctrl-C would: checkpoint, no export) once this many steps
    #: are done; for running a long job in slices.
    stop_at: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (
            ("--sample-every", self.sample_every),
            ("--checkpoint-every", self.checkpoint_every),
            ("--eval-every", self.eval_every),
        ):
            if value is not None:
                limits.check_count(flag, value, 1, limits.MAX_STEPS)
        limits.check_number("--checkpoint-minutes", self.checkpoint_minutes, 0.01, 1e9)
        if self.keep_checkpoints is not None:
            limits.check_count("--keep-checkpoints", self.keep_checkpoints, 1, 1_000_000)
        limits.check_count("--workers", self.workers, 1, 1024)
        if (self.eval_photos or self.eval_reference) and not self.eval_every:
            raise UsageError("--eval-photos and --eval-reference are for --eval-every N")
        if self.display not in DISPLAYS:
            raise UsageError(f"unknown --display {self.display!r}: expected {', '.join(DISPLAYS)}")


@dataclass
class TrainResult:
    """How a run ended: steps done of ``total``, whether a stop request cut
    it short, its training time, its newest checkpoint and exported models."""

    run_dir: Path
    step: int
    total: int
    interrupted: bool
    seconds: float
    models: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    #: Where this process's time went: seconds in the steps and in each kind
    #: of upkeep (samples, checks, report, checkpoints, scores, export) ...
    spent: dict[str, float] = field(default_factory=dict)
    #: ... out of this many, from the first step to the end of the export.
    wall: float = 0.0
    #: A run with a time budget: the budget's clock (this and earlier
    #: processes) when the loop ended; 0 for a run measured in steps.
    clock: float = 0.0

    @property
    def finished(self) -> bool:
        return self.step >= self.total

    def where_time_went(self) -> str:
        """``steps 86%, samples 4%, ...`` of :attr:`wall`, largest first."""
        shares = sorted(self.spent.items(), key=lambda kv: -kv[1])
        total = max(self.wall, 1e-9)
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in shares if v >= 0.005 * total)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    device: str = "auto",
    watch: WatchOptions = WatchOptions(),
    found: Found = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (new, or with ``resume`` continued
    from its latest checkpoint) on ``device`` (``auto``: the best there is)."""
    run = RunFolder(Path(run_dir))
    start = run.resume_point() if resume else None
    return _run(config, run, device, watch, found, start)


def resume(
    run_dir: str | Path,
    *,
    device: str = "auto",
    watch: WatchOptions = WatchOptions(),
    steps: int | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint (optionally to a new length);
    a run folder without a usable checkpoint is refused and left as it is."""
    run = RunFolder(Path(run_dir))
    start = run.resume_point()
    config = start.config
    steps = steps if steps is not None else run.edited_steps(config)
    if steps is not None and config.time_budget:
        raise UsageError("this run has a time budget (--time): resume it without --steps")
    if steps is not None and steps != config.steps:
        if steps < start.step:
            raise UsageError(f"{steps} steps end before the checkpoint's step {start.step}")
        decay = round(steps * config.decay_steps / config.steps)
        config = dataclasses.replace(config, steps=steps, decay_steps=decay)
    return _run(config, run, device, watch, None, start)


def _run(
    config: TrainConfig,
    run: RunFolder,
    device: str,
    watch: WatchOptions,
    found: Found,
    start: state.TrainState | None,
) -> TrainResult:
    """Set the run up (its processes, folder, data, trainer and the state of
    ``start``, the checkpoint it resumes from), then loop."""
    dist = from_env()
    device = choose_device(device, Hardware.probe())
    init(dist, device)
    try:
        main = dist.is_main
        if main and start is not None:
            run.lock()
            run.remove_stale()
        elif main:
            run.check_writable()
        scorer = (  # read before the run folder is made
            scorer_for(config, watch.eval_every, watch.eval_photos, watch.eval_reference)
            if main
            else None
        )
        data = load_data(
            config,
            workers=watch.workers,
            cache_bytes=watch.cache_bytes,
            rank=dist.rank,
            world=dist.world,
            found=found,
        )
        try:
            if main and start is None:
                run.create(config)
            trainer = build_trainer(config, device, dist)
            progress = _restore(trainer, run, start, main) if start is not None else Progress()
            upkeep = Upkeep(run, trainer, data, watch, progress, device, scorer) if main else Idle()
            result = _loop(trainer, data, progress, watch, dist, upkeep, run)
        finally:
            data.close()
        barrier(dist)  # no process leaves while another still talks to it
        return result
    finally:
        run.unlock()
        shutdown(dist)


def _restore(trainer: Trainer, run: RunFolder, ckpt: state.TrainState, main: bool) -> Progress:
    """Put the checkpoint ``ckpt`` into ``trainer``; forget the metrics
    written after it; keep a changed config (a new --steps)."""
    state.restore(trainer, ckpt)
    info = ckpt.header["info"]
    seconds, wall = float(info.get("seconds", 0.0)), float(info.get("wall", 0.0))
    logger.info("resuming %s from step %d", run.root, ckpt.step)
    if main:
        run.truncate_metrics(ckpt.step)
        run.update_config(trainer.config)
    return Progress(ckpt.step, seconds, ckpt.path, wall)


def _loop(
    trainer: Trainer,
    data: TrainingData,
    progress: Progress,
    watch: WatchOptions,
    dist: DistInfo,
    upkeep: Idle,
    run: RunFolder,
) -> TrainResult:
    """The steps from ``progress`` to the end of the run (or a stop request,
    or the end of its time budget)."""
    stop = StopRequest(run.root, exports=watch.export)
    view = watch.display if dist.is_main else "quiet"
    display = make_display(view, trainer.config.steps, progress.step, trainer.loss_names)
    budget = _budget(trainer.config, progress)
    trainer.train(True)
    began, seconds_before = time.perf_counter(), progress.seconds
    with stop.installed(), display, upkeep:
        upkeep.begin()
        while progress.step < trainer.config.steps:
            step = progress.step
            factor = _agree(budget.lr_factor(), dist) if budget is not None else None
            losses, seconds, lr = _step(trainer, data, step, dist.rank, factor)
            progress.step, progress.seconds = step + 1, progress.seconds + seconds
            if budget is not None:
                _follow_budget(budget, trainer, progress, upkeep, display, dist)
            upkeep.step_done(losses, seconds, lr)
            display.update(progress.step, losses, lr)
            if watch.stop_at is not None and progress.step >= watch.stop_at:
                stop.requested = True
            if _stop_everywhere(stop.requested, dist):
                break
            if progress.step < trainer.config.steps:
                upkeep.between_steps(display)
                if budget is not None:  # the upkeep may have spent what was left
                    _follow_budget(
                        budget, trainer, progress, upkeep, display, dist, only_if_over=True
                    )
        stop.finishing = progress.step >= trainer.config.steps
        models = upkeep.finish(display)
    total = trainer.config.steps
    return TrainResult(
        run_dir=run.root,
        step=progress.step,
        total=total,
        interrupted=stop.requested and progress.step < total,
        seconds=progress.seconds,
        models=models,
        checkpoint=progress.checkpoint,
        spent={"steps": progress.seconds - seconds_before, **upkeep.time_spent()},
        wall=time.perf_counter() - began,
        clock=progress.wall if budget is not None else 0.0,
    )


def _budget(config: TrainConfig, progress: Progress) -> Budget | None:
    """The clock of a run with a time budget (None for a run in steps)."""
    if not config.time_budget:
        return None
    budget = Budget(config.time_budget, spent=progress.wall, decay=config.decay_share)
    budget.start(progress.step)
    return budget


def _follow_budget(
    budget: Budget,
    trainer: Trainer,
    progress: Progress,
    upkeep: Idle,
    display: Display,
    dist: DistInfo,
    only_if_over: bool = False,
) -> None:
    """After a step of a run with a time budget: end it when the time is up,
    or lay its schedule out again from the speed measured so far (not with
    ``only_if_over``). Every process follows the main one's clock."""
    config, progress.wall = trainer.config, budget.elapsed()
    # One reading of the clock: the wall saved is the one the stop was decided by.
    over = _agree(float(progress.wall >= budget.seconds), dist) > 0
    if only_if_over and not over:
        return
    steps = progress.step if over else budget.estimate(progress.step, config.steps)
    if steps is None:
        return
    steps = int(_agree(float(steps), dist))
    decay = round(steps * config.decay_share)
    trainer.config = dataclasses.replace(config, steps=steps, decay_steps=decay)
    upkeep.replan(trainer.config)
    display.set_total(steps)
    if not over:
        logger.info("time budget: %d steps in all at the speed measured so far", steps)


def _step(
    trainer: Trainer, data: TrainingData, step: int, rank: int, factor: float | None = None
) -> tuple[dict[str, float], float, float]:
    """One optimisation step: its losses, how long it took, its learning
    rate (``factor`` of the config's: the time budget's, else the step's)."""
    config = trainer.config
    torch.manual_seed(step_seed(config.seed, step, rank))
    if factor is None:
        factor = lr_factor(step, config.steps, config.decay_steps)
    trainer.set_lr(factor)
    batch = data.batch(step)
    began = time.perf_counter()
    try:
        losses = trainer.train_step(batch, step)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError | torch.OutOfMemoryError) and OOM not in str(exc):
            raise
        raise TrainingError(
            f"out of memory at step {step + 1}: lower --batch-size, --size, --ngf or --ndf"
        ) from None
    seconds = time.perf_counter() - began
    if not all(math.isfinite(v) for v in losses.values()):
        raise TrainingError(
            f"the losses became NaN or infinite at step {step + 1} ({_fmt(losses)}); "
            f"{KEPT}: train again with a lower --lr, or --precision fp32"
        )
    return losses, seconds, config.lr * factor


def _fmt(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in losses.items())


def _agree(value: float, dist: DistInfo) -> float:
    """The main process's ``value``, in every process."""
    if not dist.enabled:
        return value
    box = torch.tensor([value], dtype=torch.float64)
    torch.distributed.broadcast(box, src=0)
    return float(box.item())


def _stop_everywhere(requested: bool, dist: DistInfo) -> bool:
    """Whether any process was asked to stop (all processes stop together)."""
    if not dist.enabled:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
