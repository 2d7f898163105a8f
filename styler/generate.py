"""Images from noise with a generation model (onnxruntime only, no torch).

The noise for image ``i`` is row ``i`` of one standard-normal draw from
NumPy's PCG64 seeded with ``seed``, so a seed always gives the same images,
and ``n=10`` gives the first ten of ``n=64``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from styler.errors import BadModelError, OutputError, UsageError
from styler.fsutil import atomic_path
from styler.runtime import Model, model_runs

#: Images per onnxruntime call, at most.
CHUNK = 256
#: Bytes of model output per call, at most (large images come fewer at a time:
#: 256 of 1024 x 1024 would hold 3 GB, and numpy copies it a few times).
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Generated:
    index: int
    label: int | None
    image: np.ndarray  # H x W x C uint8 (C = 1 or 3)


class ImageGenerator:
    """A generation model ready to sample.

    >>> gen = ImageGenerator("digits_generator.onnx")        # doctest: +SKIP
    >>> images = gen.sample(16, seed=0, label="7")            # doctest: +SKIP
    """

    def __init__(self, model: str | Path | Model, *, device: str = "auto") -> None:
        self.model = model if isinstance(model, Model) else Model.open(model, device=device)
        if self.model.meta.task != "generate":
            raise BadModelError(
                "not a generation model (it translates images: use styler apply)", self.model.path
            )
        self.meta = self.model.meta

    @property
    def classes(self) -> tuple[str, ...]:
        meta = self.meta
        return meta.classes or tuple(str(i) for i in range(meta.num_classes))

    def label_index(self, label: str | int) -> int:
        """A class by name (or by index) -> its index."""
        if not self.meta.num_classes:
            raise UsageError("this model is not class-conditional: it takes no --class")
        names = self.classes
        if str(label) in names:
            return names.index(str(label))
        if isinstance(label, int) or str(label).isdigit():
            i = int(label)
            if 0 <= i < len(names):
                return i
        raise UsageError(f"unknown class {label!r}: this model has {', '.join(names)}")

    def labels_for(self, start: int, stop: int, label: str | int | None) -> np.ndarray | None:
        """Labels of images ``start`` to ``stop``: every image of ``label``,
        or the classes in turn when none is given."""
        if not self.meta.num_classes:
            if label is not None:
                self.label_index(label)  # raises: no classes
            return None
        if label is not None:
            return np.full(stop - start, self.label_index(label), np.int64)
        return np.arange(start, stop, dtype=np.int64) % self.meta.num_classes

    def sample(self, n: int, seed: int = 0, label: str | int | None = None) -> list[Generated]:
        """``n`` images (H x W x C uint8), deterministic for a seed."""
        return list(self.iter_sample(n, seed, label))

    def iter_sample(
        self, n: int, seed: int = 0, label: str | int | None = None
    ) -> Iterator[Generated]:
        """The images one at a time; memory holds one chunk of :data:`CHUNK`
        images whatever ``n`` is."""
        if n < 1:
            raise UsageError("the number of images must be at least 1")
        if not 0 <= seed < 2**63:
            raise UsageError(f"the seed must be in 0..2**63-1, got {seed}")
        self.labels_for(0, 0, label)  # an unknown class fails before any work
        lo, hi = self.meta.value_range
        side = getattr(self.meta.network, "size", 1)
        chunk = images_per_call(self.meta.out_channels, side)
        # The first call makes one image: a model whose images are larger than
        # its metadata says is refused before a call of `chunk` of them.
        for start, noise in noise_chunks(seed, n, self.meta.latent_dim, chunk, first=1):
            stop = start + len(noise)
            labels = self.labels_for(start, stop, label)
            try:
                with model_runs(self.model.path):
                    out = self.model.generate(noise, labels)
                if not np.isfinite(out).all():
                    raise BadModelError(
                        "the model's output holds NaN or infinite values", self.model.path
                    )
                images = np.clip((out - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5
                images = images.astype(np.uint8).transpose(0, 2, 3, 1)
            except MemoryError:
                raise BadModelError(
                    f"not enough memory for {len(noise)} images of {side} x {side}",
                    self.model.path,
                ) from None
            for i, image in enumerate(images):
                yield Generated(start + i, None if labels is None else int(labels[i]), image)


def images_per_call(channels: int, side: int) -> int:
    """Images of ``channels`` x ``side`` x ``side`` (float32) generated in one
    onnxruntime call: :data:`CHUNK`, fewer where they would pass :data:`CHUNK_BYTES`."""
    return max(1, min(CHUNK, CHUNK_BYTES // max(4 * channels * side * side, 1)))


def noise_chunks(
    seed: int, n: int, latent_dim: int, chunk: int = CHUNK, first: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, noise rows) for ``n`` images, ``chunk`` rows at a time
    (``first`` rows in the first), drawn in sequence from one generator: the
    same numbers as one draw of all ``n`` rows (:func:`noise_for`), without
    holding them all."""
    rng = np.random.Generator(np.random.PCG64(seed))
    start = 0
    while start < n:
        rows = min(chunk if start or first is None else first, n - start)
        yield start, rng.standard_normal((rows, latent_dim)).astype(np.float32)
        start += rows


