#!/usr/bin/env python3
"""Which of a CUT run's generator losses pull its smoothing path which way.

Loads a run's last checkpoint, draws crops of the task's two training
folders (as training does: the shorter side scaled to the run's load size,
then a random crop of the run's size), and prints, for each generator loss
(discriminators frozen, as in training), its gradient with respect to the
bias of the smoothing path's last layer, one number per blur (sigma 1, 2,
3), averaged over a few batches. Negative: that loss wants more smoothing;
positive: less (or sharpening); zero: it does not reach the path (PatchNCE,
which compares the output before it).

    python bench/gradient_probe.py data/recipe_runs/matched/NAME-1500 --task matched
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = {"known": ROOT / "data" / "known_answer", "matched": ROOT / "data" / "known_answer_matched"}


def crops(folder: Path, count: int, load: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    files = sorted(folder.glob("*.png"))
    out = []
    for _ in range(count):
        im = Image.open(files[rng.integers(len(files))]).convert("RGB")
        s = load / min(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
        x, y = rng.integers(0, im.size[0] - side + 1), rng.integers(0, im.size[1] - side + 1)
        out.append(np.asarray(im.crop((x, y, x + side, y + side)), np.float32) / 127.5 - 1)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--task", choices=sorted(DATA), default="matched")
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from styler.training import state
    from styler.training.config import TrainConfig
    from styler.training.modes import build_trainer
    from styler.training.seeds import seeded
    from styler.training.trainer import set_requires_grad

    config = TrainConfig.from_json((args.run / "config.json").read_text())
    trainer = build_trainer(config, "cpu")
    ckpt, _ = state.newest(args.run / "checkpoints", config)
    if ckpt is None:
        raise SystemExit(f"no readable checkpoint in {args.run / 'checkpoints'}")
    state.restore_networks(trainer, ckpt)
    if config.mode.name not in ("cut", "fastcut") or trainer.nets["G"].smooth is None:
        raise SystemExit(f"{args.run} is not a CUT or FastCUT run with a smoothing path")
    bias = trainer.nets["G"].smooth.gate[-1].bias
    set_requires_grad(trainer.discs, False)
    rng = np.random.default_rng(0)
    grads: dict[str, list[torch.Tensor]] = {}
    for i in range(args.batches):
        a = crops(DATA[args.task] / "trainA", 4, config.load_size, config.size, rng)
        b = crops(DATA[args.task] / "trainB", 4, config.load_size, config.size, rng)
        out, content, feats = trainer.G.forward_with_features(a, trainer.layers)
        gen = seeded(0, "probe", i, 0)
        losses = trainer._generator_losses(a, b, (out, content), feats, False, gen)
        for name, loss in losses.items():
            (g,) = torch.autograd.grad(loss, bias, retain_graph=True, allow_unused=True)
            grads.setdefault(name, []).append(torch.zeros_like(bias) if g is None else g)
    for name, gs in grads.items():
        mean = torch.stack(gs).mean(0).tolist()
        print(f"{name:10s} " + " ".join(f"{v:+.4f}" for v in mean))


if __name__ == "__main__":
    main()
