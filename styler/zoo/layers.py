"""Building blocks shared by the networks in the zoo."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from styler.netconfig import Norm


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """Normalisation as in pytorch-CycleGAN-and-pix2pix: batch norm with affine
    parameters and running stats; instance norm without either."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


def conv_bias(norm: Norm) -> bool:
    """Whether a convolution followed by this norm has a bias. The reference
    drops it only before batch norm (which has its own shift) and, by a quirk
    kept for checkpoint compatibility, before no norm at all."""
    return norm == "instance"


class ResizeConv(nn.Sequential):
    """2x nearest upsampling then a 3x3 convolution: the resize-convolution
    upsampler (Odena et al., 2016), free of transposed-convolution
    checkerboard artefacts."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool, pad: str = "reflect"):
        padding_mode = "zeros" if pad == "zero" else pad
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            PadConv2d(
                in_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                padding_mode=padding_mode,
                bias=bias,
            ),
        )


def _reflect_pad_grad(grad: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """The gradient of reflect padding by (left, right, top, bottom): the
    centre, plus each padded border folded back onto the row or column it
    mirrors (columns first, then rows, so corners fold twice)."""
    left, right, top, bottom = padding
    height = grad.shape[-2] - top - bottom
    width = grad.shape[-1] - left - right
    cols = grad[..., :, left : left + width].clone()
    if left:
        cols[..., :, 1 : left + 1] += grad[..., :, :left].flip(-1)
    if right:
        cols[..., :, width - right - 1 : width - 1] += grad[..., :, left + width :].flip(-1)
    out = cols[..., top : top + height, :].clone()
    if top:
        out[..., 1 : top + 1, :] += cols[..., :top, :].flip(-2)
    if bottom:
        out[..., height - bottom - 1 : height - 1, :] += cols[..., top + height :, :].flip(-2)
    return out


class _ReflectPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
        ctx.padding = padding
        with torch.autocast(x.device.type, enabled=False):
            return F.pad(x, padding, mode="reflect")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _reflect_pad_grad(grad, ctx.padding), None


def reflect_pad(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, padding, mode="reflect")``, faster to train through.

    Two costs of the stock op, measured in a bf16 CycleGAN step on the CPU:
    autocast runs reflection_pad2d in float32 (a cast up and, at the next
    convolution, a cast back, for every pad), and its backward is 3-5x slower
    than cropping the gradient and adding the mirrored borders back. Here the
    pad runs in the input's dtype and the backward is :func:`_reflect_pad_grad`.
    Without gradients (inference, export) it is the plain op.
    """
    padding = (padding[0], padding[1], padding[2], padding[3])
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReflectPad.apply(x, padding)  # type: ignore[no-any-return]
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return F.pad(x, padding, mode="reflect")
    return F.pad(x, padding, mode="reflect")


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` through :func:`reflect_pad` (same module, no
    parameters: checkpoints are unaffected)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad(x, self.padding)


class PadConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose reflect padding goes through :func:`reflect_pad`;
    same parameters and names as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "reflect":
            return super().forward(x)
        pad = self._reversed_padding_repeated_twice
        return F.conv2d(
            reflect_pad(x, (pad[0], pad[1], pad[2], pad[3])),
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )


def with_stock_padding(net: nn.Module) -> nn.Module:
    """``net`` with PyTorch's own padding layers in place of styler's
    (:class:`ReflectionPad2d`, :class:`PadConv2d`), in place: the textbook
    network, for comparisons. Parameters and their names are unchanged."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ReflectionPad2d):
                setattr(module, name, nn.ReflectionPad2d(child.padding))
            elif isinstance(child, PadConv2d):
                stock = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                stock.load_state_dict(child.state_dict())
                setattr(module, name, stock)
    return net
