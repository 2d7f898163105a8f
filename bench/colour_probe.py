#!/usr/bin/env python3
"""Can a discriminator teach a colour grade from unpaired images? A probe on
the known-answer task (bench/known_answer.py).

The generator can only recolour: each pixel goes through a small per-pixel
MLP (styler's ``--color-mlp`` path: ``x + mlp(x)``, starting at the
identity), so it cannot copy the filter's brushwork, only its grade, which
alone would score 23.38 dB. It is trained against styler's projected
discriminator (frozen EfficientNet-Lite0 features, DiffAugment translation
and cut-out), seeing the images as they are or averaged over ``--blur`` x
``--blur`` pixels (so that texture, which a recolouring cannot match, is
out of view), and scored on the 20 held-out photos every 100 steps.

    python bench/colour_probe.py --blur 1 --steps 1000
    python bench/colour_probe.py --blur 4 --steps 1000

Prints one JSON line per 100 steps: step, PSNR of the held-out outputs
against the filter's output (the untouched photos: 17.79 dB), seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from styler.netconfig import ProjectedDiscriminatorConfig  # noqa: E402
from styler.training.augment import AugmentPolicy, diff_augment  # noqa: E402
from styler.training.losses import GanLoss  # noqa: E402
from styler.zoo.projected import ProjectedDiscriminator  # noqa: E402
from styler.zoo.resnet import color_mlp  # noqa: E402

DATA = ROOT / "data" / "known_answer"


def _images(folder: str) -> list[torch.Tensor]:
    return [
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1).permute(
            2, 0, 1
        )
        for p in sorted((DATA / folder).glob("*.png"))
    ]


def _crops(images: list[torch.Tensor], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """n random crops at a random scale (0.6-1) with random flips."""
    out = []
    for _ in range(n):
        im = images[rng.integers(len(images))][None]
        im = F.interpolate(im, scale_factor=rng.uniform(0.6, 1.0), mode="bilinear", antialias=True)
        _, _, h, w = im.shape
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        crop = im[0, :, y : y + size, x : x + size]
        out.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.stack(out)


def _psnr(
    recolour: torch.nn.Module, photos: list[torch.Tensor], targets: list[torch.Tensor]
) -> float:
    scores = []
    with torch.no_grad():
        for x, t in zip(photos, targets, strict=True):
            y = ((x[None] + recolour(x[None])).clamp(-1, 1)[0] + 1) / 2
            y = (y * 255).round() / 255  # as a written 8-bit image
            scores.append(float(10 * torch.log10(1 / ((y - (t + 1) / 2) ** 2).mean())))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blur", type=int, default=1, help="the discriminator's view, pooled")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    a, b = _images("trainA"), _images("trainB")
    photos, targets = _images("test"), _images("test_target")

    recolour = color_mlp(3, 3, 32)
    assert recolour is not None
    for layer in recolour:
        if isinstance(layer, torch.nn.Conv2d):
            layer.reset_parameters()
    torch.nn.init.zeros_(recolour[-1].weight)  # the identity at the start
    torch.nn.init.zeros_(recolour[-1].bias)
    disc = ProjectedDiscriminator(ProjectedDiscriminatorConfig())
    gan = GanLoss("lsgan")
    opt_g = torch.optim.Adam(recolour.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    policy = AugmentPolicy(translation=True, cutout=True, color=False)
    gen = torch.Generator().manual_seed(args.seed)

    def judge(x: torch.Tensor) -> torch.Tensor:
        if args.blur > 1:
            x = F.avg_pool2d(x, args.blur)
            x = F.interpolate(x, scale_factor=args.blur, mode="bilinear")
        return disc(x)

    began = time.perf_counter()
    for step in range(1, args.steps + 1):
        real_a = _crops(a, args.batch, args.size, rng)
        real_b = _crops(b, args.batch, args.size, rng)
        fake = (real_a + recolour(real_a)).clamp(-1, 1)
        real_seen, fake_seen = diff_augment([real_b, fake.detach()], policy, gen)
        opt_d.zero_grad()
        gan.d_loss(judge(real_seen), judge(fake_seen)).backward()
        opt_d.step()
        (fake_seen,) = diff_augment([fake], policy, gen)
        opt_g.zero_grad()
        gan.g_loss(judge(fake_seen)).backward()
        opt_g.step()
        if step % 100 == 0:
            psnr = _psnr(recolour, photos, targets)
            seconds = time.perf_counter() - began
            print(json.dumps({"blur": args.blur, "step": step, "psnr": round(psnr, 2),
                              "seconds": round(seconds, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
