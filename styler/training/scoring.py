"""Scoring while training (``--eval-every``, and in a run with a time
budget): KID of the A -> B generator's outputs on held-out photos against
the B images, so that a run keeps its best checkpoint instead of trusting
that the last one is best.

KID on a few photos is noisy (a checkpoint picked by it on 4 photos need not
be better on others), so at the end the last step replaces the best unless
the best is clearly better: its KID lower by more than twice the two
scores' combined standard deviation.

The reference features are computed once; each evaluation translates the
photos (downscaled to ``max_side`` so that it stays cheap) with the current
generator in eval mode and scores them with :func:`styler.metrics.kid`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from styler import metrics
from styler.errors import StylerError, UsageError
from styler.log import logger
from styler.paths import list_images
from styler.training.checkpointing import BestKeeper
from styler.training.config import TrainConfig
from styler.training.metricslog import MetricsLog
from styler.training.modes.translation import TranslationConfig
from styler.training.trainer import Trainer

#: Photos are downscaled to this longer side for evaluation during training.
EVAL_MAX_SIDE = 512
#: A run with a time budget and no --eval-every scores itself this many times.
BUDGET_EVALS = 10
#: The best replaces the last at the end only when it is better by more
#: than this many standard deviations of the difference.
CLEARLY = 2.0


class Scorer:
    """KID of translated photos against a reference folder."""

    def __init__(
        self, photos: Sequence[Path], reference: str | Path, *, max_side: int = EVAL_MAX_SIDE
    ) -> None:
        from styler.evaluate import folder_features, get_extractor
        from styler.features import check_scalable
        from styler.imageio import load_downscaled

        self.extractor = get_extractor("cpu")
        self.reference, count = folder_features(reference, self.extractor)
        self.photos = load_downscaled(photos, max_side, "evaluation", check_scalable)
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
    autocast: Callable[[], AbstractContextManager[None]],
) -> np.ndarray:
    """One H x W x 3 image in [0, 1] through a generator (eval mode, [-1, 1]),
    reflect-padded to its size multiple and cropped back."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device) * 2 - 1
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    with autocast():
        y = net(x)
    y = y.float()[0, :, :h, :w].clamp(-1, 1).add(1).div(2)
    return y.permute(1, 2, 0).cpu().numpy()


def check_inputs(photos: str | None, reference: str | None) -> None:
    """Refuse, in one line and before any work, --eval-photos or
    --eval-reference that are not folders of images."""
    for flag, folder in (("--eval-photos", photos), ("--eval-reference", reference)):
        if folder:
            list_images(folder, flag)


def make_scorer(
    config: TrainConfig,
    photos: str | None = None,
    reference: str | None = None,
) -> Scorer:
    """The scorer of a run: ``photos`` (default: the held-out A images)
    against ``reference`` (default: the B folder)."""
    if not isinstance(config.mode, TranslationConfig):
        raise UsageError("--eval-every scores translation models, not generation from noise")
    check_inputs(photos, reference)
    if photos:
        files = list_images(photos, "--eval-photos")
    else:
        files = [Path(config.data_a) / name for name in config.holdout_a]
        if not files:
            raise UsageError(
                "--eval-every: no photos were held out (the folder is small); "
                "give some with --eval-photos DIR"
            )
    reference = reference or config.data_b
    if reference is None:
        raise UsageError("--eval-every with --aligned data needs --eval-reference DIR")
    return Scorer(files, reference)


def scorer_for(
    config: TrainConfig, every: int | None, photos: str | None, reference: str | None
) -> Scorer | None:
    """The run's scorer: with --eval-every (``every``), of ``photos`` against
    ``reference`` (read before the run folder is made); without it, for a
    run with a time budget, of the held-out A images against B when there
    are two or more and the feature extractor is installed (else none, said
    in a log line)."""
    if every:
        return make_scorer(config, photos, reference)
    translation = isinstance(config.mode, TranslationConfig) and config.data_b is not None
    if not (config.time_budget and translation and len(config.holdout_a) >= 2):
        return None
    try:
        return make_scorer(config)
    except (ImportError, StylerError) as exc:
        logger.info("not scoring the run as it trains: %s", exc)
        return None


def clearly_better(best: tuple[float, float], last: tuple[float, float]) -> bool:
    """Whether a KID of ``best`` (mean, std) is lower than ``last`` by more
    than :data:`CLEARLY` standard deviations of their difference."""
    spread = math.hypot(best[1], last[1])
    return best[0] < last[0] - CLEARLY * spread


class Evaluator:
    """Scores the trainer's first generator now and then (a line in
    metrics.jsonl each time) and keeps the best-scoring checkpoint."""

    def __init__(self, scorer: Scorer, keeper: BestKeeper) -> None:
        self.scorer = scorer
        self.keeper = keeper

    def evaluate(
        self, trainer: Trainer, step: int, seconds: float, log: MetricsLog, final: bool = False
    ) -> str:
        """Score the trainer at ``step`` into ``log``; a note for the display.
        The ``final`` score (the run's last step) becomes the best unless
        the best so far is clearly better."""
        spec = trainer.exports()[0]
        multiple = trainer.config.mode.size_multiple
        trainer.train(False)
        kid, kid_std = self.scorer.score(
            lambda rgb: translate_with(spec.net, rgb, multiple, trainer.device, trainer.autocast)
        )
        trainer.train(True)
        unmodified = self.scorer.baseline[0]
        record = {"step": step, "eval": True, "kid": kid, "kid_std": kid_std}
        log.write({**record, "kid_unmodified": unmodified}, plot=False)
        info = {"seconds": seconds, "kid": kid, "kid_std": kid_std}
        best = (self.keeper.best, self.keeper.best_std)
        close = final and math.isfinite(kid) and not clearly_better(best, (kid, kid_std))
        if self.keeper.offer(trainer, step, info):
            return f"step {step}: KID {kid:.4f} (best so far; unmodified {unmodified:.4f})"
        if close and self.keeper.keep(trainer, step, info):
            return f"step {step}: KID {kid:.4f} (kept: the best so far is not clearly better)"
        return f"step {step}: KID {kid:.4f} (best {self.keeper.best:.4f})"
