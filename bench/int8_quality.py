"""Benchmark: an int8 copy of a trained model against the model itself.

Quantises MODEL (default: the shipped photo2painting) with `styler.quantize`,
calibrated on the first half of the photos, then on the other half (never
seen by the calibration), at full size and at 1224x816:

- quality: PSNR of the int8 output against the fp32 output (8-bit scale), and
  the largest pixel difference;
- speed: seconds per image through the Python API with the session open,
  median of --repeat runs after a warm-up, fp32 and int8 in the same run.

Needs the `train` extra (onnx) to quantise.

    python bench/int8_quality.py
    python bench/int8_quality.py --model my.onnx --photos my_photos/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def seconds(stylizer: object, rgb: np.ndarray, repeat: int) -> float:
    stylizer.apply_array(rgb)  # type: ignore[attr-defined]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        stylizer.apply_array(rgb)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from styler import imageio, metrics
    from styler.apply import Stylizer
    from styler.quantize import load_calibration, quantize_int8

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "weights" / "photo2painting.onnx")
    parser.add_argument("--photos", type=Path, default=ROOT / "examples" / "photos")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    half = len(photos) // 2
    calibration, held_out = photos[:half], photos[half:]
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "model.int8.onnx"
        result = quantize_int8(args.model, int8_path, load_calibration(calibration), min_psnr=0)
        fp32 = Stylizer(args.model, device="cpu", threads=args.threads)
        int8 = Stylizer(int8_path, device="cpu", threads=args.threads)
        rows = []
        for path in held_out:
            with Image.open(path) as image:
                sizes = {"full": image.copy(), "1224x816": image.resize((1224, 816))}
            for label, image in sizes.items():
                rgb = imageio.decode_pil(image).rgb
                a, b = fp32.apply_array(rgb), int8.apply_array(rgb)
                rows.append(
                    {
                        "photo": path.name,
                        "size": f"{rgb.shape[1]}x{rgb.shape[0]}" if label == "full" else label,
                        "psnr_db": round(metrics.psnr(a, b), 2),
                        "max_diff_8bit": round(float(np.abs(a - b).max() * 255), 1),
                        "fp32_s": round(seconds(fp32, rgb, args.repeat), 3),
                        "int8_s": round(seconds(int8, rgb, args.repeat), 3),
                    }
                )
    for row in rows:
        row["speedup"] = round(row["fp32_s"] / row["int8_s"], 2)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "model": args.model.name,
                "calibration": [p.name for p in calibration],
                "calibration_psnr_db": round(result.psnr, 2),
                "held_out": rows,
                "mean_psnr_db": round(statistics.mean(r["psnr_db"] for r in rows), 2),
                "median_speedup": statistics.median(r["speedup"] for r in rows),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
