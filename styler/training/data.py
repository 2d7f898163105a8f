"""Training data: folders -> pairing decision -> decoded-once images -> batches.

Images are decoded with the same faithful loader as ``styler apply`` (EXIF
orientation, every colour mode), scaled so that their shorter side is the
run's load size, and kept in memory as uint8 when they fit. A bad file is
reported once and skipped; it never stops a run.

What each step sees is a pure function of (seed, step, rank): which images,
where they are cropped, whether they are flipped. Nothing about the data
order needs saving in a checkpoint, and a resumed run sees exactly the
batches an uninterrupted one would have seen. Worker threads only build the
planned batches ahead of time.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from styler import imageio
from styler.errors import BadImageError, UsageError
from styler.log import logger
from styler.paths import collect_jobs

#: A folder counts as paired with another when at least this share of its
#: file stems has a partner there.
PAIRED_SHARE = 0.5
#: Held-out images per domain, for sample grids (at most one in ten).
HOLDOUT = 4
#: Memory the decoded images may take before the store decodes on demand.
DEFAULT_CACHE_BYTES = 4 * 1024**3


# -- folders and pairing -------------------------------------------------------


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive, stable order)."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder of images")
    files = []
    for job in collect_jobs([root], recursive=True):
        if job.error:
            logger.warning("%s: %s", job.input, job.error)
        else:
            files.append(job.input)
    if not files:
        raise UsageError(f"{root}: no image files found")
    return files


def stem_key(path: Path, root: Path) -> str:
    """What pairs two files: the path below its folder, without extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def find_pairs(
    files_a: Sequence[Path], root_a: Path, files_b: Sequence[Path], root_b: Path
) -> list[tuple[Path, Path]]:
    """Files of A and B with the same stem, in A's order."""
    by_stem = {stem_key(f, root_b): f for f in files_b}
    return [(f, by_stem[k]) for f in files_a if (k := stem_key(f, root_a)) in by_stem]


def is_paired(n_a: int, n_pairs: int) -> bool:
    """Most of A's stems have a partner in B."""
    return n_a > 0 and n_pairs / n_a >= PAIRED_SHARE


def domain_name(folder: str | Path) -> str:
    """A short name for a domain, from its folder name ("photos", "monet")."""
    name = Path(folder).resolve().name or "images"
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned[:40] or "images"


