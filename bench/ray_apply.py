"""Benchmark: `styler apply --ray` against a local `styler apply`, same folder.

Three measurements, each through the real CLI in a child process (whose own
peak resident memory, VmHWM, is the driver's: Ray's workers are other
processes):

1. the same ``--images`` photos styled locally and on a Ray started by the
   command (``--ray``), the shipped default model: images per second of
   each, wall time from the command's start (so Ray's start-up is counted),
   and their ratio (Ray's overhead on one machine);
2. the driver's peak memory with ``--paths`` listed inputs (copies of one
   tiny PNG), planned without styling (``--dry-run``), locally and with
   ``--ray``: what holding the listing costs (no image is ever in the driver);
3. the per-image cost from (1), which BENCHMARKS.md turns into a paper
   estimate for 10 million images on N nodes.

    python bench/ray_apply.py --images 200 --size 640x480 --paths 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from apply_throughput import make_photos, styler_cli

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "weights" / "photo2painting.onnx"


def cpu() -> dict[str, object]:
    name, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512_bf16", "avx512_vnni")
    return {"cpu": name, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def styled(src: Path, out: Path, *extra: str) -> dict[str, float]:
    res, seconds, peak = styler_cli(
        ["apply", str(src), "-m", str(MODEL), "-o", str(out), "-q", *extra]
    )
    if res.returncode != 0:
        raise SystemExit(f"styler apply {' '.join(extra)} failed: {res.stderr[-2000:]}")
    images = len(res.stdout.split())
    return {
        "seconds": seconds,
        "images": images,
        "per_s": images / seconds,
        "peak_mb": peak / 2**20,
    }


def planned(src: Path, out: Path, *extra: str) -> dict[str, float]:
    res, seconds, peak = styler_cli(["apply", str(src), "-o", str(out), "--dry-run", "-q", *extra])
    if res.returncode != 0:
        raise SystemExit(f"styler apply --dry-run {' '.join(extra)} failed: {res.stderr[-2000:]}")
    return {"seconds": seconds, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--paths", type=int, default=100_000)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    report: dict[str, object] = {**cpu(), "images": args.images, "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_photos(root / "photos", args.images, width, height)
        report["local"] = styled(root / "photos", root / "out_local")
        report["ray"] = styled(root / "photos", root / "out_ray", "--ray")
        local, ray = report["local"], report["ray"]
        report["ray_speed_ratio"] = ray["per_s"] / local["per_s"]  # type: ignore[index]
        same = all(
            (root / "out_local" / p.name).read_bytes() == p.read_bytes()
            for p in (root / "out_ray").iterdir()
        )
        report["same_bytes"] = same
        print(json.dumps(report), file=sys.stderr, flush=True)
        many = root / "many"
        many.mkdir()
        Image.new("RGB", (8, 8), (90, 120, 150)).save(root / "one.png")
        tiny = (root / "one.png").read_bytes()
        for i in range(args.paths):
            (many / f"p{i:06d}.png").write_bytes(tiny)
        report["paths"] = args.paths
        report["plan_local"] = planned(many, root / "plan_local")
        report["plan_ray"] = planned(many, root / "plan_ray", "--ray")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
