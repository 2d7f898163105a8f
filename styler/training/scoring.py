"""Scoring while training (``--eval-every``): KID of the A -> B generator's
outputs on held-out photos against the B images, so that a run keeps its
best checkpoint instead of trusting that the last one is best.

The reference features are computed once; each evaluation translates the
photos (downscaled to ``max_side`` so that it stays cheap) with the current
generator in eval mode and scores them with :func:`styler.metrics.kid`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from styler import metrics
from styler.errors import UsageError
from styler.log import logger

#: Photos are downscaled to this longer side for evaluation during training.
EVAL_MAX_SIDE = 512


class Scorer:
    """KID of translated photos against a reference folder."""

    def __init__(
        self, photos: Sequence[Path], reference: str | Path, *, max_side: int = EVAL_MAX_SIDE
    ) -> None:
        from styler.evaluate import folder_features, get_extractor, load_downscaled

        self.extractor = get_extractor("cpu")
        self.reference, count = folder_features(reference, self.extractor)
        self.photos = load_downscaled(photos, max_side, "evaluation")
        if len(self.photos) < 2:
            raise UsageError("--eval-every needs at least 2 readable photos to score")
        self.baseline = metrics.kid(self.extractor.features(self.photos), self.reference)
        logger.info(
            "evaluation: %d photos against %d reference images; unmodified photos KID %.4f",
            len(self.photos),
            count,
            self.baseline[0],
        )

    def score(self, translate: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        outputs = [translate(photo) for photo in self.photos]
        return metrics.kid(self.extractor.features(outputs), self.reference)


@torch.no_grad()
def translate_with(
    net: nn.Module,
    rgb: np.ndarray,
    multiple: int,
    device: torch.device,
    autocast: Callable[[], object],
) -> np.ndarray:
    """One H x W x 3 image in [0, 1] through a generator (eval mode, [-1, 1]),
    reflect-padded to its size multiple and cropped back."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device) * 2 - 1
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    with autocast():  # type: ignore[attr-defined]
        y = net(x)
    y = y.float()[0, :, :h, :w].clamp(-1, 1).add(1).div(2)
    return y.permute(1, 2, 0).cpu().numpy()
