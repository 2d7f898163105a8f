"""Write scikit-learn's handwritten digits (1,797 images, 8x8, 17 grey levels)
as PNG files in one folder per class, for `styler train DIGITS/`.

    pip install scikit-learn
    python examples/make_digits.py data/digits
    styler train data/digits -o runs/digits --steps 3000
    styler generate runs/digits/digits_generator.onnx -n 64 --grid digits.png

The digits come from the UCI ML hand-written digits data set, as shipped in
the scikit-learn wheel (BSD-3-Clause); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder to create (class subfolders 0..9)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder")
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("make_digits: needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 2
    if args.output.exists() and any(args.output.iterdir()) and not args.force:
        print(f"make_digits: {args.output} is not empty (use --force)", file=sys.stderr)
        return 2
    digits = load_digits()
    # Values 0..16 -> 0..255, white digits on black as the data has them.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    counts = [0] * 10
    for i, (image, label) in enumerate(zip(images, digits.target, strict=True)):
        folder = args.output / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{i:04d}.png")
        counts[label] += 1
    print(
        f"wrote {sum(counts)} digits to {args.output}: "
        + ", ".join(f"{d}: {n}" for d, n in enumerate(counts))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
