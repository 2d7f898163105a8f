"""Training images: decoded once, scaled to the run's load size, kept in
memory as uint8 when they fit (:class:`ImageStore`).

Images are decoded with the same faithful loader as ``styler apply`` (EXIF
orientation, every colour mode). A bad file is reported once and skipped; it
never stops a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from styler import imageio
from styler.errors import BadImageError, UsageError
from styler.log import logger

#: Memory the decoded images may take before the store decodes on demand.
DEFAULT_CACHE_BYTES = 4 * 1024**3


#: Largest image (pixels) a training image is scaled to: a panorama 4 times
#: as wide as the largest load size (768 MB as RGB). A longer strip would be
#: mostly never cropped, and could take any memory.
MAX_SCALED_PIXELS = 2**28


def scale_shorter(img: Image.Image, shorter: int, path: Path | None = None) -> Image.Image:
    """Scale so that the shorter side is ``shorter`` (aspect ratio kept)."""
    w, h = img.size
    scale = shorter / min(w, h)
    size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
    if size == (w, h):
        return img
    if size[0] * size[1] > MAX_SCALED_PIXELS:
        raise BadImageError(
            f"too long and thin to train on: {w}x{h} scaled to a shorter side of {shorter} "
            f"px would be {size[0]}x{size[1]}",
            path,
        )
    return img.resize(size, Image.BICUBIC, reducing_gap=3.0)


def decode_rgb8(path: Path) -> Image.Image:
    """An RGB Pillow image of ``path`` (orientation applied, alpha dropped)."""
    decoded = imageio.load_image(path)
    rgb8 = (np.clip(decoded.rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(rgb8, "RGB")


def load_single(path: Path, load_size: int) -> np.ndarray:
    """H x W x 3 uint8, shorter side ``load_size``."""
    return np.asarray(scale_shorter(decode_rgb8(path), load_size, path))


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
    img_a = scale_shorter(img_a, load_size, a)
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
