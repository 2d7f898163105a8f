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
from pathlib import Path
from typing import Any

from styler.errors import UsageError
from styler.fsutil import atomic_write_bytes, remove_stale_parts
from styler.log import logger
from styler.training import report, state
from styler.training.config import TrainConfig

#: The best-scoring checkpoint of a run with --eval-every.
BEST = "best.safetensors"


class RunFolder:
    """The files of a run folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.samples = root / "samples"
        self.metrics = root / "metrics.jsonl"
        self.config = root / "config.json"
        self.best = self.checkpoints / BEST

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

    def update_config(self, config: TrainConfig) -> None:
        """Rewrite config.json when a resume changed the config (a new --steps)."""
        if config != self.read_config():
            atomic_write_bytes(self.config, config.to_json().encode())

    def remove_stale(self) -> None:
        """Remove what writes cut short by a kill left (``.*.part`` files)."""
        for stale in [*remove_stale_parts(self.checkpoints), *remove_stale_parts(self.root)]:
            logger.info("removed %s, left by an interrupted run", stale)

    def latest(self) -> state.TrainState | None:
        return state.latest(self.checkpoints)

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (written after the checkpoint a resume starts from)."""
        records = [r for r in report.read_metrics(self.metrics) if r["step"] <= step]
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in records).encode())

    def models(self) -> list[Path]:
        return sorted(self.root.glob("*.onnx"))


class MetricsLog:
    """metrics.jsonl, appended one JSON line at a time (and flushed, so that
    a kill loses at most the line being written); with ``tensorboard``, the
    step records also go to RUN_DIR/tensorboard."""

    def __init__(self, run: RunFolder, tensorboard: bool = False) -> None:
        self.file = open(run.metrics, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.writer = _tensorboard(run.root) if tensorboard else None

    def write(self, record: dict[str, Any], plot: bool = True) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if plot and self.writer is not None:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(root: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=str(root / "tensorboard"))
