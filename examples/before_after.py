"""Draw the README's before/after picture: each example photo above its
styled copy, side by side, written atomically as a JPEG.

    styler apply examples/photos -o examples/styled
    python examples/before_after.py examples/photos examples/styled docs/images/before_after.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from styler.fsutil import atomic_path

HEIGHT = 200  # of each tile, in pixels
GAP = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("styled", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--names", nargs="*", help="which photos (stems), in order [all]")
    args = parser.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))
    if args.names:
        photos = [args.photos / f"{name}.jpg" for name in args.names]
    pairs = []
    for photo in photos:
        styled = args.styled / photo.name
        if not styled.exists():
            raise SystemExit(f"{styled}: missing; run styler apply first")
        before, after = Image.open(photo).convert("RGB"), Image.open(styled).convert("RGB")
        width = round(before.width * HEIGHT / before.height)
        size = (width, HEIGHT)
        pairs.append((before.resize(size, Image.LANCZOS), after.resize(size, Image.LANCZOS)))
    total = sum(b.width for b, _ in pairs) + GAP * (len(pairs) + 1)
    canvas = Image.new("RGB", (total, 2 * HEIGHT + 3 * GAP), "white")
    x = GAP
    for before, after in pairs:
        canvas.paste(before, (x, GAP))
        canvas.paste(after, (x, 2 * GAP + HEIGHT))
        x += before.width + GAP
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as part:
        canvas.save(part, "JPEG", quality=88)
    print(args.output)


if __name__ == "__main__":
    main()
