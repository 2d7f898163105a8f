"""A run's data: folders -> pairing decision -> decoded-once images -> batches.

:func:`scan` and :func:`scan_classes` say what is in the folders before
anything is decoded (pairs or not, held-out images, class subfolders);
:func:`load_data` is the one constructor of a run's data: it decodes the
images once (:mod:`~styler.training.images`) and returns the batches of the
mode's data layout (:mod:`~styler.training.batches`). A mode's config says
its layout: :class:`Unpaired`, :class:`Paired` or :class:`Images`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from styler.errors import BadImageError, UsageError
from styler.fsutil import resolved
from styler.log import logger
from styler.paths import list_images, pair_by_stem
from styler.training import limits
from styler.training.batches import (
    Batching,
    ImageData,
    PairedData,
    TrainingData,
    UnpairedData,
    default_workers,
)
from styler.training.images import DEFAULT_CACHE_BYTES, ImageStore, Source

if TYPE_CHECKING:
    from styler.training.config import TrainConfig

#: A folder counts as paired with another when at least this share of its
#: file stems has a partner there.
PAIRED_SHARE = 0.5
#: Held-out images per domain, for sample grids (at most one in ten).
HOLDOUT = 4


# -- what is in the folders -----------------------------------------------------------


def is_paired(n_a: int, n_pairs: int) -> bool:
    """Most of A's stems have a partner in B."""
    return n_a > 0 and n_pairs / n_a >= PAIRED_SHARE


def domain_name(folder: str | Path) -> str:
    """A short name for a domain, from its folder name ("photos", "monet"):
    letters, digits, ``-`` and ``_``, never starting with ``-`` (it names
    files, and a shell would read it as an option), cut to at most
    40 characters and :data:`~styler.training.limits.DOMAIN_FROM_FOLDER` bytes."""
    name = resolved(folder).name or "images"
    cleaned = (
        "".join(c if (c.isalnum() and c.isprintable()) or c in "-_" else "_" for c in name)
        .lstrip("-_")
        .rstrip("_")[:40]
    )
    return cleaned.encode()[: limits.DOMAIN_FROM_FOLDER].decode(errors="ignore") or "images"


