"""Losses: the GAN objectives (LSGAN, vanilla (logistic), hinge and
WGAN-GP with its gradient penalty) and the generators' other losses (L1, the
colour loss). A new loss goes here, as a function of tensors.

``d_loss(real, fake)`` and ``g_loss(fake)`` take discriminator outputs
(raw scores, any shape) and return scalars, computed in float32 whatever
precision the networks ran in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from styler.training.config import GAN_LOSSES


class GanLoss:
    def __init__(self, kind: str) -> None:
        if kind not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {kind!r}: expected one of {', '.join(GAN_LOSSES)}")
        self.kind = kind

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """What the discriminator minimises (real scored high, fake low)."""
        real, fake = real.float(), fake.float()
        if self.kind == "lsgan":
            return 0.5 * ((real - 1).square().mean() + fake.square().mean())
        if self.kind == "vanilla":
            return 0.5 * (
                F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
            )
        if self.kind == "hinge":
            return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        return 0.5 * (fake.mean() - real.mean())  # wgangp (the caller adds the penalty)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """What the generator minimises (its fakes scored as real)."""
        fake = fake.float()
        if self.kind == "lsgan":
            return (fake - 1).square().mean()
        if self.kind == "vanilla":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return -fake.mean()  # hinge and wgangp

    @property
    def needs_penalty(self) -> bool:
        return self.kind == "wgangp"


def gradient_penalty(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """WGAN-GP: (|grad D(x)| - 1)^2 at random points between real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    score = disc(mixed)
    (grad,) = torch.autograd.grad(score.float().sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).abs().mean()


