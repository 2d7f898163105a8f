#!/usr/bin/env python3
"""How much of a known-answer task's gap is colour and how much is
brushwork, and what each is worth (bench/known_answer.py).

Two readings, no training:

- **What the parts are worth beside the best identifiable grade.** The grade
  that ``bench/grade_fit.py`` fits from the training folders' colours (the
  best any learner pulled towards B's colours can find) applied to the
  held-out photos, alone and after a structural filter: Gaussian blurs, the
  textbook Kuwahara filter at several radii, and the smoothing path's soft
  Kuwahara candidates (styler/zoo/smooth.py). PSNR against the filter's
  targets (untouched photos 17.79 dB on both splits).
- **Where a model's error lies.** For each model given: its PSNR, and its
  PSNR after the best affine colour map of each output onto its target (an
  oracle, fitted per image): what the model's structure would score with
  its colours put right. The untouched photos are the first row.

    python bench/ceiling.py --task matched [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import grade_fit  # noqa: E402
import known_answer  # noqa: E402


def _psnr(y: np.ndarray, target: np.ndarray) -> float:
    y = np.round(np.clip(y, 0, 1) * 255) / 255  # as a written 8-bit image
    return float(10 * np.log10(1 / max(float(np.mean((y - target) ** 2)), 1e-12)))


def _graded(rgb: np.ndarray, params: list[float]) -> np.ndarray:
    x = torch.from_numpy(rgb.reshape(-1, 3))
    return grade_fit.grade(x, torch.tensor(params, dtype=torch.float64)).reshape(rgb.shape).numpy()


def _gaussian(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from styler.zoo.smooth import gaussian

    k = gaussian(sigma).double()
    r = k.numel() // 2
    x = torch.from_numpy(rgb).permute(2, 0, 1)[:, None]
    x = torch.nn.functional.pad(x, (r, r, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, k[None, None, None])
    x = torch.nn.functional.pad(x, (0, 0, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k[None, None, :, None])
    return x[:, 0].permute(1, 2, 0).numpy()


def _soft_kuwaharas(rgb: np.ndarray) -> list[np.ndarray]:
    from styler.zoo.smooth import SmoothPath

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() * 2 - 1
    with torch.no_grad():
        out = SmoothPath(3, 1).kuwaharas(x)
    return [(k[0].permute(1, 2, 0).double().numpy() + 1) / 2 for k in out]


def _affine_fit(y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``y`` through the least-squares affine colour map onto ``target``."""
    rows = np.c_[y.reshape(-1, 3), np.ones(y.size // 3)]
    m, *_ = np.linalg.lstsq(rows, target.reshape(-1, 3), rcond=None)
    return (rows @ m).reshape(target.shape)


def parts(data: Path, fitted: list[float]) -> dict[str, float]:
    from styler.zoo.smooth import RADII

    scores: dict[str, list[float]] = {}
    for path in sorted((data / "test").glob("*.png")):
        x = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255
        target = np.asarray(Image.open(data / "test_target" / path.name), np.float64) / 255
        smoothed = {"none": x}
        smoothed |= {f"gaussian sigma {s}": _gaussian(x, s) for s in (1.0, 2.0, 3.0)}
        smoothed |= {f"kuwahara r {r}": known_answer.kuwahara(x, r) for r in (2, 3, 4, 5)}
        soft = _soft_kuwaharas(x)
        smoothed |= {f"soft kuwahara r {r}": k for r, k in zip(RADII, soft, strict=True)}
        for name, y in smoothed.items():
            scores.setdefault(name, []).append(_psnr(_graded(np.clip(y, 0, 1), fitted), target))
    return {k: round(float(np.mean(v)), 2) for k, v in scores.items()}


def split(data: Path, model: Path | None) -> dict[str, float]:
    from styler.apply import Stylizer

    stylizer = Stylizer(model, device="cpu") if model else None
    raw, oracle = [], []
    for path in sorted((data / "test").glob("*.png")):
        x = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        target = np.asarray(Image.open(data / "test_target" / path.name), np.float64) / 255
        y = (stylizer.apply_array(x) if stylizer else x).astype(np.float64)
        raw.append(_psnr(y, target))
        oracle.append(_psnr(_affine_fit(np.clip(y, 0, 1), target), target))
    return {
        "psnr": round(float(np.mean(raw)), 2),
        "colours_put_right": round(float(np.mean(oracle)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(grade_fit.DATA), default="matched")
    parser.add_argument("models", nargs="*", type=Path)
    args = parser.parse_args()
    data = grade_fit.DATA[args.task]
    fit = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "grade_fit.py"), "--task", args.task],
        check=True,
        capture_output=True,
        text=True,
    )
    fitted = json.loads(fit.stdout.strip().splitlines()[-1])["fitted"]
    print(json.dumps({"task": args.task, "fitted_grade": fitted, "then": parts(data, fitted)}))
    for model in [None, *args.models]:
        name = str(model.parent.name if model else "untouched photos")
        print(json.dumps({"model": name, **split(data, model)}))


if __name__ == "__main__":
    main()
