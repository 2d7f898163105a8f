"""Benchmark: how good are generated digits? Against an untrained generator.

1. A small classifier (MLP 64-128-64-10) is trained on 80% of scikit-learn's
   real digits; its accuracy on the other 20% says it can be trusted.
2. The trained generator (an ONNX model from `styler train DIGITS/`) makes
   ``--per-class`` images of every class with `styler.generate` (onnxruntime);
   the classifier's accuracy on them, per class, says whether each is the
   digit that was asked for.
3. The Fréchet distance between real and generated digits in the
   classifier's 64-dimensional penultimate features says how close their
   distributions are (lower is better).
4. The same numbers for the same architecture, untrained (initialised as
   training starts it), exported and sampled the same way.

    python examples/make_digits.py data/digits
    styler train data/digits -o runs/digits --steps 3000
    python bench/digits_quality.py runs/digits/digits_generator.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU()
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i : i + 128]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from styler.metrics import fid

    return float(fid(a, b))


@torch.no_grad()
def judge(net: Classifier, images: np.ndarray, labels: np.ndarray, real_feats: np.ndarray) -> dict:
    x = torch.from_numpy(images)
    pred = net(x).argmax(1).numpy()
    feats = net.features(x).numpy()
    per_class = {str(k): round(float((pred[labels == k] == k).mean()), 3) for k in range(10)}
    return {
        "accuracy": round(float((pred == labels).mean()), 3),
        "accuracy_per_class": per_class,
        "frechet_distance": round(frechet(real_feats, feats), 3),
    }


def sample(model: Path, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from styler.generate import ImageGenerator

    gen = ImageGenerator(model, device="cpu")
    items = gen.sample(per_class * 10, seed=seed)  # classes in turn
    names = gen.classes
    images = np.stack([i.image[:, :, 0] for i in items]).astype(np.float32) / 255.0
    labels = np.array([int(names[i.label]) for i in items])  # class folder names are digits
    return images, labels


def untrained_model(trained: Path, out: Path, seed: int) -> Path:
    from styler import zoo
    from styler.export import export_generator
    from styler.runtime import Model

    meta = Model.open(trained, device="cpu").meta
    torch.manual_seed(seed)
    net = zoo.build(meta.network)
    export_generator(net, meta, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the trained generator (.onnx)")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(args.seed).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    net = train_classifier(x[train], y[train], args.seed)
    with torch.no_grad():
        real_feats = net.features(torch.from_numpy(x)).numpy()
        test_acc = float((net(torch.from_numpy(x[test])).argmax(1).numpy() == y[test]).mean())
    report = {
        "classifier_accuracy_on_held_out_real_digits": round(test_acc, 3),
        "frechet_real_train_vs_real_test": round(frechet(real_feats[train], real_feats[test]), 3),
        "samples_per_class": args.per_class,
    }
    images, labels = sample(args.model, args.per_class, args.seed)
    report["trained"] = judge(net, images, labels, real_feats)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = untrained_model(args.model, Path(tmp) / "untrained.onnx", args.seed)
        images, labels = sample(baseline, args.per_class, args.seed)
        report["untrained"] = judge(net, images, labels, real_feats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
