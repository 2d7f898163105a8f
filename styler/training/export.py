"""The end of a run: its generators as ONNX models in the run folder
(``RUN_DIR/<a>_to_<b>.onnx``), each with the metadata ``styler apply`` and
``styler generate`` read; and ``styler export RUN_DIR``, which does the same
from a run's best (or else latest) checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from styler.errors import BadCheckpointError, UsageError
from styler.log import logger
from styler.metadata import ModelMetadata
from styler.training import state
from styler.training.config import TrainConfig
from styler.training.limits import safe_name
from styler.training.modes import build_trainer
from styler.training.run import RunFolder
from styler.training.trainer import ExportSpec, Trainer

if TYPE_CHECKING:
    from styler.export import ExportResult


def metadata(spec: ExportSpec, config: TrainConfig, run_dir: Path, step: int) -> ModelMetadata:
    """What the model file of ``spec`` says about itself."""
    source = f"styler train run {run_dir.name}, step {step}"
    if spec.task == "generate":
        kind = "class-conditional " if spec.classes else ""
        return ModelMetadata(
            network=spec.config,
            name=spec.name,
            description=f"{kind}{spec.config.preset} generator of {config.domains[0]} "
            f"images, trained by styler for {step} steps",
            task="generate",
            classes=spec.classes or None,
            train_size=config.size,
            source=source,
        )
    src, dst = spec.name.split("_to_", 1)
    return ModelMetadata(
        network=spec.config,
        name=spec.name,
        description=f"{config.mode.name} generator {src} -> {dst}, trained by styler "
        f"for {step} steps on {config.size} px crops",
        direction=spec.direction,
        domains=spec.domains,
        train_size=config.size,
        source=source,
    )


def model_paths(trainer: Trainer, run_dir: Path, fp16: bool = False) -> list[Path]:
    """Where the trainer's generators go: ``run_dir/<name>.onnx``, names made
    of the domain names, which hold only letters, digits, ``-`` and ``_``."""
    paths = []
    for spec in trainer.exports():
        stem = f"{spec.name}.fp16" if fp16 and spec.task != "generate" else spec.name
        if not all(safe_name(part) for part in spec.name.split("_to_")):
            raise UsageError(f"unsafe model name {spec.name!r}")  # domains are checked on read
        paths.append(run_dir / f"{stem}.onnx")
    return paths


def export_trainer(
    trainer: Trainer,
    config: TrainConfig,
    run_dir: Path,
    step: int,
    fp16: bool = False,
    replace: bool = True,
) -> list[ExportResult]:
    """Export the trainer's generators to ``run_dir/<name>.onnx`` (a file
    there is replaced only with ``replace``). All or none: when one cannot
    be written, those this call wrote new are removed (what it replaced
    cannot be brought back, and is said), so the same export can run again."""
    from styler.export import export_generator, export_onnx

    results: list[ExportResult] = []
    replaced: list[Path] = []
    try:
        for spec, path in zip(trainer.exports(), model_paths(trainer, run_dir, fp16), strict=True):
            meta = metadata(spec, config, run_dir, step)
            existed = os.path.lexists(path)
            if spec.task == "generate":
                results.append(export_generator(spec.net, meta, path, replace=replace))
            else:
                results.append(export_onnx(spec.net, meta, path, fp16=fp16, replace=replace))
            if existed:
                replaced.append(path)
    except BaseException:
        for result in results:
            if result.path in replaced:
                logger.warning("%s: replaced before the export failed", result.path)
            else:
                result.path.unlink(missing_ok=True)
        raise
    return results


def best_checkpoint(run: RunFolder, trainer: Trainer) -> state.TrainState | None:
    """The run's best checkpoint (``--eval-every``) with its networks put
    into ``trainer``; None when there is none, or when it is no use (it does
    not read, holds a NaN, is of another config or does not fit), which is
    said once: the caller then exports the latest checkpoint instead."""
    if not os.path.lexists(run.best):
        return None
    try:
        best = state.load(run.best)
        state.check_values(best)
        if not best.config.same_run(trainer.config):
            raise BadCheckpointError("not of this run (its config differs)", run.best)
        state.restore_networks(trainer, best)
    except BadCheckpointError as exc:
        state.report_damaged(exc, run.reported, "; exporting the latest checkpoint")
        return None
    return best


def export_run(
    run_dir: str | Path, fp16: bool = False, overwrite: bool = False
) -> list[ExportResult]:
    """Export the generators of a run's best checkpoint (with --eval-every),
    else of its latest (``styler export RUN_DIR``); models already in the
    run folder are replaced only with ``overwrite``."""
    run = RunFolder(Path(run_dir))
    config = run.read_config()
    run.check_own()
    try:
        latest: state.TrainState | None = run.resume_point()
    except BadCheckpointError:
        if not os.path.lexists(run.best):
            raise
        latest = None  # the best alone may do
    trainer = build_trainer(latest.config if latest else config, "cpu")
    if fp16 and any(spec.task == "generate" for spec in trainer.exports()):
        raise UsageError(
            "--fp16 is for translation models: a generator from noise exports in fp32 only",
            run.root,
        )
    taken = [p for p in model_paths(trainer, run.root, fp16) if os.path.lexists(p)]
    if taken and not overwrite:
        raise UsageError(f"{taken[0]} exists; pass --overwrite to replace it")
    ckpt = best_checkpoint(run, trainer)
    if ckpt is None:
        ckpt = latest or run.resume_point()  # (refused: nothing usable)
        state.restore_networks(trainer, ckpt)
    logger.info("exporting %s (step %d)", ckpt.path, ckpt.step)
    trainer.train(False)
    return export_trainer(trainer, ckpt.config, run.root, ckpt.step, fp16, replace=overwrite)