def training_images(folder: str | Path, say: bool = True) -> list[Path]:
    """The image files below ``folder`` that are training data: those inside
    a styler run folder (one holding config.json and checkpoints/, such as
    the run's own ``-o`` inside a data folder, whose sample grids grow with
    every run) are left out, and (with ``say``) each such folder is said."""
    root = Path(folder)
    files = list_images(root)
    verdict: dict[Path, bool] = {}
    kept, left = [], set()
    for file in files:
        below = root
        for part in file.relative_to(root).parts[:-1]:
            below = below / part
            if below not in verdict:
                verdict[below] = is_run_folder(below)
            if verdict[below]:
                left.add(below)
                break
        else:
            kept.append(file)
    for run in sorted(left) if say else ():
        logger.warning("leaving out %s: a styler run folder, not training data", run)
    if not kept:
        raise UsageError("no image files found outside styler run folders", root)
    return kept


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is (or was begun as) a styler run folder."""
    # (os.path's checks are False where a path cannot be checked: never an OSError)
    return os.path.isfile(folder / "config.json") and os.path.isdir(folder / "checkpoints")


def choose_holdout(names: Sequence[str], seed: int, count: int = HOLDOUT) -> list[str]:
    """A few names to keep out of training: at most one in ten, chosen by the seed."""
    n = min(count, len(names) // 10)
    if n <= 0:
        return []
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    return sorted(names[int(i)] for i in order[:n])


@dataclass(frozen=True)
class ClassScan:
    """A folder of images for generation: files, their labels, class names."""

    files: list[Path]
    labels: list[int]
    classes: tuple[str, ...]


def scan_classes(folder: str | Path) -> ClassScan:
    """All images below ``folder``; class-conditional when every image sits in
    a first-level subfolder and there are at least two of them (the subfolder
    names, sorted, are the classes)."""
    root = Path(folder)
    files = training_images(root)
    parts = [f.relative_to(root).parts for f in files]
    if all(len(p) >= 2 for p in parts):
        classes = sorted({p[0] for p in parts})
        if len(classes) >= 2:
            index = {c: i for i, c in enumerate(classes)}
            return ClassScan(files, [index[p[0]] for p in parts], tuple(classes))
    return ClassScan(files, [0] * len(files), ())


@dataclass(frozen=True)
class Scan:
    """What is in the folders, before anything is decoded."""

    #: Whether A and B are pairs of images (pix2pix), not two unrelated sets.
    paired: bool
    sources_a: list[Source]
    sources_b: list[Source]
    holdout_a: list[str]
    holdout_b: list[str]
    unpaired_left: int = 0


def scan(
    data_a: str | Path,
    data_b: str | Path | None,
    *,
    paired: bool | None = None,
    seed: int = 0,
    holdout_a: Sequence[str] | None = None,
    holdout_b: Sequence[str] | None = None,
    say: bool = True,
) -> Scan:
    """List the folders, decide paired or unpaired (one folder of side-by-side
    images is paired; two folders are when most of A's stems have a partner
    in B, unless ``paired`` says), and set images aside for samples.
    ``holdout_*`` given (on resume) are used as they are; ``say`` whether
    to say which run folders inside them are left out."""
    root_a = Path(data_a)
    files_a = training_images(root_a, say)
    names_a = [f.relative_to(root_a).as_posix() for f in files_a]
    if data_b is None:  # one folder of side-by-side A|B images
        hold = list(holdout_a) if holdout_a is not None else choose_holdout(names_a, seed)
        sources = [Source(f, None, layout="pair") for f in files_a]
        return Scan(True, sources, [], hold, [])
    root_b = Path(data_b)
    files_b = training_images(root_b, say)
    pairs = pair_by_stem(files_a, root_a, files_b, root_b)
    if paired if paired is not None else is_paired(len(files_a), len(pairs)):
        if not pairs:
            raise UsageError(
                f"pix2pix needs pairs: no file in {root_a} has a file of the same name in {root_b}"
            )
        names = [a.relative_to(root_a).as_posix() for a, _ in pairs]
        hold = list(holdout_a) if holdout_a is not None else choose_holdout(names, seed)
        sources = [Source(a, b, layout="pair") for a, b in pairs]
        return Scan(True, sources, [], hold, [], unpaired_left=len(files_a) - len(pairs))
    names_b = [f.relative_to(root_b).as_posix() for f in files_b]
    hold_a = list(holdout_a) if holdout_a is not None else choose_holdout(names_a, seed)
    hold_b = list(holdout_b) if holdout_b is not None else choose_holdout(names_b, seed + 1)
    return Scan(
        False,
        [Source(f) for f in files_a],
        [Source(f) for f in files_b],
        hold_a,
        hold_b,
    )


def split(
    sources: list[Source], root: Path, held: Sequence[str]
) -> tuple[list[Source], list[Source]]:
    """(training sources, held-out sources)."""
    held_set = set(held)
    train, out = [], []
    for s in sources:
        (out if s.a.relative_to(root).as_posix() in held_set else train).append(s)
    return train, out


def sample_arrays(
    held: list[Source], train: list[Source], size: int, count: int = HOLDOUT
) -> list[np.ndarray]:
    """Images for sample grids, loaded with their shorter side at ``size``:
    the held-out ones or, when a folder is too small to spare any, its first
    training images."""
    arrays = []
    for s in held:
        try:
            arrays.append(s.load(size))
        except BadImageError as exc:
            logger.warning("skipping held-out %s", exc)
    if arrays:
        return arrays
    for s in train:  # none held out, or none readable: the first good training images
        try:
            arrays.append(s.load(size))
        except BadImageError:
            continue  # reported when the store was built
        if len(arrays) == count:
            break
    return arrays


# -- the run's data ----------------------------------------------------------------------

#: What setup found in the folders (None: scan them again, as on resume).
Found = Scan | ClassScan | None


def _report_store(store: ImageStore, what: str) -> None:
    logger.info(
        "%s: %d usable (%d skipped), %d in memory (%.0f MB)",
        what,
        len(store),
        len(store.bad),
        store.in_memory,
        store.memory_bytes / 2**20,
    )


def _scan_again(config: TrainConfig, paired: bool) -> Scan:
    """The scan of a run's folders with its held-out images (on resume)."""
    return scan(
        config.data_a,
        config.data_b,
        paired=paired,
        seed=config.seed,
        holdout_a=config.holdout_a,
        holdout_b=config.holdout_b,
    )


