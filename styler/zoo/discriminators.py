"""PatchGAN and pixel discriminators (Isola et al. 2017), with the same module
layout and parameter names as pytorch-CycleGAN-and-pix2pix."""

from __future__ import annotations

import torch
from torch import nn

from styler.netconfig import PatchDiscriminatorConfig, PixelDiscriminatorConfig
from styler.zoo.layers import conv_bias, norm_layer


class PatchDiscriminator(nn.Module):
    """Classifies overlapping patches; n_layers=3 gives 70x70 receptive fields."""

    def __init__(self, config: PatchDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        ndf, norm, bias = config.ndf, config.norm, conv_bias(config.norm)
        kw, pad = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, ndf, kw, stride=2, padding=pad),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, config.n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < config.n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=stride, padding=pad, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=pad))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN."""

    def __init__(self, config: PixelDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        ndf = config.ndf
        self.net = nn.Sequential(
            nn.Conv2d(config.in_channels, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=conv_bias(config.norm)),
            norm_layer(config.norm, ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
