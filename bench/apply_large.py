"""Benchmark: peak memory and time of `styler apply` on one very large photo.

Makes a WIDTHxHEIGHT photo-like JPEG, exports a generator (random weights; the
cost does not depend on them) and runs the real CLI on it in a child process,
reporting the child's own peak resident memory (VmHWM, read by the child: the
parent's ru_maxrss for children also counts what the parent held when it
forked), the wall time, and the tile plan styler chose.

    python bench/apply_large.py --size 6000x4000 --arch resnet_9blocks --ngf 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from apply_throughput import build_model, make_photos, styler_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000")
    parser.add_argument("--arch", default="resnet_9blocks")
    parser.add_argument("--ngf", type=int, default=64)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_photos(root / "photos", 1, width, height)
        model = build_model(root / "model.onnx", args.arch, args.ngf)
        start = time.perf_counter()
        out = root / "out"
        res, _, peak = styler_cli(
            ["apply", str(root / "photos"), "-m", str(model), "-o", str(out), "--json", "-q"]
        )
        seconds = time.perf_counter() - start
        record = json.loads(res.stdout.splitlines()[0]) if res.stdout else {}
        size_ok = (
            Image.open(record["output"]).size == (width, height) if record.get("output") else False
        )
    from styler.apply import pixel_budget
    from styler.tiling import auto_tile_size

    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "size": args.size,
                "arch": args.arch,
                "ngf": args.ngf,
                "exit_code": res.returncode,
                "status": record.get("status"),
                "output_size_matches": size_ok,
                "seconds": round(seconds, 1),
                "peak_rss_mib": round(peak / 2**20),
                "tile": auto_tile_size(pixel_budget(args.ngf) // 2, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
