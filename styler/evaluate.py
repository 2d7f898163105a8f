"""How well a model does its job: ``styler eval`` and scores during training.

A style model should make photos look like the reference paintings. The
distance between the distribution of its outputs and that of the reference
images is measured with KID and FID in the feature space of an ImageNet
EfficientNet-Lite0 (:mod:`styler.features`); the same numbers for the
unmodified photos are the baseline the model must beat. With paired data
(pix2pix), outputs are also compared with their ground truth by PSNR and SSIM,
beside the same numbers for the unmodified photos.

Images stream through: each photo is decoded, styled at full resolution and
reduced to features before the next ones, so memory does not grow with the
number of images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from styler import imageio, metrics
from styler.errors import BadImageError, BadModelError, InferenceError, UsageError
from styler.log import logger
from styler.paths import list_images, pair_by_stem
from styler.runtime import model_runs

if TYPE_CHECKING:
    from styler.features import FeatureExtractor

#: Images whose crops go through the network together.
IMAGES_PER_CALL = 8


@dataclass
class Scores:
    """How far one set of images is from the reference style (KID, FID) and,
    with paired data, from the ground truth (mean PSNR in dB, mean SSIM)."""

    kid: float
    kid_std: float
    fid: float
    psnr: float | None = None
    ssim: float | None = None


@dataclass
class EvalReport:
    """What ``styler eval`` measured: ``styled`` (the model's outputs) against
    ``photos`` (the unmodified photos, the baseline)."""

    model: str
    styled: Scores
    photos: Scores
    photo_count: int
    reference_count: int
    photo_crops: int
    reference_crops: int
    pair_count: int | None = None
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seconds_model: float = 0.0
    seconds_features: float = 0.0
    crops_per_image: int = 5
    extractor: str = ""

    @property
    def kid_ratio(self) -> float:
        """The outputs' KID over the unmodified photos': below 1, the model
        brings them closer to the style (0.5: half as far); NaN when the
        photos' KID is not above 0 (they are already in the style)."""
        return self.styled.kid / self.photos.kid if self.photos.kid > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; an infinite PSNR (identical images) and an
        undefined ratio are None."""
        return _finite({**dataclasses.asdict(self), "kid_ratio": self.kid_ratio})


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _features_module() -> Any:
    """:mod:`styler.features`, imported on first use (it needs torch)."""
    from styler import features

    return features


# -- listing ----------------------------------------------------------------------


def match_targets(photos: Sequence[Path], root: Path, targets: Path) -> dict[Path, Path]:
    """For each photo, the target with the same stem and the same relative
    folder below ``targets`` (the first in sorted order if several formats share
    it). Photos without a target are left out, with a warning."""
    pairs = dict(pair_by_stem(photos, root, list_images(targets, "targets"), targets))
    missing = len(photos) - len(pairs)
    if not pairs:
        raise UsageError(f"no photo in {root} has a target with the same name", targets)
    if missing:
        logger.warning(
            "%d of %d photos have no target in %s: PSNR and SSIM leave them out",
            missing,
            len(photos),
            targets,
        )
    return pairs


# -- loading ----------------------------------------------------------------------


def _load(path: Path, skipped: list[str], max_side: int | None = None) -> np.ndarray | None:
    """The RGB of ``path`` (downscaled to ``max_side``), or None with a
    warning and ``path`` added to ``skipped`` when it cannot be read."""
    try:
        image = imageio.load_image(path)
        if max_side is not None:
            image = imageio.limit_size(image, max_side)
        _features_module().check_scalable(image.rgb, path)
    except BadImageError as exc:
        logger.warning("%s (skipped)", exc)
        skipped.append(str(path))
        return None
    return image.rgb


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def files_features(
    files: Sequence[Path],
    extractor: FeatureExtractor,
    skipped: list[str] | None = None,
    max_side: int | None = None,
) -> tuple[np.ndarray, int]:
    """Features of every readable file (five crops each) and the number of
    images read; unreadable files are skipped with a warning."""
    skipped = [] if skipped is None else skipped
    parts: list[np.ndarray] = [np.zeros((0, _features_module().FEATURES))]
    count = 0
    crops_of = _features_module().crops_of
    for chunk in _chunks(files, IMAGES_PER_CALL):
        # Each image is reduced to its crops at once: only those are kept.
        crops = [
            crops_of([im]) for im in (_load(p, skipped, max_side) for p in chunk) if im is not None
        ]
        count += len(crops)
        if crops:
            parts.append(extractor.crop_features(np.concatenate(crops)))
    return np.concatenate(parts), count


def folder_features(
    folder: str | Path, extractor: FeatureExtractor, skipped: list[str] | None = None
) -> tuple[np.ndarray, int]:
    """Features of every readable image below ``folder`` and their number.
    Compute this once for the reference style and score many sets of images
    against it (:func:`kid_against`)."""
    features, count = files_features(list_images(folder, "reference"), extractor, skipped)
    if count == 0:
        raise UsageError("reference: no readable image", folder)
    return features, count


# -- scores for training ------------------------------------------------------------


def get_extractor(device: str = "cpu") -> FeatureExtractor:
    """A new :class:`~styler.features.FeatureExtractor` (load it once and
    pass it around: a training loop scores many times)."""
    return _features_module().FeatureExtractor(device=device)


def kid_against(
    reference: np.ndarray,
    images: Sequence[np.ndarray],
    extractor: FeatureExtractor | None = None,
    subset_size: int = 1000,
) -> tuple[float, float]:
    """KID (mean, std) of ``images`` (H x W x 3 float arrays in [0, 1], e.g.
    generator outputs during training) against precomputed ``reference``
    features (from :func:`folder_features`), without an ONNX model."""
    extractor = extractor or get_extractor()
    return metrics.kid(extractor.features(images), reference, subset_size=subset_size)


def fid_against(
    reference: np.ndarray, images: Sequence[np.ndarray], extractor: FeatureExtractor | None = None
) -> float:
    """FID of ``images`` against precomputed ``reference`` features."""
    extractor = extractor or get_extractor()
    return metrics.fid(extractor.features(images), reference)


# -- styler eval --------------------------------------------------------------------


@dataclass
class _Accumulated:
    """What the pass over the photos collects."""

    styled: list[np.ndarray] = field(default_factory=list)
    photos: list[np.ndarray] = field(default_factory=list)
    styled_psnr: list[float] = field(default_factory=list)
    styled_ssim: list[float] = field(default_factory=list)
    photos_psnr: list[float] = field(default_factory=list)
    photos_ssim: list[float] = field(default_factory=list)
    count: int = 0
    seconds_model: float = 0.0
    seconds_features: float = 0.0


def _compare_with_target(
    path: Path,
    target: Path,
    rgb: np.ndarray,
    out: np.ndarray,
    acc: _Accumulated,
    skipped: list[str],
    max_side: int | None,
) -> None:
    """PSNR and SSIM of the output and of the photo against ``target``."""
    truth = _load(target, skipped, max_side)
    if truth is None:
        return
    if truth.shape != out.shape:
        logger.warning(
            "%s: target %s is %d x %d, the output %d x %d: left out of PSNR and SSIM",
            path,
            target,
            truth.shape[1],
            truth.shape[0],
            out.shape[1],
            out.shape[0],
        )
        return
    if min(out.shape[:2]) < metrics.SSIM_WINDOW:  # (PSNR and SSIM over the same photos)
        logger.warning(
            "%s: %d x %d, narrower than SSIM's %d-pixel window: left out of PSNR and SSIM",
            path,
            out.shape[1],
            out.shape[0],
            metrics.SSIM_WINDOW,
        )
        return
    acc.styled_psnr.append(metrics.psnr(out, truth))
    acc.styled_ssim.append(metrics.ssim(out, truth))
    acc.photos_psnr.append(metrics.psnr(rgb, truth))
    acc.photos_ssim.append(metrics.ssim(rgb, truth))


def _style_photos(
    files: Sequence[Path],
    stylizer: Any,
    extractor: FeatureExtractor,
    pairs: dict[Path, Path] | None,
    skipped: list[str],
    max_side: int | None,
) -> _Accumulated:
    """Style every photo, keep the features of output and photo, and compare
    both with the target when there is one."""
    crops_of = _features_module().crops_of
    acc = _Accumulated()
    for chunk in _chunks(files, IMAGES_PER_CALL):
        # Only the small crops of each full-resolution image are kept.
        inputs, outputs = [], []
        for path in chunk:
            rgb = _load(path, skipped, max_side)
            if rgb is None:
                continue
            start = time.perf_counter()
            try:
                with model_runs(stylizer.model.path):
                    out = stylizer.apply_array(rgb)
            except InferenceError as exc:  # no score means anything then
                raise BadModelError(f"{exc.reason} (on {path})", stylizer.model.path) from None
            acc.seconds_model += time.perf_counter() - start
            logger.info("%s: styled (%d x %d)", path, rgb.shape[1], rgb.shape[0])
            if pairs is not None and path in pairs:
                _compare_with_target(path, pairs[path], rgb, out, acc, skipped, max_side)
            inputs.append(crops_of([rgb]))
            outputs.append(crops_of([out]))
        if inputs:
            start = time.perf_counter()
            acc.photos.append(extractor.crop_features(np.concatenate(inputs)))
            acc.styled.append(extractor.crop_features(np.concatenate(outputs)))
            acc.seconds_features += time.perf_counter() - start
            acc.count += len(inputs)
    return acc


def _set_scores(
    x: np.ndarray, reference: np.ndarray, psnr: list[float], ssim: list[float], paired: bool
) -> Scores:
    kid_mean, kid_std = metrics.kid(x, reference)
    return Scores(
        kid=kid_mean,
        kid_std=kid_std,
        fid=metrics.fid(x, reference),
        psnr=float(np.mean(psnr)) if paired and psnr else None,
        ssim=float(np.mean(ssim)) if paired and ssim else None,
    )


def evaluate(
    model: str | Path,
    photos: str | Path,
    reference: str | Path,
    targets: str | Path | None = None,
    *,
    device: str = "auto",
    max_side: int | None = None,
    keep_colours: bool | None = None,
) -> EvalReport:
    """Score ``model`` on the images below ``photos`` against the style of the
    images below ``reference`` (KID, FID), beside the unmodified photos as a
    baseline; with ``targets`` (paired ground truth: same stem, same relative
    folder), also mean PSNR and SSIM. ``max_side`` downscales photos (and
    targets) first; the outputs keep the photos' colours as ``keep_colours``
    says (None: as the model says, as `styler apply` does). Unreadable
    images are skipped with a warning and listed."""
    from styler.apply import Stylizer

    begin = time.perf_counter()
    if max_side is not None and max_side < 1:
        raise UsageError(f"max side must be positive, got {max_side}")
    photos, reference = Path(photos), Path(reference)
    files = list_images(photos, "photos")
    reference_files = list_images(reference, "reference")
    pairs = match_targets(files, photos, Path(targets)) if targets is not None else None
    extractor = get_extractor(device)  # first: says at once when the extra is missing
    stylizer = Stylizer(model, device=device, keep_colours=keep_colours)
    skipped: list[str] = []
    start = time.perf_counter()
    ref, ref_count = files_features(reference_files, extractor, skipped)
    if ref_count == 0:
        raise UsageError("reference: no readable image", reference)
    seconds_reference = time.perf_counter() - start
    acc = _style_photos(files, stylizer, extractor, pairs, skipped, max_side)
    if acc.count == 0:
        raise UsageError("photos: no readable image", photos)
    paired = pairs is not None
    styled = np.concatenate(acc.styled)
    plain = np.concatenate(acc.photos)
    return EvalReport(
        model=str(stylizer.model.path),
        styled=_set_scores(styled, ref, acc.styled_psnr, acc.styled_ssim, paired),
        photos=_set_scores(plain, ref, acc.photos_psnr, acc.photos_ssim, paired),
        photo_count=acc.count,
        reference_count=ref_count,
        photo_crops=len(plain),
        reference_crops=len(ref),
        pair_count=len(acc.styled_psnr) if paired else None,
        skipped=skipped,
        seconds=time.perf_counter() - begin,
        seconds_model=acc.seconds_model,
        seconds_features=acc.seconds_features + seconds_reference,
        crops_per_image=_features_module().CROPS_PER_IMAGE,
        extractor=_features_module().NAME,
    )
