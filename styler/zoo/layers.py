"""Building blocks shared by the networks in the zoo."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
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


#: Output channels that oneDNN's CPU convolutions compute at a time: a
#: convolution with fewer outputs costs as much as one with this many.
_OUTPUT_BLOCK = 16


def _thin(channels: int) -> bool:
    """Whether a convolution with this many outputs fills at most a quarter
    of oneDNN's output block, so that :func:`phase_conv2d` (four times the
    outputs) pays."""
    return channels * 4 <= _OUTPUT_BLOCK


def phase_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, phases: int = 2
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding), computed as one
    convolution of stride ``phases`` with ``phases**2`` times the output
    channels, then ``pixel_shuffle``.

    Output pixel (phases*y + dy, phases*x + dx) is the stride-``phases``
    convolution at (y, x) with the kernel shifted by (dy, dx) inside a
    kernel ``phases - 1`` larger: the same products, summed in the same
    groups. Worth it for convolutions with very few outputs, such as a
    generator's RGB head, which oneDNN computes as if they had 16: 64 -> 3
    channels, 7x7, at 128x128 took 12.9 ms forward and backward in bf16,
    6.2 ms this way (per image, 2 cores).
    """
    out_ch, in_ch, kh, kw = weight.shape
    height, width = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    rows, cols = -(-height // phases), -(-width // phases)
    # Zero rows and columns past the end feed only outputs that are cropped.
    need_h = phases * (rows - 1) + kh + phases - 1
    need_w = phases * (cols - 1) + kw + phases - 1
    if (need_h, need_w) != x.shape[-2:]:
        x = F.pad(x, (0, need_w - x.shape[-1], 0, need_h - x.shape[-2]))
    shifted = [
        F.pad(weight, (dx, phases - 1 - dx, dy, phases - 1 - dy))
        for dy in range(phases)
        for dx in range(phases)
    ]
    size = shifted[0].shape[-2:]
    kernel = torch.stack(shifted, 1).reshape(out_ch * phases * phases, in_ch, *size)
    bias = None if bias is None else bias.repeat_interleave(phases * phases)
    y = F.conv2d(x, kernel, bias, stride=phases)
    return F.pixel_shuffle(y, phases)[..., :height, :width]


#: Largest slab of the im2col matrix (elements) :func:`gemm_weight_grad`
#: builds at once: 32 MB in bf16, this CPU's L3 cache. Whole matrices past it
#: made the product wait on memory (at 3x3 over 256 channels, 18.9M elements
#: took 40.0 ms against oneDNN's 30.7); slabs of input channels did not
#: (26.7 ms).
_SLAB = 1 << 24


def gemm_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """The weight gradient of ``F.conv2d(x, w)`` (stride 1, no padding) as
    matrix products: ``grad`` (O x B*H*W) times the im2col matrix of ``x``
    (C*kh*kw x B*H*W), transposed, built for a slab of input channels at a
    time. Each output element is one full float32-accumulated sum, as in
    oneDNN's kernel. For 3x3 convolutions over 256 channels in bf16 this ran
    5-20% faster than oneDNN's backward-weights kernel here (10.1 against
    12.3 ms at 3 x 32 x 32, 26.7 against 29.2 at 2 x 64 x 64, 109 against
    136 at 2 x 128 x 128)."""
    kh, kw = kernel
    batch, channels = x.shape[:2]
    positions = batch * grad.shape[-2] * grad.shape[-1]
    g = grad.transpose(0, 1).reshape(grad.shape[1], positions)
    step = max(1, _SLAB // (kh * kw * positions))
    slabs = []
    for start in range(0, channels, step):
        cols = x[:, start : start + step].unfold(2, kh, 1).unfold(3, kw, 1)  # B c H W kh kw
        cols = cols.permute(1, 4, 5, 0, 2, 3).reshape(-1, positions)
        slabs.append(g @ cols.t())
    whole = slabs[0] if len(slabs) == 1 else torch.cat(slabs, 1)
    return whole.view(grad.shape[1], channels, kh, kw)


def input_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The input gradient of ``F.conv2d(x, weight)`` (stride 1, no padding).
    With few input channels (an RGB stem) it is a convolution with few
    outputs, done by :func:`phase_conv2d`; otherwise oneDNN's kernel."""
    if _thin(weight.shape[1]):  # its input channels are the gradient's outputs
        kh, kw = weight.shape[-2:]
        padded = F.pad(grad, (kw - 1, kw - 1, kh - 1, kh - 1))
        return phase_conv2d(padded, weight.flip(2, 3).transpose(0, 1), None)
    mask = [True, False, False]
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
    )[0]


def _gemm_pays(grad: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where :func:`gemm_weight_grad` beat oneDNN here: reduced precision and
    wide inputs. In float32, and for an RGB stem, oneDNN's kernel was faster
    (stem, bf16: 6.0 against 4.9 ms at 3 x 128 x 128)."""
    return grad.dtype in (torch.bfloat16, torch.float16) and not _thin(weight.shape[1])


class _FastBackwardConv(torch.autograd.Function):
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding) whose backward
    uses :func:`input_grad` and, where it pays, :func:`gemm_weight_grad`."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        need_b = need_b and ctx.has_bias
        grad = grad.contiguous()
        gx = input_grad(grad, x, weight) if need_x else None
        gw = gb = None
        if need_w and _gemm_pays(grad, weight):
            gw = gemm_weight_grad(grad, x, weight.shape[-2:])
            gb = grad.sum((0, 2, 3)) if need_b else None
        elif need_w or need_b:
            mask = [False, need_w, need_b]
            bias_sizes = [weight.shape[0]] if need_b else None
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
            )
        return gx, gw, gb


class FastConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same values) that is faster to train
    through on the CPU when it is a plain stride-1, unpadded convolution:

    - with at most a quarter of oneDNN's output block (an RGB head), the
      forward is :func:`phase_conv2d`;
    - otherwise the backward computes the input gradient of a convolution
      with few input channels (an RGB stem) by :func:`phase_conv2d`, and in
      reduced precision the weight gradient of a wide one as one matrix
      product (:func:`gemm_weight_grad`).

    Without gradients (inference, export), on other devices and for other
    convolutions it is the plain ``nn.Conv2d``.

    Under autocast it casts its weight to the reduced precision itself, once
    per call, or once per :func:`shared_weight_casts` block.
    """

    #: The weight cast to each dtype inside a :func:`shared_weight_casts`
    #: block; ``None`` outside one.
    _casts: dict[torch.dtype, torch.Tensor] | None = None

    def _cast_weight(self, dtype: torch.dtype) -> torch.Tensor:
        if self._casts is None:
            return self.weight.to(dtype)
        if dtype not in self._casts:
            self._casts[dtype] = self.weight.to(dtype)
        return self._casts[dtype]

    def _plain(self, x: torch.Tensor) -> bool:
        return (
            not (torch.is_grad_enabled() and self.weight.requires_grad)
            or x.device.type != "cpu"
            or self.stride != (1, 1)
            or self.dilation != (1, 1)
            or self.groups != 1
            or self.padding not in ((0, 0), "valid")
            or x.dim() != 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._plain(x):
            return super().forward(x)
        if _thin(self.out_channels):
            return phase_conv2d(x, self.weight, self.bias)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), self._cast_weight(dtype)
            bias = None if bias is None else bias.to(dtype)
            with torch.autocast("cpu", enabled=False):
                return _FastBackwardConv.apply(x, weight, bias)  # type: ignore[no-any-return]
        return _FastBackwardConv.apply(x, weight, bias)  # type: ignore[no-any-return]


@contextlib.contextmanager
def shared_weight_casts(nets: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, each :class:`FastConv2d` of ``nets`` casts its weight
    to autocast's dtype once, however often it is called, as autocast's own
    cache does for PyTorch's layers: one cast forward and one backward, with
    the calls' gradients summed (in bf16, as there) before it. For a network
    called twice in a training step (CycleGAN's G_A: translation and
    reconstruction). The weights must not change inside the block."""
    convs = [m for net in nets for m in net.modules() if isinstance(m, FastConv2d)]
    for conv in convs:
        conv._casts = {}
    try:
        yield
    finally:
        for conv in convs:
            conv._casts = None


def with_stock_layers(net: nn.Module) -> nn.Module:
    """``net`` with PyTorch's own layers in place of styler's faster-to-train
    ones (:class:`ReflectionPad2d`, :class:`PadConv2d`, :class:`FastConv2d`),
    in place: the textbook network, for comparisons. Parameters and their
    names are unchanged."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ReflectionPad2d):
                setattr(module, name, nn.ReflectionPad2d(child.padding))
            elif isinstance(child, (PadConv2d, FastConv2d)):
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
