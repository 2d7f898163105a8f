"""The training loop: one run folder, one loop, any mode.

    config, scan = make_config("photos/", "paintings/")
    result = train(config, Path("runs/photos_to_paintings"))

Each step: seed the step, set the learning rate, take the step's batch (built
ahead in worker threads), run the mode's ``train_step``, append a line to
``metrics.jsonl``. Every so often: a sample grid of held-out images, a
checkpoint of the whole state, a fresh ``report.html``. The first Ctrl-C (or
SIGTERM) finishes the step, saves a checkpoint and returns; a second one
aborts. At the end the generators are exported to ONNX.

Everything a step computes follows from the config, the step number and the
checkpointed state, so ``resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from styler.errors import StylerError, UsageError
from styler.fsutil import atomic_write_bytes, remove_stale_parts
from styler.log import logger
from styler.training import data as D
from styler.training import report, state
from styler.training.config import TrainConfig
from styler.training.device import Hardware, choose_device
from styler.training.display import Display, make_display
from styler.training.distributed import DistInfo, barrier, from_env, init, shutdown
from styler.training.schedule import lr_factor
from styler.training.task import Task

if TYPE_CHECKING:
    from styler.export import ExportResult


#: The best-scoring checkpoint of a run with --eval-every.
BEST = "best.safetensors"
#: Unless asked for by step count, checkpoints are at least this far apart
#: (fast runs would otherwise spend their time writing them).
MIN_CHECKPOINT_SECONDS = 60.0


class TrainingError(StylerError):
    """Training cannot go on (for example the losses became NaN)."""


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
    keep_checkpoints: int = 3
    display: str = "auto"
    tensorboard: bool = False
    workers: int = field(default_factory=D.default_workers)
    cache_bytes: int = D.DEFAULT_CACHE_BYTES
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


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    total: int
    finished: bool
    interrupted: bool
    seconds: float
    checkpoint: Path | None = None
    models: list[Path] = field(default_factory=list)


def build_task(config: TrainConfig, device: str, dist: DistInfo | None = None) -> Task:
    """The mode's networks and optimisers (an explicit table, no lookup by name)."""
    from styler.training.cyclegan import CycleGan
    from styler.training.gan import Gan
    from styler.training.pix2pix import Pix2Pix

    modes: dict[str, type[Task]] = {"cyclegan": CycleGan, "pix2pix": Pix2Pix, "gan": Gan}
    return modes[config.mode](config, device, dist or DistInfo())