def choose_holdout(names: Sequence[str], seed: int, count: int = HOLDOUT) -> list[str]:
    """A few names to keep out of training: at most one in ten, chosen by the seed."""
    n = min(count, len(names) // 10)
    if n <= 0:
        return []
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    return sorted(names[int(i)] for i in order[:n])


# -- decoding ------------------------------------------------------------------


def scale_shorter(img: Image.Image, shorter: int) -> Image.Image:
    """Scale so that the shorter side is ``shorter`` (aspect ratio kept)."""
    w, h = img.size
    scale = shorter / min(w, h)
    size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
    if size == (w, h):
        return img
    return img.resize(size, Image.BICUBIC, reducing_gap=3.0)


def decode_rgb8(path: Path) -> Image.Image:
    """An RGB Pillow image of ``path`` (orientation applied, alpha dropped)."""
    decoded = imageio.load_image(path)
    rgb8 = (np.clip(decoded.rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(rgb8, "RGB")


def load_single(path: Path, load_size: int) -> np.ndarray:
    """H x W x 3 uint8, shorter side ``load_size``."""
    return np.asarray(scale_shorter(decode_rgb8(path), load_size))


def load_pair(a: Path, b: Path | None, load_size: int) -> np.ndarray:
    """H x W x 6 uint8: A and B at the same size, so one crop cuts both alike.
    With ``b`` None, ``a`` holds A|B side by side (the aligned format)."""
    img_a = decode_rgb8(a)
    if b is None:
        w, h = img_a.size
        if w < 2:
            raise BadImageError("too narrow to hold two side-by-side images", a)
        half = w // 2
        img_b = img_a.crop((half, 0, 2 * half, h))
        img_a = img_a.crop((0, 0, half, h))
    else:
        img_b = decode_rgb8(b)
    img_a = scale_shorter(img_a, load_size)
    if img_b.size != img_a.size:
        img_b = img_b.resize(img_a.size, Image.BICUBIC, reducing_gap=3.0)
    return np.concatenate([np.asarray(img_a), np.asarray(img_b)], axis=2)


def load_square(path: Path, size: int, grey: bool) -> np.ndarray:
    """size x size x C uint8 (C 1 when ``grey``): the centred square, scaled."""
    img = decode_rgb8(path)
    w, h = img.size
    side = min(w, h)
    img = img.crop(
        ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    )
    if side != size:
        img = img.resize((size, size), Image.LANCZOS if side > size else Image.BICUBIC)
    if grey:
        return np.asarray(img.convert("L"))[:, :, None]
    return np.asarray(img)


@dataclass(frozen=True)
class Source:
    """One training example on disk: a file (``single``: scaled to the load
    size; ``square``: the centred square at the load size, for generation),
    or a pair of files (``pair``; ``b`` None for one side-by-side image)."""

    a: Path
    b: Path | None = None
    layout: str = "single"
    grey: bool = False

    def load(self, load_size: int) -> np.ndarray:
        if self.layout == "pair":
            return load_pair(self.a, self.b, load_size)
        if self.layout == "square":
            return load_square(self.a, load_size, self.grey)
        return load_single(self.a, load_size)

    @property
    def label(self) -> str:
        return str(self.a) if self.b is None else f"{self.a} + {self.b}"


class ImageStore:
    """Decoded training images: every source is decoded once at start (which
    also finds the bad ones) and kept in memory while the total fits in
    ``cache_bytes``; the rest are decoded again when a batch needs them."""

    def __init__(
        self,
        sources: Sequence[Source],
        load_size: int,
        *,
        workers: int = 2,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        what: str = "images",
    ) -> None:
        self.load_size = load_size
        self.sources: list[Source] = []
        self.cached: list[np.ndarray | None] = []
        self.bad: list[tuple[str, str]] = []
        used = 0
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="styler-load") as pool:
            futures = [pool.submit(s.load, load_size) for s in sources]
            for source, future in zip(sources, futures, strict=True):
                try:
                    array = future.result()
                except BadImageError as exc:
                    logger.warning("skipping %s", exc)
                    self.bad.append((source.label, exc.reason))
                    continue
                self.sources.append(source)
                keep = used + array.nbytes <= cache_bytes
                used += array.nbytes if keep else 0
                self.cached.append(array if keep else None)
        if not self.sources:
            raise UsageError(f"no usable {what}: every file failed to load")
        self.in_memory = sum(a is not None for a in self.cached)
        self.memory_bytes = used

    def __len__(self) -> int:
        return len(self.sources)

    def get(self, index: int) -> np.ndarray:
        array = self.cached[index]
        if array is not None:
            return array
        try:
            return self.sources[index].load(self.load_size)
        except BadImageError as exc:  # changed on disk since the start
            raise UsageError(f"a training image went bad during the run: {exc}") from None


# -- what each step sees ---------------------------------------------------------


def seeded(*parts: object) -> torch.Generator:
    """A generator seeded by a stable hash of ``parts`` (never Python's hash)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass(frozen=True)
class Pick:
    """One example of a batch: which image, where to crop (as fractions of
    the free room), whether to flip."""

    index: int
    top: float
    left: float
    flip: bool


@lru_cache(maxsize=8)
def epoch_order(n: int, seed: int, epoch: int, stream: str) -> torch.Tensor:
    return torch.randperm(n, generator=seeded(seed, stream, "epoch", epoch))


def plan(
    n: int,
    *,
    seed: int,
    step: int,
    batch: int,
    stream: str,
    flip: bool,
    rank: int = 0,
    world: int = 1,
    sequential: bool = True,
) -> list[Pick]:
    """The picks of one step for one stream of images: ``sequential`` walks a
    fresh permutation each epoch (every image once per epoch, as
    pytorch-CycleGAN-and-pix2pix does for A); otherwise images are drawn at
    random (as it does for B)."""
    gen = seeded(seed, stream, "step", step, rank)
    picks = []
    for j in range(batch):
        if sequential:
            position = (step * world + rank) * batch + j
            epoch, offset = divmod(position, n)
            index = int(epoch_order(n, seed, epoch, stream)[offset])
        else:
            index = int(torch.randint(n, (1,), generator=gen))
        top, left, coin = torch.rand(3, generator=gen).tolist()
        picks.append(Pick(index, top, left, flip and coin < 0.5))
    return picks


def crop(array: np.ndarray, size: int, pick: Pick) -> np.ndarray:
    h, w = array.shape[:2]
    y = min(int(pick.top * (h - size + 1)), h - size)
    x = min(int(pick.left * (w - size + 1)), w - size)
    out = array[y : y + size, x : x + size]
    return out[:, ::-1] if pick.flip else out


def to_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 N x (H x W x C) -> float N x C x H x W in [-1, 1].

    In numpy, with torch only wrapping the result: this runs in the threads
    that build batches during the training step, and a torch operation there
    starts an OpenMP team of that thread's own, which competes with the
    step's for the cores. `styler train` at 128 px, four alternating pairs
    of runs: a median 1.60 s per step this way against 1.71 s with the
    conversion in torch (the same float32 values)."""
    stacked = np.stack(arrays).transpose(0, 3, 1, 2)
    x = stacked.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(x))


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    h, w = array.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return array[y : y + size, x : x + size]


# -- the two kinds of data --------------------------------------------------------


class TrainingData(abc.ABC):
    """Batches for one mode: ``batch(step)`` -> {"A": tensor, "B": tensor}.
    A subclass says how many images an epoch walks, how to build one step's
    batch, and what the fixed sample inputs are."""

    def __init__(
        self,
        *,
        size: int,
        batch_size: int,
        seed: int,
        flip: bool,
        rank: int = 0,
        world: int = 1,
        workers: int = 2,
        ahead: int = 2,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.flip = flip
        self.rank = rank
        self.world = world
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="styler-batch")
        self.ahead = ahead
        self.pending: dict[int, Future[dict[str, torch.Tensor]]] = {}
        #: Side of the square sample images (cut from images at the load size).
        self.sample_side = size

    @property
    @abc.abstractmethod
    def epoch_images(self) -> int:
        """Images one epoch walks (over all processes)."""

    @property
    def epoch_steps(self) -> int:
        return max(1, math.ceil(self.epoch_images / (self.batch_size * self.world)))

    @abc.abstractmethod
    def build(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` (called in worker threads)."""

    def picks(self, n: int, step: int, stream: str, sequential: bool = True) -> list[Pick]:
        """This process's picks of ``step`` from a stream of ``n`` images."""
        return plan(
            n,
            seed=self.seed,
            step=step,
            batch=self.batch_size,
            stream=stream,
            flip=self.flip,
            rank=self.rank,
            world=self.world,
            sequential=sequential,
        )

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step``, built ahead in worker threads."""
        for s in range(step, step + self.ahead + 1):
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.build, s)
        for s in [s for s in self.pending if s < step]:
            self.pending.pop(s).cancel()
        return self.pending.pop(step).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    @abc.abstractmethod
    def samples(self) -> dict[str, torch.Tensor]:
        """Fixed inputs for sample grids (held-out images, centre-cropped)."""


class UnpairedData(TrainingData):
    """Two independent folders (CycleGAN): A walked in epochs, B drawn at random."""

    def __init__(
        self,
        store_a: ImageStore,
        store_b: ImageStore,
        samples_a: list[np.ndarray],
        samples_b: list[np.ndarray],
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store_a, self.store_b = store_a, store_b
        self.samples_a, self.samples_b = samples_a, samples_b

    @property
    def epoch_images(self) -> int:
        return max(len(self.store_a), len(self.store_b))

    def build(self, step: int) -> dict[str, torch.Tensor]:
        out = {}
        for name, store, sequential in (("A", self.store_a, True), ("B", self.store_b, False)):
            picks = self.picks(len(store), step, name, sequential)
            out[name] = to_tensor([crop(store.get(p.index), self.size, p) for p in picks])
        return out

    def samples(self) -> dict[str, torch.Tensor]:
        return {
            "A": to_tensor([center_crop(a, self.sample_side) for a in self.samples_a]),
            "B": to_tensor([center_crop(b, self.sample_side) for b in self.samples_b]),
        }


class PairedData(TrainingData):
    """Pairs (pix2pix): one crop and one flip shared by A and B."""

    def __init__(self, store: ImageStore, samples: list[np.ndarray], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.sample_pairs = samples

    @property
    def epoch_images(self) -> int:
        return len(self.store)

    def build(self, step: int) -> dict[str, torch.Tensor]:
        picks = self.picks(len(self.store), step, "AB")
        x = to_tensor([crop(self.store.get(p.index), self.size, p) for p in picks])
        return {"A": x[:, :3], "B": x[:, 3:]}

    def samples(self) -> dict[str, torch.Tensor]:
        x = to_tensor([center_crop(p, self.sample_side) for p in self.sample_pairs])
        return {"A": x[:, :3], "B": x[:, 3:]}


class ImageData(TrainingData):
    """One folder of whole images (generation), with class labels when the
    folder holds one subfolder per class."""

    def __init__(self, store: ImageStore, labels: list[int], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.labels = torch.tensor(labels, dtype=torch.long)

    @property
    def epoch_images(self) -> int:
        return len(self.store)

    def build(self, step: int) -> dict[str, torch.Tensor]:
        picks = self.picks(len(self.store), step, "images")
        arrays = [self.store.get(p.index) for p in picks]
        arrays = [a[:, ::-1] if p.flip else a for a, p in zip(arrays, picks, strict=True)]
        return {"image": to_tensor(arrays), "label": self.labels[[p.index for p in picks]]}

    def samples(self) -> dict[str, torch.Tensor]:
        return {}


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
    files = list_images(root)
    parts = [f.relative_to(root).parts for f in files]
    if all(len(p) >= 2 for p in parts):
        classes = sorted({p[0] for p in parts})
        if len(classes) >= 2:
            index = {c: i for i, c in enumerate(classes)}
            return ClassScan(files, [index[p[0]] for p in parts], tuple(classes))
    return ClassScan(files, [0] * len(files), ())


def looks_grey(files: Sequence[Path], sample: int = 32) -> bool:
    """Whether the first images are all greyscale (decoded R = G = B)."""
    seen = 0
    for path in files[:sample]:
        try:
            arr = np.asarray(decode_rgb8(path))
        except BadImageError:
            continue
        seen += 1
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
        ):
            return False
    return seen > 0


def typical_side(files: Sequence[Path], sample: int = 32) -> int:
    """The median shorter side of the first images (their headers only)."""
    sides = []
    for path in files[:sample]:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else 64


def image_store_for_classes(
    found: ClassScan, size: int, grey: bool, *, workers: int, cache_bytes: int
) -> tuple[ImageStore, list[int]]:
    """Decoded images and the labels of those that decoded."""
    sources = [Source(f, layout="square", grey=grey) for f in found.files]
    label_of = {s.a: label for s, label in zip(sources, found.labels, strict=True)}
    store = ImageStore(sources, size, workers=workers, cache_bytes=cache_bytes)
    return store, [label_of[s.a] for s in store.sources]


# -- putting it together -----------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What is in the folders, before anything is decoded."""

    mode: str
    sources_a: list[Source]
    sources_b: list[Source]
    holdout_a: list[str]
    holdout_b: list[str]
    unpaired_left: int = 0


def scan(
    data_a: str | Path,
    data_b: str | Path | None,
    *,
    mode: str = "auto",
    seed: int = 0,
    holdout_a: Sequence[str] | None = None,
    holdout_b: Sequence[str] | None = None,
) -> Scan:
    """List the folders, decide paired or unpaired, and set images aside for
    samples. ``holdout_*`` given (on resume) are used as they are."""
    root_a = Path(data_a)
    files_a = list_images(root_a)
    names_a = [f.relative_to(root_a).as_posix() for f in files_a]
    if data_b is None:  # one folder of side-by-side A|B images
        if mode == "cyclegan":
            raise UsageError("--aligned data is paired: it trains pix2pix, not cyclegan")
        hold = list(holdout_a) if holdout_a is not None else choose_holdout(names_a, seed)
        sources = [Source(f, None, layout="pair") for f in files_a]
        return Scan("pix2pix", sources, [], hold, [])
    root_b = Path(data_b)
    files_b = list_images(root_b)
    pairs = find_pairs(files_a, root_a, files_b, root_b)
    paired = is_paired(len(files_a), len(pairs))
    chosen = mode if mode != "auto" else ("pix2pix" if paired else "cyclegan")
    if chosen == "pix2pix":
        if not pairs:
            raise UsageError(
                f"pix2pix needs pairs: no file in {root_a} has a file of the same name in {root_b}"
            )
        names = [a.relative_to(root_a).as_posix() for a, _ in pairs]
        hold = list(holdout_a) if holdout_a is not None else choose_holdout(names, seed)
        sources = [Source(a, b, layout="pair") for a, b in pairs]
        return Scan("pix2pix", sources, [], hold, [], unpaired_left=len(files_a) - len(pairs))
    names_b = [f.relative_to(root_b).as_posix() for f in files_b]
    hold_a = list(holdout_a) if holdout_a is not None else choose_holdout(names_a, seed)
    hold_b = list(holdout_b) if holdout_b is not None else choose_holdout(names_b, seed + 1)
    return Scan(
        "cyclegan",
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


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2)))
