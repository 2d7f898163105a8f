"""metrics.jsonl as a run writes it: one JSON line per step (and per
evaluation), flushed as it goes; with --tensorboard the step records also
go to RUN_DIR/tensorboard. (:mod:`styler.training.report` reads it.)"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from styler.errors import UsageError
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