def load_data(
    config: TrainConfig,
    watch: WatchOptions,
    dist: DistInfo,
    found: D.Scan | D.ClassScan | None = None,
) -> D.TrainingData:
    """Decode the run's images once and set up its batches."""
    common = {
        "size": config.size,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "flip": config.flip,
        "rank": dist.rank,
        "world": dist.world,
        "workers": watch.workers,
    }
    if config.mode == "gan":
        classes = found if isinstance(found, D.ClassScan) else D.scan_classes(config.data_a)
        if classes.classes != config.classes:
            raise UsageError(
                f"the class folders of {config.data_a} changed since the run began "
                f"({', '.join(config.classes) or 'none'} -> {', '.join(classes.classes) or 'none'})"
            )
        grey = config.generator.out_channels == 1
        store, labels = D.image_store_for_classes(
            classes, config.size, grey, workers=watch.workers, cache_bytes=watch.cache_bytes
        )
        _report_store(store, config.domains[0])
        return D.ImageData(store, labels, **common)
    assert not isinstance(found, D.ClassScan)
    found = found or D.scan(
        config.data_a,
        config.data_b,
        mode=config.mode,
        seed=config.seed,
        holdout_a=config.holdout_a,
        holdout_b=config.holdout_b,
    )
    common = {
        "size": config.size,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "flip": config.flip,
        "rank": dist.rank,
        "world": dist.world,
        "workers": watch.workers,
    }
    root_a = Path(config.data_a)
    train_a, held_a = D.split(found.sources_a, root_a, config.holdout_a)
    # Samples show the networks at their training scale: squares of up to
    # 256 pixels cut from the middle of images scaled as for training.
    multiple = getattr(config.generator, "size_multiple", 1)
    sample_side = max(config.size, min(config.load_size, 256) // multiple * multiple)
    if config.mode == "pix2pix":
        store = D.ImageStore(
            train_a,
            config.load_size,
            workers=watch.workers,
            cache_bytes=watch.cache_bytes,
            what="pairs",
        )
        _report_store(store, "pairs")
        samples = D.sample_arrays(held_a, train_a, config.load_size)
        data: D.TrainingData = D.PairedData(store, samples, **common)
        data.sample_side = sample_side
        return data
    assert config.data_b is not None
    train_b, held_b = D.split(found.sources_b, Path(config.data_b), config.holdout_b)
    store_a = D.ImageStore(
        train_a,
        config.load_size,
        workers=watch.workers,
        cache_bytes=watch.cache_bytes // 2,
        what=f"images in {config.data_a}",
    )
    store_b = D.ImageStore(
        train_b,
        config.load_size,
        workers=watch.workers,
        cache_bytes=watch.cache_bytes // 2,
        what=f"images in {config.data_b}",
    )
    _report_store(store_a, config.domains[0])
    _report_store(store_b, config.domains[1])
    data = D.UnpairedData(
        store_a,
        store_b,
        D.sample_arrays(held_a, train_a, config.load_size),
        D.sample_arrays(held_b, train_b, config.load_size),
        **common,
    )
    data.sample_side = sample_side
    return data


def _report_store(store: D.ImageStore, what: str) -> None:
    logger.info(
        "%s: %d usable (%d skipped), %d in memory (%.0f MB)",
        what,
        len(store),
        len(store.bad),
        store.in_memory,
        store.memory_bytes / 2**20,
    )


class StopRequest:
    """The first SIGINT/SIGTERM asks the loop to save and stop; a second
    SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # A signal the process inherited as ignored (SIGINT in a job started
        # with `&` from a script) stays ignored, as it does for `styler apply`.
        wanted = [
            s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN
        ]
        old = {s: signal.signal(s, self) for s in wanted}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(D.seeded(seed, "global", step, rank).initial_seed())


class Run:
    """The files of a run folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.samples = root / "samples"
        self.metrics = root / "metrics.jsonl"
        self.config = root / "config.json"

    def check_new(self) -> None:
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise UsageError(
                f"{self.root} exists and is not empty: continue it with "
                f"`styler train --resume {self.root}` or choose another --output"
            )

    def create(self, config: TrainConfig) -> None:
        self.check_new()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.samples.mkdir(exist_ok=True)
        atomic_write_bytes(self.config, config.to_json().encode())

    def read_config(self) -> TrainConfig:
        if not self.config.is_file():
            raise UsageError(f"{self.root} is not a styler run folder (no config.json)")
        return TrainConfig.from_json(self.config.read_text(encoding="utf-8"), self.config)

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (written after the checkpoint a resume starts from)."""
        records = [r for r in report.read_metrics(self.metrics) if r["step"] <= step]
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in records).encode())

    def models(self) -> list[Path]:
        return sorted(self.root.glob("*.onnx"))


def _summary(config: TrainConfig, step: int, device: str, seconds: float) -> dict[str, Any]:
    g, d = config.generator, config.discriminator
    if config.mode == "gan":
        data = config.data_a + (f" ({len(config.classes)} classes)" if config.classes else "")
        net = f"{g.preset}, latent {g.latent_dim}"  # type: ignore[union-attr]
        size = f"{config.size} px, {g.out_channels} channels"
    else:
        data = config.data_a + (f"  →  {config.data_b}" if config.data_b else " (aligned)")
        net = f"{g.preset}, ngf {g.ngf}, norm {g.norm}"  # type: ignore[union-attr]
        size = f"{config.size} px crops of images scaled to {config.load_size} px"
    return {
        "mode": config.mode,
        "data": data,
        "generator": net,
        "discriminator": d.preset,
        "size": size,
        "loss": config.gan_loss,
        "steps": f"{step} of {config.steps}",
        "batch size": config.batch_size,
        "precision": f"{config.precision} on {device}",
        "training time": f"{seconds / 3600:.2f} h",
    }


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    device: str = "auto",
    watch: WatchOptions = WatchOptions(),
    found: D.Scan | D.ClassScan | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (new, or with ``resume`` continued
    from its latest checkpoint)."""
    run = Run(Path(run_dir))
    dist = from_env()
    device = choose_device(device, Hardware.probe())
    init(dist, device)
    try:
        result = _train(config, run, device, watch, found, resume, dist)
        barrier(dist)  # no process leaves while another still talks to it
        return result
    finally:
        shutdown(dist)


def resume(
    run_dir: str | Path,
    *,
    device: str = "auto",
    watch: WatchOptions = WatchOptions(),
    steps: int | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint (optionally to a new length)."""
    run = Run(Path(run_dir))
    config = run.read_config()
    latest = state.latest(run.checkpoints)
    if latest is not None:
        config = latest.config
    if steps is not None and steps != config.steps:
        if latest is not None and steps < latest.step:
            raise UsageError(f"--steps {steps} is before the checkpoint's step {latest.step}")
        decay = round(steps * config.decay_steps / config.steps)
        config = dataclasses.replace(config, steps=steps, decay_steps=decay)
    return train(config, run.root, device=device, watch=watch, resume=True)


def _train(
    config: TrainConfig,
    run: Run,
    device: str,
    watch: WatchOptions,
    found: D.Scan | D.ClassScan | None,
    resuming: bool,
    dist: DistInfo,
) -> TrainResult:
    main = dist.is_main
    if not resuming and main:
        run.check_new()
    if resuming and main:
        for stale in [*remove_stale_parts(run.checkpoints), *remove_stale_parts(run.root)]:
            logger.info("removed %s, left by an interrupted run", stale)
    data = load_data(config, watch, dist, found)
    if not resuming and main:
        run.create(config)
    task = build_task(config, device, dist)
    start, elapsed, ckpt_path = 0, 0.0, None
    if resuming:
        ckpt = state.latest(run.checkpoints)
        if ckpt is not None:
            state.restore(task, ckpt)
            start, ckpt_path = ckpt.step, ckpt.path
            elapsed = float(ckpt.header.get("info", {}).get("seconds", 0.0))
            logger.info("resuming %s from step %d", run.root, start)
        if main:
            run.truncate_metrics(start)
            if config != run.read_config():
                atomic_write_bytes(run.config, config.to_json().encode())
    scorer = _scorer(config, watch) if watch.eval_every and main else None
    best_path = run.checkpoints / BEST
    best = _best_score(best_path) if resuming else math.inf
    every = watch.sample_every or max(1, min(1000, config.steps // 40 or 1))
    ckpt_every = watch.checkpoint_every or every
    sample_inputs = data.samples()
    writer = _tensorboard(run.root) if watch.tensorboard and main else None

    def save(step: int) -> Path:
        info = {"seconds": elapsed, "device": device}
        path = state.save(run.checkpoints / state.checkpoint_name(step), task, step, info)
        state.prune(run.checkpoints, watch.keep_checkpoints)
        return path

    def samples(step: int) -> None:
        task.train(False)
        rows = task.sample_rows(sample_inputs)
        task.train(True)
        title = f"step {step}"
        image = report.grid_image(rows, task.column_names(), title)
        report.save_png(image, run.samples / f"step_{step:07d}.png")

    def write_report(step: int) -> None:
        report.write_report(
            run.root,
            title=f"styler {config.mode}: {run.root.name}",
            losses=task.loss_names,
            summary=_summary(config, step, device, elapsed),
            models=run.models(),
        )

    def evaluate(step: int, log: Any) -> None:
        nonlocal best
        assert scorer is not None
        from styler.training.scoring import translate_with

        spec = task.exports()[0]
        multiple = getattr(spec.config, "size_multiple", 1)
        task.train(False)
        kid, kid_std = scorer.score(
            lambda rgb: translate_with(spec.net, rgb, multiple, task.device, task.autocast)
        )
        task.train(True)
        record = {
            "step": step,
            "eval": True,
            "kid": kid,
            "kid_std": kid_std,
            "kid_unmodified": scorer.baseline[0],
        }
        log.write(json.dumps(record) + "\n")
        log.flush()
        if kid < best:
            best = kid
            state.save(best_path, task, step, {"seconds": elapsed, "kid": kid, "kid_std": kid_std})
            display.note(
                f"step {step}: KID {kid:.4f} (best so far; unmodified {scorer.baseline[0]:.4f})"
            )
        else:
            display.note(f"step {step}: KID {kid:.4f} (best {best:.4f})")

    stop = StopRequest()
    done = saved = start
    last_ckpt = time.monotonic()
    display: Display = make_display(
        watch.display if main else "quiet", config.steps, start, task.loss_names
    )
    models: list[Path] = []
    task.train(True)
    try:
        with stop.installed(), display, open(run.metrics, "a", encoding="utf-8") as log:
            if main and start == 0:
                samples(0)
                write_report(0)
            for step in range(start, config.steps):
                torch.manual_seed(step_seed(config.seed, step, dist.rank))
                factor = lr_factor(step, config.steps, config.decay_steps)
                task.set_lr(factor)
                batch = data.batch(step)
                began = time.perf_counter()
                losses = task.train_step(batch, step)
                seconds = time.perf_counter() - began
                elapsed += seconds
                done = step + 1
                if not all(math.isfinite(v) for v in losses.values()):
                    raise TrainingError(
                        f"the losses became NaN or infinite at step {done} ({_fmt(losses)}); "
                        "resume from the last checkpoint with a lower --lr, or use "
                        "--precision fp32"
                    )
                record = {
                    "step": done,
                    "epoch": round(done / data.epoch_steps, 4),
                    "lr": config.lr * factor,
                    "sec_per_step": round(seconds, 4),
                    "time": round(elapsed, 2),
                    **losses,
                }
                if main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if writer is not None:
                        for k, v in record.items():
                            if k != "step":
                                writer.add_scalar(k, v, done)
                display.update(done, losses, config.lr * factor)
                if watch.stop_at is not None and done >= watch.stop_at:
                    stop.requested = True
                if _stop_everywhere(stop.requested, dist):
                    break
                if not main or done == config.steps:
                    continue
                if scorer is not None and done % watch.eval_every == 0:  # type: ignore[operator]
                    evaluate(done, log)
                if done % every == 0:
                    samples(done)
                    write_report(done)
                since = time.monotonic() - last_ckpt
                due = done % ckpt_every == 0 and (
                    watch.checkpoint_every is not None or since >= MIN_CHECKPOINT_SECONDS
                )
                if due or since > 60 * watch.checkpoint_minutes:
                    ckpt_path, saved = save(done), done
                    last_ckpt = time.monotonic()
                    display.note(f"saved {ckpt_path.name}")
            if main:
                if saved != done or ckpt_path is None:
                    ckpt_path, saved = save(done), done
                samples(done)
                if done >= config.steps and scorer is not None:
                    evaluate(done, log)
                if done >= config.steps and watch.export:
                    export_step = done
                    if best_path.exists():
                        chosen = state.load(best_path)
                        state.restore(task, chosen)
                        export_step = chosen.step
                        display.note(
                            f"exporting the best checkpoint: step {export_step}, "
                            f"KID {chosen.header['info'].get('kid', float('nan')):.4f}"
                        )
                    else:
                        display.note("exporting the generators to ONNX")
                    models = [r.path for r in export_task(task, config, run.root, export_step)]
                write_report(done)
    finally:
        data.close()
        if writer is not None:
            writer.close()
    finished = done >= config.steps
    return TrainResult(
        run.root,
        done,
        config.steps,
        finished,
        stop.requested and not finished,
        elapsed,
        ckpt_path,
        models,
    )


def _scorer(config: TrainConfig, watch: WatchOptions) -> Any:
    from styler.training.scoring import Scorer

    if config.mode == "gan":
        raise UsageError("--eval-every scores translation models, not generation from noise")
    if watch.eval_photos:
        photos = D.list_images(watch.eval_photos)
    else:
        photos = [Path(config.data_a) / name for name in config.holdout_a]
        if not photos:
            raise UsageError(
                "--eval-every: no photos were held out (the folder is small); "
                "give some with --eval-photos DIR"
            )
    reference = watch.eval_reference or config.data_b
    if reference is None:
        raise UsageError("--eval-every with --aligned data needs --eval-reference DIR")
    return Scorer(photos, reference)


def _best_score(path: Path) -> float:
    if not path.exists():
        return math.inf
    try:
        return float(state.load(path).header.get("info", {}).get("kid", math.inf))
    except StylerError as exc:
        logger.warning("ignoring %s", exc)
        return math.inf


def _fmt(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in losses.items())


def _stop_everywhere(requested: bool, dist: DistInfo) -> bool:
    """Whether any process was asked to stop (all processes stop together)."""
    if not dist.enabled:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _tensorboard(root: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=str(root / "tensorboard"))


# -- export ----------------------------------------------------------------------------------


def export_task(
    task: Task, config: TrainConfig, run_dir: Path, step: int, fp16: bool = False
) -> list[ExportResult]:
    """Export the task's generators to ``run_dir/<a>_to_<b>.onnx``."""
    from styler.export import export_generator, export_onnx
    from styler.metadata import ModelMetadata

    results = []
    for spec in task.exports():
        if spec.task == "generate":
            kind = "class-conditional " if spec.classes else ""
            meta = ModelMetadata(
                network=spec.config,
                name=spec.name,
                description=f"{kind}{spec.config.preset} generator of {config.domains[0]} "
                f"images, trained by styler for {step} steps",
                task="generate",
                classes=spec.classes or None,
                train_size=config.size,
                source=f"styler train run {run_dir.name}, step {step}",
            )
            results.append(export_generator(spec.net, meta, run_dir / f"{spec.name}.onnx"))
            continue
        src, dst = spec.name.split("_to_", 1)
        meta = ModelMetadata(
            network=spec.config,
            name=spec.name,
            description=f"{config.mode} generator {src} -> {dst}, trained by styler "
            f"for {step} steps on {config.size} px crops",
            direction=spec.direction,
            domains=spec.domains,
            train_size=config.size,
            source=f"styler train run {run_dir.name}, step {step}",
        )
        path = run_dir / f"{spec.name}{'.fp16' if fp16 else ''}.onnx"
        results.append(export_onnx(spec.net, meta, path, fp16=fp16))
    return results


def export_run(run_dir: str | Path, fp16: bool = False) -> list[ExportResult]:
    """Export the generators of a run's best checkpoint (with --eval-every),
    else of its latest (``styler export RUN_DIR``)."""
    run = Run(Path(run_dir))
    run.read_config()
    best = run.checkpoints / BEST
    ckpt = state.load(best) if best.exists() else state.latest(run.checkpoints)
    if ckpt is None:
        raise UsageError(f"{run.root} has no checkpoint yet")
    logger.info("exporting %s (step %d)", ckpt.path, ckpt.step)
    task = build_task(ckpt.config, "cpu")
    state.restore(task, ckpt)
    task.train(False)
    return export_task(task, ckpt.config, run.root, ckpt.step, fp16)
