"""The end of a run: its generators as ONNX models in the run folder
(``RUN_DIR/<a>_to_<b>.onnx``), each with the metadata ``styler apply`` and
``styler generate`` read; and ``styler export RUN_DIR``, which does the same
from a run's best (or else latest) checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from styler.errors import UsageError
from styler.log import logger
from styler.metadata import ModelMetadata
from styler.training import state
from styler.training.config import TrainConfig
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


def export_trainer(
    trainer: Trainer, config: TrainConfig, run_dir: Path, step: int, fp16: bool = False
) -> list[ExportResult]:
    """Export the trainer's generators to ``run_dir/<name>.onnx``."""
    from styler.export import export_generator, export_onnx

    results = []
    for spec in trainer.exports():
        meta = metadata(spec, config, run_dir, step)
        if spec.task == "generate":
            results.append(export_generator(spec.net, meta, run_dir / f"{spec.name}.onnx"))
        else:
            path = run_dir / f"{spec.name}{'.fp16' if fp16 else ''}.onnx"
            results.append(export_onnx(spec.net, meta, path, fp16=fp16))
    return results


def export_run(run_dir: str | Path, fp16: bool = False) -> list[ExportResult]:
    """Export the generators of a run's best checkpoint (with --eval-every),
    else of its latest (``styler export RUN_DIR``)."""
    run = RunFolder(Path(run_dir))
    run.read_config()
    ckpt = state.load(run.best) if run.best.exists() else run.latest()
    if ckpt is None:
        raise UsageError(f"{run.root} has no checkpoint yet")
    logger.info("exporting %s (step %d)", ckpt.path, ckpt.step)
    trainer = build_trainer(ckpt.config, "cpu")
    state.restore(trainer, ckpt)
    trainer.train(False)
    return export_trainer(trainer, ckpt.config, run.root, ckpt.step, fp16)
