"""Benchmark: the shipped default model on a 1-megapixel photo (1224x816),
through the Python API with the session open, and through the whole
`styler apply` command (start-up, decode, encode included).

    python bench/one_megapixel.py [--repeat 5]

The baseline in the same run is the same session on a 512x341 image (a
quarter of the pixels), which shows how the time scales with the size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from styler.apply import Stylizer
from styler.shipped import resolve_model

PHOTO = Path(__file__).parent.parent / "examples" / "photos" / "picos_de_europa.jpg"
BIG, SMALL = (1224, 816), (512, 341)


def timed(stylizer: Stylizer, image: Image.Image, repeat: int) -> float:
    stylizer.apply(image)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        stylizer.apply(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    big = Image.open(PHOTO).convert("RGB").resize(BIG, Image.LANCZOS)
    small = big.resize(SMALL, Image.LANCZOS)
    stylizer = Stylizer(None, device="cpu")
    api_small = timed(stylizer, small, args.repeat)
    api_big = timed(stylizer, big, args.repeat)
    cli = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "one_mp.jpg"
        big.save(photo, quality=92)
        for i in range(3):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "styler", "apply", str(photo), "-o", f"{tmp}/out{i}", "-q"],
                check=True,
                capture_output=True,
            )
            cli.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "model": str(resolve_model(None).name),
                "api_seconds_1224x816": round(api_big, 3),
                "api_seconds_512x341": round(api_small, 3),
                "ratio_time_per_pixel_big_vs_small": round(
                    (api_big / (BIG[0] * BIG[1])) / (api_small / (SMALL[0] * SMALL[1])), 3
                ),
                "cli_seconds_1224x816": round(statistics.median(cli), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