#: RGB -> (Cb, Cr) rows of the JPEG/BT.601 transform (offsets cancel in a difference).
_CHROMA = torch.tensor([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def cell_means(x: torch.Tensor, rows: torch.Tensor, cells: int) -> torch.Tensor:
    """``rows`` (K x 3: colour transforms of RGB) of the mean of ``x`` over a
    grid of about ``cells`` x ``cells`` regions: N x K x cells x cells."""
    size = max(1, x.shape[-1] // cells)
    weights = rows.to(x.device)[:, :, None, None]
    return F.conv2d(F.avg_pool2d(x.float(), size), weights)


def color_loss(output: torch.Tensor, source: torch.Tensor, cells: int = 8) -> torch.Tensor:
    """L1 between the mean chroma (Cb, Cr) of ``output`` and ``source`` over a
    grid of ``cells`` x ``cells`` regions: hues stay where they were, while
    brightness, contrast and texture are free to change."""
    return l1(cell_means(output, _CHROMA, cells), cell_means(source, _CHROMA, cells))


def hue_loss(
    output: torch.Tensor, source: torch.Tensor, cells: int = 8, keep: float = 0.5
) -> torch.Tensor:
    """How far the hues of ``output`` left those of ``source``, over a grid of
    ``cells`` x ``cells`` regions: per cell, the distance from the output's
    mean chroma vector (Cb, Cr) to the source's chroma scaled by any t >=
    ``keep``. A hue kept costs nothing whatever its saturation (above
    ``keep`` times the source's: 0.5, half; 1, only more), brightness or
    texture, so a style may saturate, darken or repaint a region but not
    turn grass purple nor grey it (a loss that let it grey had a generator
    grey every photo); a grey region of the source (no hue) is a single
    point, so colour added to it (a fringe along a grey pier) costs its full
    chroma. Hues are certain above a chroma of about 2% (:data:`_GREY`);
    below it a cell counts as grey, smoothly."""
    c_o = cell_means(output, _CHROMA, cells)
    c_s = cell_means(source, _CHROMA, cells).detach()
    strength = c_s.square().sum(1, keepdim=True)
    norm_s = (strength + 1e-12).sqrt()
    unit_s = c_s / norm_s
    t = (c_o * unit_s).sum(1, keepdim=True).clamp(min=keep * norm_s)  # nearest allowed
    off_hue = ((c_o - t * unit_s).square().sum(1, keepdim=True) + 1e-8).sqrt()
    added = (c_o.square().sum(1, keepdim=True) + 1e-8).sqrt()
    sure = strength / (strength + _GREY**2)
    return (sure * off_hue + (1 - sure) * added).mean()


def luma_loss(output: torch.Tensor, source: torch.Tensor, cells: int = 8) -> torch.Tensor:
    """L1 between the mean luma (BT.601 Y) of ``output`` and ``source`` over a
    grid of ``cells`` x ``cells`` regions: the light and shade of each region
    stay (a sky stays as bright as it was), while texture inside a region,
    and every colour, are free (the partner of :func:`hue_loss`)."""
    return l1(cell_means(output, _LUMA, cells), cell_means(source, _LUMA, cells).detach())


#: RGB -> Y row of the same transform.
_LUMA = torch.tensor([[0.299, 0.587, 0.114]])


#: Chroma (on images in [-1, 1]) below which a region counts as grey in the
#: hue loss: a 2% tint.
_GREY = 0.02


def patch_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (CUT): for each of P patches (N x P x D unit vectors), the
    cross-entropy of picking its own key among the P keys of the same image
    (the others are negatives); keys carry no gradient."""
    key = key.detach()
    positive = (query * key).sum(-1, keepdim=True)  # N x P x 1
    logits = torch.bmm(query, key.transpose(1, 2))  # N x P x P
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    negatives = logits.masked_fill(eye, -10.0)  # a patch is no negative of itself
    scores = torch.cat([positive, negatives], dim=-1) / temperature
    target = torch.zeros(scores.shape[:2], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.flatten(0, 1).float(), target.flatten())


def content_loss(output: list[torch.Tensor], source: list[torch.Tensor]) -> torch.Tensor:
    """L1 between feature maps of the output and of the source image, each
    map divided by the source's mean magnitude so that every scale counts."""
    total = torch.zeros((), device=source[0].device)
    for o, s in zip(output, source, strict=True):
        s = s.detach().float()
        total = total + (o.float() - s).abs().mean() / (s.abs().mean() + 1e-6)
    return total / len(source)


def style_loss(output: list[torch.Tensor], style: list[torch.Tensor]) -> torch.Tensor:
    """L1 between the per-channel mean and standard deviation of feature
    maps of the output and of style images (AdaIN's style statistics; the
    style batch's statistics are averaged over its images). A map of one
    pixel (the deepest, from crops of 32 pixels or less) has a mean and no
    spread."""
    total = torch.zeros((), device=style[0].device)
    for o, s in zip(output, style, strict=True):
        o, s = o.float(), s.detach().float()
        o_mean, s_mean = o.mean((2, 3)), s.mean((2, 3)).mean(0, keepdim=True)
        gap, scale = (o_mean - s_mean).abs().mean(), s_mean.abs().mean() + 1e-6
        if min(o[0, 0].numel(), s[0, 0].numel()) > 1:
            o_std, s_std = o.std((2, 3)), s.std((2, 3)).mean(0, keepdim=True)
            gap, scale = gap + (o_std - s_std).abs().mean(), scale + s_std.mean()
        total = total + gap / scale
    return total / len(style)


def palette_loss(
    output: torch.Tensor,
    style: torch.Tensor,
    generator: torch.Generator,
    directions: int = 32,
    samples: int = 4096,
) -> torch.Tensor:
    """Sliced Wasserstein distance between the colours of ``output``'s pixels
    and ``style``'s (N x 3 x H x W each, any sizes): both sets of RGB values
    (``samples`` of each at most, drawn at random) are projected on random
    directions of colour space, sorted, and compared (the mean absolute gap).
    Zero when the two hold the same colours in any arrangement; it sees a
    palette (how saturated, how warm, how contrasted), not where a colour is."""
    x = output.float().permute(0, 2, 3, 1).reshape(-1, output.shape[1])
    y = style.detach().float().permute(0, 2, 3, 1).reshape(-1, style.shape[1])
    n = min(len(x), len(y), samples)
    cpu = {"generator": generator}
    x = x[torch.randperm(len(x), **cpu)[:n].to(x.device)]
    y = y[torch.randperm(len(y), **cpu)[:n].to(y.device)]
    axes = torch.randn(x.shape[1], directions, **cpu).to(x.device)
    axes = axes / axes.norm(dim=0, keepdim=True)
    return ((x @ axes).sort(0).values - (y @ axes).sort(0).values).abs().mean()
