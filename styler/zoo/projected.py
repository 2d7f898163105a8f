"""Projected GAN's discriminator (Sauer et al. 2021), for small datasets.

A discriminator learned from scratch on 18 paintings learns them by heart; one
that looks through a network already trained on ImageNet starts from
features that mean something and needs only small heads. The image goes
through a frozen EfficientNet-Lite0 (:mod:`styler.zoo.lite0`); its four
feature maps (1/4 to 1/32 of the side) are mixed across channels by fixed
random 1x1 convolutions (CCM) and across scales, coarse into fine, by
upsampling, adding and another fixed random 1x1 convolution (CSM), as in the
paper; each mixed map is judged by a small trainable head (strided 4x4
convolutions with spectral norm and LeakyReLU down to at most 8 x 8, then a
4x4 convolution to one score per patch). Scores of every scale are returned
side by side, flattened.

Only the heads are parameters: the backbone is held outside the module's
parameters and state (it is the same for every run, loaded from its wheel),
and the random projections are buffers (fixed by the seed, saved with the
run so a resume continues with the same ones).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from styler.netconfig import ProjectedDiscriminatorConfig
from styler.zoo.lite0 import CHANNELS, Lite0Features

#: Strided convolutions in the head of each scale (finest first): the maps
#: of a 128-pixel crop (32, 16, 8, 4 pixels) all come to 8 x 8 or less.
HEAD_DOWNSAMPLINGS = (2, 1, 0, 0)


def _random_projection(c_in: int, c_out: int) -> torch.Tensor:
    """A fixed 1x1 convolution weight, Kaiming-uniform as PyTorch initialises one."""
    weight = torch.empty(c_out, c_in, 1, 1)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


class _Head(nn.Module):
    """A small PatchGAN on one feature map."""

    def __init__(self, channels: int, downsamplings: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(downsamplings):
            layers += [
                spectral_norm(nn.Conv2d(channels, channels, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
            ]
        self.model = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Conv2d(channels, 1, 4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model(x)
        h, w = x.shape[-2:]
        if h < 3 or w < 3:  # a map of a small crop: large enough for the 4x4 score
            x = F.pad(x, (0, max(0, 3 - w), 0, max(0, 3 - h)), mode="replicate")
        return self.score(x)


class ProjectedDiscriminator(nn.Module):
    def __init__(self, config: ProjectedDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        # A plain list: not a submodule, so never a parameter, never in the state.
        self._backbone = [Lite0Features()]
        c = config.ndf
        for i, c_in in enumerate(CHANNELS[: config.scales]):
            self.register_buffer(f"ccm{i}", _random_projection(c_in, c))
            self.register_buffer(f"csm{i}", _random_projection(c, c))
        self.heads = nn.ModuleList(_Head(c, HEAD_DOWNSAMPLINGS[i]) for i in range(config.scales))

    # The backbone follows the module to devices and dtypes, and stays in eval mode.
    def _apply(self, fn: Any, recurse: bool = True) -> ProjectedDiscriminator:
        super()._apply(fn, recurse)
        self._backbone[0]._apply(fn, recurse)
        return self

    @property
    def backbone(self) -> Lite0Features:
        return self._backbone[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x, self.config.scales)
        mixed = [F.conv2d(f, getattr(self, f"ccm{i}").to(f)) for i, f in enumerate(features)]
        # Cross-scale mixing, from the coarsest map into the finest.
        fused: list[torch.Tensor] = [mixed[-1]]
        for i in range(len(mixed) - 2, -1, -1):
            up = F.interpolate(fused[0], size=mixed[i].shape[-2:], mode="bilinear")
            fused.insert(0, up + mixed[i])
        fused = [F.conv2d(f, getattr(self, f"csm{i}").to(f)) for i, f in enumerate(fused)]
        scores = [head(f).flatten(1) for head, f in zip(self.heads, fused, strict=True)]
        return torch.cat(scores, dim=1)
