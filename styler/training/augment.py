"""DiffAugment (Zhao et al. 2020): random, differentiable augmentations of
everything a discriminator sees, real and fake alike.

With a few dozen images a discriminator learns them by heart within a few
hundred steps and its gradients stop meaning anything; seen only through
random shifts, cut-outs and colour changes it cannot, and because the same
augmentations are applied to the generator's images (and are
differentiable), the generator is not taught to produce them.

:func:`diff_augment` draws one set of parameters per batch index and applies
it to the i-th image of every batch it is given, so a real image and the fake
at the same index are transformed identically. Images are N x C x H x W in
[-1, 1]; the colour changes are those of the paper (brightness, saturation,
contrast), translation shifts by up to 1/8 of each side (zero-filled),
cut-out zeroes a square of half the side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The paper's settings.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


@dataclass(frozen=True)
class AugmentPolicy:
    """Which augmentations run (each a switch of ``styler train``)."""

    translation: bool = True
    cutout: bool = True
    color: bool = False

    @property
    def active(self) -> bool:
        return self.translation or self.cutout or self.color


def diff_augment(
    batches: list[torch.Tensor], policy: AugmentPolicy, generator: torch.Generator
) -> list[torch.Tensor]:
    """Every batch in ``batches`` (all N x C x H x W with the same N, H, W)
    augmented by the same random transforms, index by index."""
    if not policy.active or not batches:
        return batches
    n, _, h, w = batches[0].shape
    for x in batches:
        if x.shape[0] != n or x.shape[2:] != (h, w):
            raise ValueError("diff_augment needs batches of one size")
    out = batches
    if policy.color:
        params = _color_params(n, generator)
        out = [_color(x, *(p.to(x) for p in params)) for x in out]
    if policy.translation:
        shift = _translation_params(n, h, w, generator)
        out = [_translate(x, *(s.to(x.device) for s in shift)) for x in out]
    if policy.cutout:
        mask = _cutout_mask(n, h, w, generator)
        out = [x * mask.to(x) for x in out]
    return out


def _color_params(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    brightness = torch.rand(n, 1, 1, 1, generator=gen) - 0.5
    saturation = torch.rand(n, 1, 1, 1, generator=gen) * 2
    contrast = torch.rand(n, 1, 1, 1, generator=gen) + 0.5
    return brightness, saturation, contrast


def _color(
    x: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor
) -> torch.Tensor:
    x = x + brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def _translation_params(
    n: int, h: int, w: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    dy, dx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    return (
        torch.randint(-dy, dy + 1, (n,), generator=gen),
        torch.randint(-dx, dx + 1, (n,), generator=gen),
    )


def _translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image shifted by (dy, dx) pixels; what comes in is zero."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # source row of each row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]
    keep = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)
    return moved * keep[:, None].to(x)


def _cutout_mask(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """N x 1 x H x W: ones, with a (h/2 x w/2) square of zeros per image
    centred anywhere in it (clipped at the borders)."""
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=gen)
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])
    in_x = (xs >= (cx - cw // 2)[:, None]) & (xs < (cx - cw // 2 + cw)[:, None])
    hole = in_y[:, :, None] & in_x[:, None, :]
    return (~hole).float()[:, None]