@dataclass(frozen=True)
class Unpaired:
    """Two folders of unrelated images (CycleGAN): A walked in epochs, B drawn
    at random; sample grids show squares of ``sample_side`` of held-out images."""

    sample_side: int

    def load(
        self, config: TrainConfig, found: Found, batching: Batching, workers: int, cache: int
    ) -> TrainingData:
        found = found if isinstance(found, Scan) else _scan_again(config, paired=False)
        assert config.data_b is not None
        train_a, held_a = split(found.sources_a, Path(config.data_a), config.holdout_a)
        train_b, held_b = split(found.sources_b, Path(config.data_b), config.holdout_b)
        stores = [
            ImageStore(
                train,
                config.load_size,
                workers=workers,
                cache_bytes=cache // 2,
                what=f"images in {folder}",
            )
            for train, folder in ((train_a, config.data_a), (train_b, config.data_b))
        ]
        for store, name in zip(stores, config.domains, strict=True):
            _report_store(store, name)
        samples_a = sample_arrays(held_a, train_a, config.load_size)
        samples_b = sample_arrays(held_b, train_b, config.load_size)
        return UnpairedData(
            *stores, samples_a, samples_b, batching, workers=workers, sample_side=self.sample_side
        )


@dataclass(frozen=True)
class Paired:
    """Pairs of images, cropped and flipped alike (pix2pix)."""

    sample_side: int

    def load(
        self, config: TrainConfig, found: Found, batching: Batching, workers: int, cache: int
    ) -> TrainingData:
        found = found if isinstance(found, Scan) else _scan_again(config, paired=True)
        train, held = split(found.sources_a, Path(config.data_a), config.holdout_a)
        store = ImageStore(
            train, config.load_size, workers=workers, cache_bytes=cache, what="pairs"
        )
        _report_store(store, "pairs")
        samples = sample_arrays(held, train, config.load_size)
        return PairedData(store, samples, batching, workers=workers, sample_side=self.sample_side)


@dataclass(frozen=True)
class Images:
    """One folder of whole images (generation from noise), with the labels of
    ``classes`` (its subfolders) when class-conditional."""

    classes: tuple[str, ...]
    grey: bool

    def load(
        self, config: TrainConfig, found: Found, batching: Batching, workers: int, cache: int
    ) -> TrainingData:
        found = found if isinstance(found, ClassScan) else scan_classes(config.data_a)
        if found.classes != self.classes:
            raise UsageError(
                f"the class folders of {config.data_a} changed since the run began "
                f"({', '.join(self.classes) or 'none'} -> {', '.join(found.classes) or 'none'})"
            )
        sources = [Source(f, layout="square", grey=self.grey) for f in found.files]
        label_of = {s.a: label for s, label in zip(sources, found.labels, strict=True)}
        store = ImageStore(sources, config.size, workers=workers, cache_bytes=cache)
        _report_store(store, config.domains[0])
        labels = [label_of[s.a] for s in store.sources]
        return ImageData(store, labels, batching, workers=workers)


Layout = Unpaired | Paired | Images


def load_data(
    config: TrainConfig,
    *,
    workers: int | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    rank: int = 0,
    world: int = 1,
    found: Found = None,
) -> TrainingData:
    """The data of a run: its folders scanned (unless ``found`` holds the
    scan the config was made from), its images decoded once, and its
    batches planned for process ``rank`` of ``world``."""
    batching = Batching(config.size, config.batch_size, config.seed, config.flip, rank, world)
    layout = config.mode.layout(config)
    return layout.load(config, found, batching, workers or default_workers(), cache_bytes)
