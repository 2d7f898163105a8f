"""Instance norm with statistics from outside: seamless tiles for big images.

An instance-norm generator normalises each feature map by its own mean and
variance. Run on tiles, each tile gets its own statistics and its colours
drift from its neighbours'. :class:`GlobalStatsGenerator` runs a generator
with every instance norm able to use statistics given from outside:

    mean = w * own_mean + (1 - w) * given_mean   (and the same for variance)

With ``w = 1`` (the default) it is the plain network and also returns the
statistics it computed, packed in one vector. The runtime runs the whole image
(or a downscaled copy of a very large one) once with ``w = 1`` to collect the
statistics, then every tile with ``w = 0`` and those statistics, so that all
tiles are normalised alike, as the whole image would be.

The walk below follows the module structure of the zoo's generators
(Sequential, ResnetBlock, UnetSkipConnectionBlock), so ``torch.export``
traces it into a flat graph.
"""

from __future__ import annotations

import torch
from torch import nn

from styler.zoo.resnet import ResnetBlock, ResnetGenerator
from styler.zoo.unet import UnetGenerator, UnetSkipConnectionBlock


def instance_norms(net: nn.Module) -> list[nn.InstanceNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]


def stats_size(net: nn.Module) -> int:
    """Length of the packed statistics vector: mean and variance per channel."""
    return sum(2 * m.num_features for m in instance_norms(net))


class GlobalStatsGenerator(nn.Module):
    """``forward(image, stats, weight) -> (styled, own_stats)``.

    ``stats`` is (1, S) or (N, S), ``weight`` a scalar tensor; ``own_stats``
    is (N, S): per image, for each instance norm in order, its channel means
    then its channel variances (biased, as instance norm uses).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.norms = instance_norms(net)
        if not self.norms:
            raise ValueError("the network has no instance norm layers")
        if any(m.affine or m.track_running_stats for m in self.norms):
            raise ValueError("only instance norms without affine parameters or running stats")

    def forward(
        self, image: torch.Tensor, stats: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = _Walk(stats, weight)
        out = state.run(self.net, image)
        return out, torch.cat(state.collected, dim=1)


class _Walk:
    def __init__(self, stats: torch.Tensor, weight: torch.Tensor) -> None:
        self.stats = stats
        self.weight = weight
        self.offset = 0
        self.collected: list[torch.Tensor] = []

    def run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.InstanceNorm2d):
            return self.norm(module, x)
        if isinstance(module, nn.Sequential):
            for layer in module:
                x = self.run(layer, x)
            return x
        if isinstance(module, ResnetBlock):
            return x + self.run(module.conv_block, x)
        if isinstance(module, UnetSkipConnectionBlock):
            y = self.run(module.model, x)
            return y if module.outermost else torch.cat([x, y], 1)
        if isinstance(module, ResnetGenerator):
            return module.finish(x, self.run(module.model, x))
        if isinstance(module, UnetGenerator):
            return module.finish(x, self.run(module.model, x))
        return module(x)

    def norm(self, layer: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        c = layer.num_features
        mean = x.mean(dim=(2, 3))
        var = (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
        self.collected += [mean, var]
        given_mean = self.stats[:, self.offset : self.offset + c]
        given_var = self.stats[:, self.offset + c : self.offset + 2 * c]
        self.offset += 2 * c
        w = self.weight
        use_mean = w * mean + (1 - w) * given_mean
        use_var = w * var + (1 - w) * given_var
        return (x - use_mean[:, :, None, None]) * torch.rsqrt(use_var[:, :, None, None] + layer.eps)
