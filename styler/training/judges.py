"""What the side judges of CUT/FastCUT see of an image: the colour
discriminator its tones (4 x 4 averages: colours, not texture), the texture
discriminator a grey mix of its channels (strokes and edges, not colours)."""

from __future__ import annotations

import torch


def tones(images: torch.Tensor, up: bool = False) -> torch.Tensor:
    """What the colour discriminator sees: the images averaged over 4 x 4
    pixels (colours and tones; the texture gone), scaled back up ``up`` (for
    features learned at full size)."""
    pooled = torch.nn.functional.avg_pool2d(images, 4)
    if not up:
        return pooled
    return torch.nn.functional.interpolate(pooled, scale_factor=4, mode="bilinear")


def grey_weights(generator: torch.Generator) -> torch.Tensor:
    """A random mix of the three channels (weights summing to 1)."""
    w = torch.rand(3, generator=generator) + 1e-3
    return w / w.sum()


def grey(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """What the texture discriminator sees: the images in grey, mixed by ``weights``."""
    return (images * weights.to(images)[:, None, None]).sum(1, keepdim=True)
