"""A smoothing path for a residual generator: edge-aware smoothing learned
pixel by pixel, the flat patches of paint that a photo's fine detail gives
way to.

A residual ResNet adds a change made through a bottleneck at a quarter of
the size: it can recolour, but not remove the fine detail it never sees at
full size, and learning a smoothing from scratch with full-size
convolutions (``detail``) is slow. This path is given smoothings and learns
only where to use them: the input blurred by fixed Gaussians of three radii
(they blur edges too), and by two Kuwahara filters (each pixel the mean of
whichever of the four windows around it is the most uniform: flat patches
that stop at edges, the classic oil-paint effect; here a soft choice,
weighed by the windows' variances, so that it has a gradient and no
operator beyond arithmetic). A small network on the input and those
smoothings (which tell edges from flat areas) weighs, at every pixel, how
far to move towards each (up to all the way; a negative weight sharpens).
Its last layer starts at zero, so the path starts as no change.
White-box cartoonization smooths its output the same way with a fixed
guided filter; here where, how much and which kind are learned from the
style.
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
#: Radii of the Kuwahara filters: windows of (r + 1) x (r + 1) pixels.
RADII = (2, 4)
#: The soft choice among the four windows: each weighs (v / mean v + SOFT)
#: to the power -4, v its variance: a window twice as uniform as another
#: weighs several times more, and 0.25 keeps every weight at most 256 (fp16
#: holds it). EPS: variances of flat patches (images in [-1, 1]) count as equal.
SOFT, EPS = 0.25, 1e-4
#: The largest finite fp16 value: the variances' clamp's upper end, never reached.
FP16_MAX = 65504.0


def gaussian(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ceil(2 sigma)."""
    radius = math.ceil(2 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class SmoothPath(nn.Module):
    """The change that moves each pixel of the input towards its smoothings
    by learned, per-pixel weights (see the module's docstring)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.channels = channels
        # Fixed kernels, not saved (SIGMAS and RADII fix them).
        for i, sigma in enumerate(SIGMAS):
            k = gaussian(sigma)
            # Depthwise, separable: one row and one column kernel per channel.
            row = k.repeat(channels, 1, 1, 1)
            self.register_buffer(f"row{i}", row, persistent=False)
            self.register_buffer(f"col{i}", row.transpose(2, 3).contiguous(), persistent=False)
        for i, radius in enumerate(RADII):
            # A box of (r + 1) x (r + 1), separable and depthwise, over the
            # channels and their squares; the four windows are its shifts.
            box = torch.full((2 * channels, 1, 1, radius + 1), 1.0 / (radius + 1))
            self.register_buffer(f"box_row{i}", box, persistent=False)
            self.register_buffer(f"box_col{i}", box.transpose(2, 3).contiguous(), persistent=False)
        self.register_buffer("channel_sum", torch.ones(1, channels, 1, 1), persistent=False)
        levels = len(SIGMAS) + len(RADII)
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

    def kuwaharas(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input through a soft Kuwahara filter of each of :data:`RADII`.
        A variance here is a difference of means of about 0.25 and is 1e-3 or
        less: bf16 (8 bits) loses it, so training under autocast computes
        this part in fp32 (an fp16 export keeps it to 1e-4, :data:`EPS`)."""
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._kuwaharas(x.float())
        return self._kuwaharas(x)

    def _kuwaharas(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, c = [], self.channels
        for i, r in enumerate(RADII):
            row, col = getattr(self, f"box_row{i}"), getattr(self, f"box_col{i}")
            both = reflect_pad(torch.cat([x, x * x], 1), (r, r, r, r))
            box = F.conv2d(
                F.conv2d(both, row.to(x.dtype), groups=2 * c), col.to(x.dtype), groups=2 * c
            )
            # (H + r) x (W + r): the window above-left of each pixel starts at
            # its own place, the one below-right r further on each axis.
            windows = [
                box[:, :, top : (-r if top == 0 else None), left : (-r if left == 0 else None)]
                for top in (0, r)
                for left in (0, r)
            ]
            means = [w[:, :c] for w in windows]
            # Each window's variance, summed over the channels. Clamped with
            # both ends: in half precision the exporter writes a clamp to a
            # minimum alone as Max, an operator styler's models never use.
            spreads = [
                F.conv2d(w[:, c:] - m * m, self.channel_sum.to(x.dtype)).clamp(0.0, FP16_MAX)
                for w, m in zip(windows, means, strict=True)
            ]
            scale = torch.reciprocal(
                (spreads[0] + spreads[1] + spreads[2] + spreads[3]) * 0.25 + EPS
            )
            weights = []
            for v in spreads:
                relative = v * scale + SOFT
                w = torch.reciprocal(relative * relative)
                weights.append(w * w)
            total = weights[0] + weights[1] + weights[2] + weights[3]
            mix = weights[0] * means[0]
            for w, m in zip(weights[1:], means[1:], strict=True):
                mix = mix + w * m
            out.append(mix * torch.reciprocal(total))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        towards = [b - x for b in (*self.blurs(x), *self.kuwaharas(x))]
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
