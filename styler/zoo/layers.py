"""Building blocks shared by the networks in the zoo."""

from __future__ import annotations

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
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                padding_mode=padding_mode,
                bias=bias,
            ),
        )
