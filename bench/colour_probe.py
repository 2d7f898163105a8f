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
    python bench/colour_probe.py --blur 4 --steps 1000 --task matched  # the matched split

``--match K`` replaces the discriminator with a teacher that needs none:
each 8 x 8 patch of a domain-A photo is given the mean colour of the K
domain-B patches nearest to it in Lite0 features (of the grey images, or of
the colour ones with ``--match-colour``), and the recolouring is fitted to
those colours (an L1 loss on 8 x 8 averages). If what a patch shows told its
colour, this would recover the grade without a discriminator's noise.

    python bench/colour_probe.py --match 8 --steps 300
    python bench/colour_probe.py --match 1 --match-colour --steps 200

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
from styler.zoo.lite0 import Lite0Features  # noqa: E402
from styler.zoo.projected import ProjectedDiscriminator  # noqa: E402
from styler.zoo.resnet import color_mlp  # noqa: E402

DATA = {"known": ROOT / "data" / "known_answer", "matched": ROOT / "data" / "known_answer_matched"}


def _images(data: Path, folder: str) -> list[torch.Tensor]:
    return [
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1).permute(
            2, 0, 1
        )
        for p in sorted((data / folder).glob("*.png"))
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


#: The teacher's patches: Lite0's second stage, 1/8 of the input's side.
MATCH_STAGE, MATCH_STRIDE = 1, 8


def _patches(
    net: Lite0Features, x: torch.Tensor, colour: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image -> (unit Lite0 features, mean colours) of its 8 x 8 patches,
    each ``C x h x w``."""
    with torch.no_grad():
        seen = x if colour else x.mean(0, keepdim=True).expand(3, -1, -1)
        f = F.normalize(net(seen[None], stages=MATCH_STAGE + 1)[MATCH_STAGE][0], dim=0)
        c = F.avg_pool2d(x[None], MATCH_STRIDE, ceil_mode=True)[0]
    h, w = min(f.shape[1], c.shape[1]), min(f.shape[2], c.shape[2])
    return f[:, :h, :w], c[:, :h, :w]


def _match_targets(
    a: list[torch.Tensor], b: list[torch.Tensor], k: int, colour: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each A photo with the colours its patches' K nearest B patches have."""
    net = Lite0Features()
    bank = [_patches(net, x, colour) for x in b]
    keys = torch.cat([f.flatten(1).T for f, _ in bank])
    colours = torch.cat([c.flatten(1).T for _, c in bank])
    out = []
    for x in a:
        f, _ = _patches(net, x, colour)
        nearest = (f.flatten(1).T @ keys.T).topk(k, dim=1).indices
        out.append((x, colours[nearest].mean(1).T.reshape(3, *f.shape[1:])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DATA), default="known", help="the split")
    parser.add_argument("--blur", type=int, default=1, help="the discriminator's view, pooled")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--match", type=int, default=0, help="the nearest-patch teacher's K")
    parser.add_argument("--match-colour", action="store_true", help="match colour features")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = DATA[args.task]
    a, b = _images(data, "trainA"), _images(data, "trainB")
    photos, targets = _images(data, "test"), _images(data, "test_target")

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
    if args.match:
        pairs = _match_targets(a, b, args.match, args.match_colour)
        opt_g = torch.optim.Adam(recolour.parameters(), 1e-3)
    for step in range(1, args.steps + 1):
        if args.match:
            opt_g.zero_grad()
            sum(_match_loss(recolour, x, t) for x, t in pairs).backward()
            opt_g.step()
            _report(args, step, recolour, photos, targets, began)
            continue
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
        _report(args, step, recolour, photos, targets, began)


def _match_loss(recolour: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    y = (x[None] + recolour(x[None])).clamp(-1, 1)
    h, w = target.shape[1:]
    return F.l1_loss(F.avg_pool2d(y, MATCH_STRIDE, ceil_mode=True)[0, :, :h, :w], target)


def _report(
    args: argparse.Namespace,
    step: int,
    recolour: torch.nn.Module,
    photos: list[torch.Tensor],
    targets: list[torch.Tensor],
    began: float,
) -> None:
    if step % 100 == 0:
        psnr = _psnr(recolour, photos, targets)
        seconds = time.perf_counter() - began
        teacher = {"blur": args.blur}
        if args.match:
            teacher = {"match": args.match, "colour": args.match_colour}
        print(json.dumps({**teacher, "step": step, "psnr": round(psnr, 2),
                          "seconds": round(seconds, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
