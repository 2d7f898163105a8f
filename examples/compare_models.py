"""Draw photos beside what each model makes of them: one row per photo, the
photo first, then one column per model, written atomically as a JPEG.

    python examples/compare_models.py data/p2p_split/second docs/images/x.jpg \\
        old.onnx photo2painting --names kde__Kite skimage__coffee --label old --label new
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from styler import imageio
from styler.apply import Stylizer
from styler.fsutil import atomic_path

WIDTH = 256  # of each tile, in pixels
GAP = 4
LABEL = 18  # height of the label strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of photos")
    parser.add_argument("output", type=Path)
    parser.add_argument("models", nargs="+", help="model files or shipped model names")
    parser.add_argument("--names", nargs="*", help="which photos (stems), in order [all]")
    parser.add_argument("--label", action="append", default=[], help="a column title per model")
    parser.add_argument("--side", type=int, default=768, help="photos scaled to this longest side")
    args = parser.parse_args()
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if args.names:
        by_stem = {p.stem: p for p in files}
        files = [by_stem[name] for name in args.names]
    stylizers = [Stylizer(m, device="cpu") for m in args.models]
    labels = ["photo", *(args.label or [Path(m).stem for m in args.models])]
    rows = []
    for file in files:
        photo = imageio.limit_size(imageio.load_image(file), args.side).rgb
        tiles = [photo, *(s.apply_array(photo) for s in stylizers)]
        height = round(WIDTH * photo.shape[0] / photo.shape[1])
        rows.append([_tile(t, (WIDTH, height)) for t in tiles])
    columns = len(rows[0])
    total_h = LABEL + sum(r[0].height + GAP for r in rows) + GAP
    canvas = Image.new("RGB", (columns * (WIDTH + GAP) + GAP, total_h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((GAP + c * (WIDTH + GAP) + 4, 3), label, fill="black")
    y = LABEL
    for row in rows:
        for c, tile in enumerate(row):
            canvas.paste(tile, (GAP + c * (WIDTH + GAP), y))
        y += row[0].height + GAP
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as part:
        canvas.save(part, "JPEG", quality=88)
    print(args.output)


def _tile(rgb: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    return image.resize(size, Image.LANCZOS)


if __name__ == "__main__":
    main()