def noise_for(seed: int, n: int, latent_dim: int) -> np.ndarray:
    return (
        np.random.Generator(np.random.PCG64(seed))
        .standard_normal((n, latent_dim))
        .astype(np.float32)
    )


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image)


def save_png(image: Image.Image, path: Path, replace: bool = True) -> None:
    """Write ``image`` to ``path`` atomically (without ``replace``, a file
    that appeared there meanwhile is kept: OutputExistsError)."""
    try:
        with atomic_path(path, replace) as tmp, open(tmp, "wb") as f:
            image.save(f, format="PNG")
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None


def file_name(item: Generated, classes: tuple[str, ...]) -> str:
    if item.label is None:
        return f"sample_{item.index:05d}.png"
    # Letters, digits, - and _ only, at most 100 bytes: never a path, never too long.
    name = "".join(c if _plain(c) else "_" for c in classes[item.label])
    while len(os.fsencode(name)) > 100:
        name = name[:-1]
    return f"{name}_{item.index:05d}.png"


def _plain(c: str) -> bool:
    """A letter or digit the file system's encoding can hold, or - or _."""
    if c in "-_":
        return True
    if not c.isalnum():
        return False
    try:
        os.fsencode(c)
    except UnicodeEncodeError:
        return False
    return True


#: Most images one grid picture holds (a 64 x 64 x 64 grid of 64-pixel cells
#: is already 16 megapixels).
MAX_GRID = 4096


def grid(items: list[Generated], columns: int | None = None, min_cell: int = 64) -> Image.Image:
    """All images in one picture (nearest-neighbour enlarged when tiny), in
    ``columns`` columns (a row per class), never more than there are images."""
    if not items:
        raise UsageError("nothing to put in a grid")
    if len(items) > MAX_GRID:
        raise UsageError(f"a grid holds at most {MAX_GRID} images, not {len(items)}")
    h, w, c = items[0].image.shape
    cols = min(columns or math.ceil(math.sqrt(len(items))), len(items))
    rows = math.ceil(len(items) / cols)
    zoom = max(1, math.ceil(min_cell / max(h, w)))
    pad = 2
    canvas = np.full(
        (rows * (h * zoom + pad) + pad, cols * (w * zoom + pad) + pad, c), 24, np.uint8
    )
    for k, item in enumerate(items):
        r, col = divmod(k, cols)
        big = item.image.repeat(zoom, axis=0).repeat(zoom, axis=1)
        y, x = pad + r * (h * zoom + pad), pad + col * (w * zoom + pad)
        canvas[y : y + h * zoom, x : x + w * zoom] = big
    return to_pil(canvas)
