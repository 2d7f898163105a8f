"""A smoothing path for a residual generator: edge-aware smoothing learned
pixel by pixel, the flat patches of paint that a photo's fine detail gives
way to.

A residual ResNet adds a change made through a bottleneck at a quarter of
the size: it can recolour, but not remove the fine detail it never sees at
full size, and learning a smoothing from scratch with full-size
convolutions (``detail``) is slow. This path is given the smoothing and
learns only where to use it: the input blurred by fixed Gaussians of three
radii, and a small network on the input and those blurs (which tell edges
from flat areas) that weighs, at every pixel, how far to move towards each
blur (up to all the way; a negative weight sharpens). Its last layer starts
at zero, so the path starts as no change. White-box cartoonization smooths
its output the same way with a fixed guided filter; here where and how much
are learned from the style.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from styler.zoo.layers import ReflectionPad2d, reflect_pad

#: Standard deviations of the Gaussian blurs, in pixels. The widest reaches
#: 6 pixels (radius 2 sigma), within the 8-pixel images apply gives a ResNet.
SIGMAS = (1.0, 2.0, 3.0)


def gaussian(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ceil(2 sigma)."""
    radius = math.ceil(2 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class SmoothPath(nn.Module):
    """The change that moves each pixel of the input towards its blurs by
    learned, per-pixel weights (see the module's docstring)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.channels = channels
        for i, sigma in enumerate(SIGMAS):
            k = gaussian(sigma)
            # Depthwise, separable: one row and one column kernel per channel.
            # Not saved: they are fixed by SIGMAS.
            row = k.repeat(channels, 1, 1, 1)
            self.register_buffer(f"row{i}", row, persistent=False)
            self.register_buffer(f"col{i}", row.transpose(2, 3).contiguous(), persistent=False)
        levels = len(SIGMAS)
        self.gate = nn.Sequential(
            ReflectionPad2d(1),
            nn.Conv2d(channels * (1 + levels), width, 3),
            nn.SiLU(),
            ReflectionPad2d(1),
            nn.Conv2d(width, width, 3),
            nn.SiLU(),
            nn.Conv2d(width, levels, 1),
        )

    def blurs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input blurred by each of :data:`SIGMAS`."""
        out = []
        for i in range(len(SIGMAS)):
            row, col = getattr(self, f"row{i}"), getattr(self, f"col{i}")
            r = row.shape[-1] // 2
            c = self.channels
            y = F.conv2d(reflect_pad(x, (r, r, 0, 0)), row.to(x.dtype), groups=c)
            out.append(F.conv2d(reflect_pad(y, (0, 0, r, r)), col.to(x.dtype), groups=c))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        towards = [b - x for b in self.blurs(x)]
        weights = self.gate(torch.cat([x, *towards], 1)).clamp(-1.0, 1.0)
        change = weights[:, :1] * towards[0]
        for i in range(1, len(towards)):
            change = change + weights[:, i : i + 1] * towards[i]
        return change

    def start_at_zero(self) -> None:
        """Hidden layers at PyTorch's default initialisation, the last at
        zero: the path starts as no change (and learns at once)."""
        for layer in self.gate:
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        last = self.gate[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
