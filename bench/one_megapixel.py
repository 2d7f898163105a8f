"""Benchmark: the shipped default model on a 1-megapixel photo (1224x816),
through the Python API with the session open, and through the whole
`styler apply` command (start-up, decode, encode included).

    python bench/one_megapixel.py [--repeat 5]

The baselines in the same run: the same session on a 512x341 image (a
sixth of the pixels), which shows how the time scales with the size, and,
with ``--baseline MODEL``, another model timed in turns with it on the
same photo (for example the model shipped before: same network, same cost
expected), so that a busy machine shows in both.

    python bench/one_megapixel.py --baseline old_photo2painting.onnx
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
from recipes import machine

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
    parser.add_argument("--model", default=None, help="[default: the shipped default]")
    parser.add_argument("--baseline", default=None, help="another model, timed in turns")
    args = parser.parse_args()
    big = Image.open(PHOTO).convert("RGB").resize(BIG, Image.LANCZOS)
    small = big.resize(SMALL, Image.LANCZOS)
    stylizer = Stylizer(args.model, device="cpu")
    api_small = timed(stylizer, small, args.repeat)
    api_big = timed(stylizer, big, args.repeat)
    against: dict[str, float | str] = {}
    if args.baseline:
        other = Stylizer(args.baseline, device="cpu")
        mine, theirs = [], []
        for _ in range(args.repeat):  # in turns: load on the machine falls on both
            theirs.append(timed(other, big, 1))
            mine.append(timed(stylizer, big, 1))
        against = {
            "baseline": str(args.baseline),
            "baseline_seconds_1224x816": round(statistics.median(theirs), 3),
            "in_turns_seconds_1224x816": round(statistics.median(mine), 3),
            "ratio_to_baseline": round(statistics.median(mine) / statistics.median(theirs), 3),
        }
    cli = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "one_mp.jpg"
        big.save(photo, quality=92)
        for i in range(3):
            start = time.perf_counter()
            model = ["-m", str(args.model)] if args.model else []
            command = [sys.executable, "-m", "styler", "apply", str(photo), *model]
            subprocess.run(
                [*command, "-o", f"{tmp}/out{i}", "-q"],
                check=True,
                capture_output=True,
            )
            cli.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                **machine(),
                "model": str(resolve_model(args.model).name),
                "api_seconds_1224x816": round(api_big, 3),
                "api_seconds_512x341": round(api_small, 3),
                "ratio_time_per_pixel_big_vs_small": round(
                    (api_big / (BIG[0] * BIG[1])) / (api_small / (SMALL[0] * SMALL[1])), 3
                ),
                "cli_seconds_1224x816": round(statistics.median(cli), 3),
                **against,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
