"""Padding, tile planning and blending: the arithmetic, on plain arrays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from styler.tiling import (
    auto_tile_size,
    blend_window,
    crop,
    pad_to_multiple,
    plan_tiles,
    run_tiled,
)


@pytest.mark.parametrize(
    ("h", "w"), [(1, 1), (1, 7), (3, 2), (2, 3), (257, 255), (64, 64), (5, 300)]
)
@pytest.mark.parametrize("multiple", [1, 4, 32, 256])
def test_pad_and_crop_round_trip(h: int, w: int, multiple: int) -> None:
    x = np.random.default_rng(0).random((3, h, w)).astype(np.float32)
    padded, size = pad_to_multiple(x, multiple)
    assert size == (h, w)
    assert padded.shape[1] % multiple == 0 and padded.shape[2] % multiple == 0
    assert padded.shape[1] - h < multiple and padded.shape[2] - w < multiple
    assert np.array_equal(crop(padded, size), x)


def test_padding_reflects() -> None:
    x = np.tile(np.arange(6, dtype=np.float32), (1, 4, 1))
    padded, _ = pad_to_multiple(x, 4)
    assert padded.shape == (1, 4, 8)
    assert padded[0, 0].tolist() == [0, 1, 2, 3, 4, 5, 4, 3]


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap", "multiple"),
    [
        (512, 768, 256, 32, 4),
        (100, 100, 256, 32, 4),  # one tile
        (256, 256, 256, 32, 4),  # exact fit
        (1024, 256, 256, 64, 256),
        (4000, 6000, 512, 96, 4),
        (68, 132, 32, 8, 4),
    ],
)
def test_tiles_cover_everything_with_overlap(
    h: int, w: int, tile: int, overlap: int, multiple: int
) -> None:
    tiles = plan_tiles(h, w, tile, overlap, multiple)
    covered = np.zeros((h, w), np.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        assert t.y0 % multiple == 0 and t.x0 % multiple == 0
        assert (t.y1 - t.y0) % multiple == 0 and (t.x1 - t.x0) % multiple == 0
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    ys = sorted({(t.y0, t.y1) for t in tiles})
    for (a0, a1), (b0, _) in itertools.pairwise(ys):
        assert a1 - b0 >= min(overlap, a1 - a0)


def test_blend_window_shape() -> None:
    w = blend_window(64, 16, at_start=True, at_end=False, margin=8)
    assert w.shape == (64,) and (w > 0).all()
    assert np.all(w[:40] == 1)  # image edge: flat to the border
    assert w[-1] < 1e-5 and w[-8] < 1e-5  # discarded margin
    ramp = w[40:56]
    assert np.all(np.diff(ramp) < 0)  # smooth descent
    both = blend_window(64, 16, at_start=False, at_end=False)
    assert np.allclose(both, both[::-1])


@pytest.mark.parametrize("margin", [0, 8])
@pytest.mark.parametrize(("h", "w"), [(37, 300), (130, 67), (256, 256), (17, 9)])
def test_identity_and_local_functions_are_reproduced_exactly(h: int, w: int, margin: int) -> None:
    x = np.random.default_rng(1).random((3, h, w)).astype(np.float32)
    same = run_tiled(lambda b: b, x, tile=64, overlap=16, multiple=4, margin=margin)
    assert same.shape == x.shape
    assert np.abs(same - x).max() < 1e-5
    local = run_tiled(lambda b: np.tanh(2 * b), x, tile=64, overlap=16, multiple=4, margin=margin)
    assert np.abs(local - np.tanh(2 * x)).max() < 1e-5


def test_per_tile_offsets_blend_smoothly() -> None:
    """A function that shifts each tile differently leaves no hard seams."""
    calls = iter(range(1000))
    x = np.zeros((1, 256, 256), np.float32)
    out = run_tiled(lambda b: b + next(calls) * 0.1, x, tile=96, overlap=32, multiple=4)[0]
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    jump = 0.1  # the smallest offset difference between neighbouring tiles
    assert steps < jump / 4


def test_batches_and_channels() -> None:
    seen: list[tuple[int, ...]] = []

    def fn(b: np.ndarray) -> np.ndarray:
        seen.append(b.shape)
        return np.repeat(b, 3, axis=1)

    x = np.random.default_rng(2).random((1, 200, 200)).astype(np.float32)
    out = run_tiled(fn, x, tile=64, overlap=16, multiple=4, batch_size=4, out_channels=3)
    assert out.shape == (3, 200, 200)
    assert np.abs(out - np.repeat(x, 3, axis=0)).max() < 1e-5
    assert max(s[0] for s in seen) == 4 and all(s[1] == 1 for s in seen)


def test_auto_tile_size() -> None:
    assert auto_tile_size(512 * 512, 4) == 512
    assert auto_tile_size(1000, 256) == 256
    assert auto_tile_size(600 * 600, 256) == 512


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(8, 64),
    multiple=st.sampled_from([1, 4, 8]),
)
def test_identity_round_trip_property(h: int, w: int, tile: int, multiple: int) -> None:
    x = np.random.default_rng(h * 100 + w).random((2, h, w)).astype(np.float32)
    out = run_tiled(
        lambda b: b, x, tile=tile, overlap=tile // 4, multiple=multiple, margin=tile // 8
    )
    assert np.abs(out - x).max() < 1e-5
