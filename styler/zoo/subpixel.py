"""Transposed convolutions rewritten as sub-pixel convolutions, for export.

A stride-s transposed convolution is the same function as an ordinary
convolution with s*s times as many output channels followed by a pixel
shuffle (ONNX DepthToSpace): output phase (a, b) of each s x s output block is
a plain convolution of the input with the taps of the transposed kernel that
land on that phase (Shi et al., 2016). The rewrite is exact up to float
rounding; the exporter's parity check against the original network proves it
for every export.

Why: onnxruntime's CPU ConvTranspose is a GEMM plus a col2im scatter and has
no int8 kernel, while its Conv has fast blocked fp32 and VNNI int8 kernels.
Measured on resnet_9blocks at 768x512 (2 cores): the two transposed
convolutions took 300 ms of 2.4 s in an int8 model, the sub-pixel
convolutions that replace them about 60 ms.

The networks themselves keep ``nn.ConvTranspose2d`` (checkpoints stay
compatible with pytorch-CycleGAN-and-pix2pix); only the exported graph changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _taps(kernel: int, stride: int, padding: int) -> tuple[int, int, list[list[tuple[int, int]]]]:
    """For one spatial axis: the input offsets (lo, hi) the phases reach, and
    for each output phase a the (offset index, kernel tap) pairs it sums.

    Output o = s*i + a gets input j = i + d through tap t = a + p - s*d when
    0 <= t < k (the transposed convolution's o = s*j - p + t).
    """
    phases: list[list[tuple[int, int]]] = []
    offsets = []
    for a in range(stride):
        pairs = []
        for t in range(kernel):
            d, rem = divmod(a + padding - t, stride)
            if rem == 0:
                pairs.append((d, t))
                offsets.append(d)
        phases.append(pairs)
    lo, hi = min(offsets), max(offsets)
    return lo, hi, [[(d - lo, t) for d, t in pairs] for pairs in phases]


def convertible(layer: nn.ConvTranspose2d) -> bool:
    """Whether ``layer`` maps H x W to exactly s*H x s*W with one stride and
    kernel for both axes, no dilation and no groups: the shapes a pixel
    shuffle gives."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    (ph, pw), (oh, ow) = layer.padding, layer.output_padding
    return (
        kh == kw
        and sh == sw > 1
        and ph == pw
        and oh == ow
        and layer.dilation == (1, 1)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and kh + oh - 2 * ph == sh
        and all(t for t in _taps(kh, sh, ph)[2])
    )


class SubpixelConvTranspose(nn.Module):
    """Zero pad, convolve to s*s*C_out channels, pixel-shuffle: the function of
    the given ``nn.ConvTranspose2d``."""

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not convertible(layer):
            raise ValueError(f"not a pixel-shuffle-shaped transposed convolution: {layer}")
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        lo, hi, phases = _taps(k, s, p)
        size = hi - lo + 1
        weight = layer.weight.detach()  # (C_in, C_out, k, k)
        c_in, c_out = weight.shape[:2]
        kernel = weight.new_zeros(c_out, s, s, c_in, size, size)
        for a, rows in enumerate(phases):
            for b, cols in enumerate(phases):
                for ey, ty in rows:
                    for ex, tx in cols:
                        kernel[:, a, b, :, ey, ex] = weight[:, :, ty, tx].T
        self.conv = nn.Conv2d(c_in, c_out * s * s, size, bias=layer.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.reshape(c_out * s * s, c_in, size, size))
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.detach().repeat_interleave(s * s))
        self.pad = (-lo, hi, -lo, hi)  # left, right, top, bottom
        self.stride = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(F.pad(x, self.pad)), self.stride)


def to_subpixel(net: nn.Module) -> int:
    """Replace, in place, every convertible ``nn.ConvTranspose2d`` in ``net``
    by its :class:`SubpixelConvTranspose`; how many were replaced."""
    count = 0
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and convertible(child):
                setattr(module, name, SubpixelConvTranspose(child))
                count += 1
    return count
