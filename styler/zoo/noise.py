"""Generators from noise and their discriminators: the fully connected GAN
(Goodfellow et al. 2014, as the classic Keras example on digits) and DCGAN
(Radford et al. 2016), each optionally class-conditional as in ACGAN (Odena
et al. 2017): a class embedding multiplies the noise, and the discriminator
has a second head that classifies what it sees.

Generators take ``(noise, labels)`` and give images in [-1, 1];
discriminators take images and give ``(score, class_logits)`` (logits; the
second is None when unconditional).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from styler.netconfig import (
    DcganDiscriminatorConfig,
    DcganGeneratorConfig,
    MlpDiscriminatorConfig,
    MlpGeneratorConfig,
)


def _keras_batch_norm(features: int) -> nn.BatchNorm1d:
    """Keras ``BatchNormalization(momentum=0.8)``: its momentum weighs the old
    average, PyTorch's the new batch (0.2); Keras' epsilon is 1e-3."""
    return nn.BatchNorm1d(features, momentum=0.2, eps=1e-3)


class _Conditioned(nn.Module):
    """Noise times a learned class embedding (identity when unconditional)."""

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None

    def condition(self, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return noise
        if labels is None:
            raise ValueError("a class-conditional generator needs labels")
        return noise * self.embed(labels)


class MlpGenerator(_Conditioned):
    def __init__(self, config: MlpGeneratorConfig) -> None:
        super().__init__(config.num_classes, config.latent_dim)
        self.config = config
        layers: list[nn.Module] = []
        prev = config.latent_dim
        for width in config.hidden:
            layers += [nn.Linear(prev, width), nn.LeakyReLU(0.2, True), _keras_batch_norm(width)]
            prev = width
        out = config.out_channels * config.size * config.size
        layers += [nn.Linear(prev, out), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        return self.model(self.condition(noise, labels)).view(-1, c.out_channels, c.size, c.size)


class MlpDiscriminator(nn.Module):
    def __init__(self, config: MlpDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        prev = config.in_channels * config.size * config.size
        for width in config.hidden:
            layers += [nn.Linear(prev, width), nn.LeakyReLU(0.2, True)]
            prev = width
        self.body = nn.Sequential(*layers)
        self.score = nn.Linear(prev, 1)
        self.classes = nn.Linear(prev, config.num_classes) if config.num_classes else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(images)
        return self.score(h).view(-1), self.classes(h) if self.classes is not None else None


def _doublings(size: int) -> int:
    """Size-doubling layers from 4x4 to ``size``."""
    return int(math.log2(size)) - 2


class DcganGenerator(_Conditioned):
    def __init__(self, config: DcganGeneratorConfig) -> None:
        super().__init__(config.num_classes, config.latent_dim)
        self.config = config
        n = _doublings(config.size)
        ngf = config.ngf
        mult = 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.latent_dim, ngf * mult, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, config.out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.condition(noise, labels)
        return self.model(z[:, :, None, None])


class DcganDiscriminator(nn.Module):
    def __init__(self, config: DcganDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        n = _doublings(config.size)
        ndf = config.ndf
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult * 2),
                nn.LeakyReLU(0.2, True),
            ]
            mult *= 2
        self.body = nn.Sequential(*layers)
        self.score = nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False)
        self.classes = (
            nn.Conv2d(ndf * mult, config.num_classes, 4, 1, 0) if config.num_classes else None
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(images)
        score = self.score(h).view(-1)
        return score, self.classes(h).flatten(1) if self.classes is not None else None
