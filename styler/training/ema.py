"""An exponential moving average of a generator's weights (Karras et al.,
Yazici et al. 2019): a copy whose weights trail the trained ones,
``avg <- decay * avg + (1 - decay) * w`` after every step. GAN training
oscillates; the average sits near the middle of the oscillation and is
usually the better model, at no cost in training. It is what samples,
scores and the exported model use when it is on."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, step: int) -> float:
    """The decay at ``step`` (0-based): ``decay``, but lower at first so that
    the average does not drag the random start along (as in TensorFlow's
    ExponentialMovingAverage with num_updates)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class Ema:
    """The average of ``net``'s parameters (buffers are copied as they are)."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        decay = ema_decay(self.decay, step)
        for avg, p in zip(self.net.parameters(), net.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(self.net.buffers(), net.buffers(), strict=True):
            avg.copy_(b)
