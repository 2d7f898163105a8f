"""Keeping a photo's own colours: the styled image's brightness and texture
with the source's chroma, as "luminance-only transfer" does (Gatys et al.
2016, *Preserving color in neural artistic style transfer*). The split is
YCbCr (BT.601, the JPEG transform): linear and exactly invertible, so a
styled image that equals its source comes back unchanged.

A style whose palette is part of its look (a green-olive grade, a sepia
tone) loses that part; what a model does to brush-work, edges and contrast
stays. ``styler apply --keep-colours`` applies it to every output.
"""

from __future__ import annotations

import numpy as np

#: RGB -> (Y, Cb, Cr) rows; the offsets of Cb and Cr cancel in the round trip.
TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    np.float32,
)
FROM_YCC = np.linalg.inv(TO_YCC.astype(np.float64)).astype(np.float32)
#: Rows converted at a time (bounds the temporaries on very large images).
ROWS = 256


def keep_colours(source: np.ndarray, styled: np.ndarray) -> np.ndarray:
    """``styled``'s luma with ``source``'s chroma: H x W x 3 float images in
    [0, 1] of one size; a new array, clipped to [0, 1]."""
    if source.shape != styled.shape or source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(
            f"keep_colours needs two H x W x 3 images of one size, got {source.shape} "
            f"and {styled.shape}"
        )
    out = np.empty(styled.shape, np.float32)
    for top in range(0, source.shape[0], ROWS):
        rows = slice(top, top + ROWS)
        ycc = source[rows].astype(np.float32) @ TO_YCC.T
        ycc[..., 0] = styled[rows].astype(np.float32) @ TO_YCC[0]
        np.clip(ycc @ FROM_YCC.T, 0.0, 1.0, out=out[rows])
    return out
