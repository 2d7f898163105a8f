#!/usr/bin/env python3
"""Can the colours of the two training folders tell the filter's grade at
all? A probe of a known-answer task (bench/known_answer.py) that needs no
network.

Any unpaired learner that recolours is pulled towards whatever makes the
colours of A's outputs look like B's. This probe does exactly that and no
more, in the most favourable setting: a family of seven-parameter grades
that holds the filter's own (saturation, warm gains and offsets, contrast,
gamma: ``known_answer.grade`` without its posterising) is fitted so that
the colours of A, graded, match B's (sliced Wasserstein distance over 64
directions, Adam on the parameters). It prints the fitted grade, how far
its colours are from B's beside how far the true grade's are, and the PSNR
of the fitted and the true grade on the held-out photos (untouched photos
17.79 dB). If B's colours are nearer to a wrong grade than to the true one,
the split, not the learner, decides what is learned.

    python bench/grade_fit.py --task known      # data/known_answer
    python bench/grade_fit.py --task matched    # data/known_answer_matched
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = {"known": ROOT / "data" / "known_answer", "matched": ROOT / "data" / "known_answer_matched"}
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
#: The filter's grade in this family: saturation, red gain, blue gain, red
#: offset, blue offset, contrast, gamma (known_answer.grade, unposterised).
TRUE = [1.6, 1.12, 0.80, 0.04, -0.03, 0.35, 0.9]
IDENTITY = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def grade(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """N x 3 colours in [0, 1], graded by the seven parameters ``p``."""
    lum = (x @ LUMA)[:, None]
    y = lum + (x - lum) * p[0]
    gain = torch.stack([p[1], torch.ones_like(p[1]), p[2]])
    offset = torch.stack([p[3], torch.zeros_like(p[3]), p[4]])
    y = (y * gain + offset).clamp(0, 1)
    y = (y + p[5] * (y - 0.5) * (1 - (2 * y - 1).abs())).clamp(0, 1)
    return y.clamp_min(1e-6) ** p[6]


def _pixels(folder: Path, count: int, rng: np.random.Generator) -> torch.Tensor:
    rgb = np.concatenate(
        [
            np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255
            for p in sorted(folder.glob("*.png"))
        ]
    )
    return torch.from_numpy(rgb[rng.choice(len(rgb), count, replace=False)])


def _psnr(data: Path, p: list[float]) -> float:
    scores = []
    for path in sorted((data / "test").glob("*.png")):
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255)
        target = np.asarray(Image.open(data / "test_target" / path.name), dtype=np.float64) / 255
        y = grade(x.reshape(-1, 3), torch.tensor(p, dtype=torch.float64)).reshape(x.shape)
        y = np.round(y.numpy() * 255) / 255
        scores.append(10 * np.log10(1 / max(float(np.mean((y - target) ** 2)), 1e-12)))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DATA), default="known")
    parser.add_argument("--pixels", type=int, default=20_000, help="sampled from each folder")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = DATA[args.task]
    rng = np.random.default_rng(args.seed)
    a, b = _pixels(data / "trainA", args.pixels, rng), _pixels(data / "trainB", args.pixels, rng)
    directions = torch.from_numpy(rng.normal(size=(3, 64)))
    directions = directions / directions.norm(dim=0)
    b_sorted = (b @ directions).sort(dim=0).values

    def distance(p: torch.Tensor) -> torch.Tensor:
        projected = grade(a, p) @ directions
        return ((projected.sort(dim=0).values - b_sorted) ** 2).mean()

    params = torch.tensor(IDENTITY, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([params], lr=0.02)
    for _ in range(args.steps):
        optimiser.zero_grad()
        loss = distance(params)
        loss.backward()
        optimiser.step()
    fitted = [round(float(v), 3) for v in params.detach()]
    with torch.no_grad():
        true_distance = float(distance(torch.tensor(TRUE, dtype=torch.float64)))
    report = {
        "task": args.task,
        "fitted": fitted,
        "fitted_distance": float(loss.detach()),
        "true": TRUE,
        "true_distance": true_distance,
        "psnr_untouched": _psnr(data, IDENTITY),
        "psnr_fitted": _psnr(data, fitted),
        "psnr_true": _psnr(data, TRUE),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
