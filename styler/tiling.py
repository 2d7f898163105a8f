"""Padding and tiling arithmetic: pure numpy, no model in sight.

A generator needs heights and widths that are multiples of its size multiple
(4 for ResNets, 2^depth for U-Nets): :func:`pad_to_multiple` pads by
reflection and :func:`crop` cuts back. Images too large to run whole go
through :func:`run_tiled`: overlapping windows, each output weighted by a
separable raised-cosine window and normalised by the summed weights, so
every pixel is an exact convex combination of the tiles that cover it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _pad_axis(x: np.ndarray, axis: int, amount: int) -> np.ndarray:
    """Pad ``amount`` at the end of ``axis`` by reflection, repeating the
    reflection when the image is shorter than the padding (1-pixel images
    are repeated)."""
    while amount > 0:
        size = x.shape[axis]
        step = min(amount, size - 1) if size > 1 else amount
        width = [(0, 0)] * x.ndim
        width[axis] = (0, step)
        x = np.pad(x, width, mode="reflect" if size > 1 else "edge")
        amount -= step
    return x


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two axes (H, W) at the bottom and right to multiples of
    ``multiple``; returns the padded array and the original (H, W)."""
    h, w = image.shape[-2:]
    out = _pad_axis(image, image.ndim - 2, -h % multiple)
    out = _pad_axis(out, image.ndim - 1, -w % multiple)
    return out, (h, w)


def crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pad_to_multiple`."""
    return image[..., : size[0], : size[1]]


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int


def _starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Window starts along one axis: evenly spread, multiples of ``multiple``,
    the last window ending at the edge, neighbours overlapping by >= overlap."""
    if length <= tile:
        return [0]
    stride = max(multiple, tile - overlap)
    count = math.ceil((length - tile) / stride) + 1
    last = length - tile
    starts = []
    for i in range(count):
        s = round(i * last / (count - 1) / multiple) * multiple if count > 1 else 0
        starts.append(min(s, last))
    starts[-1] = last
    return sorted(set(starts))


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> list[Tile]:
    """Windows covering a (padded) image of ``height`` x ``width``, neighbours
    overlapping by at least ``overlap`` pixels (tiles grow to at least
    ``overlap`` plus one ``multiple`` so that this is possible)."""
    tile = max(tile, overlap + multiple)
    tile = max(multiple, math.ceil(tile / multiple) * multiple)
    th, tw = min(tile, height), min(tile, width)
    return [
        Tile(y, y + th, x, x + tw)
        for y in _starts(height, th, overlap, multiple)
        for x in _starts(width, tw, overlap, multiple)
    ]


#: Weight of a tile's discarded margin: tiny but positive, so that the
#: normalisation never divides by zero.
_MARGIN_WEIGHT = 1e-6


def blend_window(
    length: int, overlap: int, at_start: bool, at_end: bool, margin: int = 0
) -> np.ndarray:
    """1-D weights for one tile axis. On a side that has a neighbouring tile:
    ``margin`` pixels of context that are (almost) discarded, then a
    raised-cosine ramp over ``overlap`` pixels; on a side at the image edge,
    flat 1 up to the border. Always > 0."""
    w = np.ones(length, np.float32)
    margin = min(margin, length // 4)
    ramp_len = min(overlap, length // 2 - margin)
    t = (np.arange(max(ramp_len, 0), dtype=np.float32) + 0.5) / max(ramp_len, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * t)  # (0, 1), smooth
    if not at_start:
        w[:margin] = _MARGIN_WEIGHT
        w[margin : margin + ramp_len] = ramp
    if not at_end:
        w[length - margin :] = _MARGIN_WEIGHT
        w[length - margin - ramp_len : length - margin] = ramp[::-1]
    return np.maximum(w, _MARGIN_WEIGHT)


def needs_tiling(height: int, width: int, max_pixels: int) -> bool:
    return height * width > max_pixels


def auto_tile_size(max_pixels: int, multiple: int) -> int:
    """The largest square tile (a multiple of ``multiple``) within the budget."""
    edge = int(math.sqrt(max_pixels)) // multiple * multiple
    return max(multiple, edge)


def run_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    tile: int,
    overlap: int,
    multiple: int,
    margin: int = 0,
    batch_size: int = 1,
    out_channels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run ``fn`` (N x C x t x t -> N x C' x t x t) over ``image`` (C x H x W)
    in overlapping tiles and blend them; returns C' x H x W float32.

    Each tile's outer ``margin`` pixels (where its convolutions saw padding
    instead of the true neighbours) are context only; the next ``overlap``
    pixels are blended with the neighbouring tile.

    Memory beyond the input: the padded copy, one C' x H x W accumulator,
    one H x W weight sum, and a batch of tiles.
    """
    padded, size = pad_to_multiple(image.astype(np.float32, copy=False), multiple)
    _, h, w = padded.shape
    tiles = plan_tiles(h, w, tile, overlap + 2 * margin, multiple)
    c_out = out_channels or padded.shape[0]
    acc = np.zeros((c_out, h, w), np.float32)
    weight_sum = np.zeros((h, w), np.float32)
    for i in range(0, len(tiles), batch_size):
        group = tiles[i : i + batch_size]
        # Equal-size tiles only share a batch (edge tiles can be smaller).
        shapes = {(t.y1 - t.y0, t.x1 - t.x0) for t in group}
        chunks = [group] if len(shapes) == 1 else [[t] for t in group]
        for chunk in chunks:
            batch = np.stack([padded[:, t.y0 : t.y1, t.x0 : t.x1] for t in chunk])
            out = fn(batch)
            for t, y in zip(chunk, out, strict=True):
                wy = blend_window(t.y1 - t.y0, overlap, t.y0 == 0, t.y1 == h, margin)
                wx = blend_window(t.x1 - t.x0, overlap, t.x0 == 0, t.x1 == w, margin)
                window = wy[:, None] * wx[None, :]
                acc[:, t.y0 : t.y1, t.x0 : t.x1] += y * window
                weight_sum[t.y0 : t.y1, t.x0 : t.x1] += window
        if progress:
            progress(min(i + batch_size, len(tiles)), len(tiles))
    acc /= weight_sum
    return crop(acc, size)
