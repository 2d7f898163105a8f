"""Benchmark: `styler apply` against a plain PyTorch eager loop, same weights.

Both process the same folder of full-resolution JPEG photos, one after the
other, in separate processes so that neither warms the other's caches:

- baseline: the textbook loop (PIL decode -> tensor -> pad -> net(x) in eager
  PyTorch under no_grad -> crop -> PIL encode), one image at a time;
- styler: `styler apply DIR -m MODEL.onnx -o OUT` through the real CLI.

Reports images per second for each and their ratio, plus each process's peak
resident memory. Needs the `train` extra (the baseline runs torch).

    python bench/apply_throughput.py --images 12 --size 768x512 --arch resnet_9blocks --ngf 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_photos(folder: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """Smooth random photos-like images (low-frequency colour fields plus detail)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.uniform(0, 255, size=(height // 32 + 1, width // 32 + 1, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
        noise = rng.normal(0, 12, size=(height, width, 3))
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo_{i:03d}.jpg", quality=92)


def build_model(path: Path, arch: str, ngf: int) -> Path:
    """Weights as training starts them (normal, gain 0.02), saved as a styler
    checkpoint and exported; the speed does not depend on their values."""
    import torch

    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset(arch, ngf=ngf)
    net = zoo.build(config)
    meta = ModelMetadata(network=config, name=f"bench-{arch}-ngf{ngf}")
    save_generator(path.with_suffix(".safetensors"), net.state_dict(), meta)
    export_onnx(net, meta, path)
    return path


# Peak resident memory of the process itself (VmHWM). ru_maxrss is no good
# here: Linux carries the parent's peak over fork and exec into the child.
PEAK_CODE = """
def PEAK():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
"""

BASELINE = (
    PEAK_CODE
    + r"""
import sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
from styler.checkpoint import build_generator, load_generator
torch.set_num_threads(int(sys.argv[4]))
meta, state = load_generator(sys.argv[1])
net = build_generator(meta, state)
src, out = Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
files = sorted(src.glob("*.jpg"))
crop = int(sys.argv[5])  # 0: full size; else the reference test script's resize to crop x crop
pixels = 0
start = time.perf_counter()
with torch.no_grad():
    for f in files:
        img = Image.open(f).convert("RGB")
        if crop:
            img = img.resize((crop, crop), Image.BICUBIC)
        pixels += img.width * img.height
        x = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        h, w = x.shape[2:]
        x = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect")
        y = net(x)[0, :, :h, :w]
        arr = ((y.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).round().astype(np.uint8)
        Image.fromarray(arr).save(out / f.name, quality=95)
seconds = time.perf_counter() - start
print(seconds, len(files), PEAK(), pixels)
"""
)


def run_baseline(ckpt: Path, src: Path, out: Path, threads: int, crop: int = 0) -> dict[str, float]:
    """The eager loop at full size, or (``crop``) at the reference test
    script's default of resizing every image to crop x crop."""
    res = subprocess.run(
        [sys.executable, "-c", BASELINE, str(ckpt), str(src), str(out), str(threads), str(crop)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, count, rss, pixels = res.stdout.split()
    return {
        "seconds": float(seconds),
        "images": int(count),
        "peak_rss_mb": int(rss) / 2**20,
        "pixels": int(pixels),
    }


def styler_cli(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """The real CLI in a child process: the finished process, the seconds
    ``main`` took inside it, and the child's own peak memory (VmHWM, bytes)."""
    code = (
        PEAK_CODE + "import sys, time\n"
        "from styler.cli import main\n"
        "t = time.perf_counter()\n"
        "rc = main(sys.argv[1:])\n"
        "print('BENCH', time.perf_counter() - t, PEAK(), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    line = next((x for x in res.stderr.splitlines() if x.startswith("BENCH ")), "BENCH 0 0")
    _, seconds, peak = line.split()
    return res, float(seconds), int(peak)


def run_styler(model: Path, src: Path, out: Path, threads: int) -> dict[str, float]:
    res, seconds, peak = styler_cli(
        ["apply", str(src), "-m", str(model), "-o", str(out), "--threads", str(threads), "-q"]
    )
    assert res.returncode == 0, res.stderr
    count = len(res.stdout.split())
    return {"seconds": seconds, "images": count, "peak_rss_mb": peak / 2**20}


def export_checkpoint(checkpoint: Path, path: Path) -> Path:
    """A given styler generator checkpoint, exported beside a copy of it."""
    import shutil

    from styler.export import export_checkpoint as export

    shutil.copy(checkpoint, path.with_suffix(".safetensors"))
    export(path.with_suffix(".safetensors"), path)
    return path


def quantized(model: Path, photos: Path, path: Path) -> float:
    """Write an int8 copy of ``model`` calibrated on the benchmark photos to
    ``path``; its PSNR against fp32. The benchmark's untrained weights are a
    hard case for int8, so no minimum is asked: the PSNR is reported."""
    from styler.quantize import load_calibration, quantize_int8

    calibration = load_calibration(sorted(photos.glob("*.jpg")))
    return quantize_int8(model, path, calibration, min_psnr=0.0).psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--arch", default="resnet_9blocks")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two runs this often")
    parser.add_argument(
        "--int8", action="store_true", help="also run an int8 copy (styler quantize) of the model"
    )
    parser.add_argument("--model", type=Path, help="use this styler checkpoint (.safetensors)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_photos(root / "photos", args.images, width, height)
        if args.model:
            model = export_checkpoint(args.model, root / "model.onnx")
        else:
            model = build_model(root / "model.onnx", args.arch, args.ngf)
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "styler": []}
        if args.int8:
            int8 = root / "model.int8.onnx"
            int8_psnr = quantized(model, root / "photos", int8)
            runs["styler-int8"] = []
        runs["reference-256"] = []
        for i in range(args.repeat):
            runs["reference-256"].append(
                run_baseline(
                    model.with_suffix(".safetensors"),
                    root / "photos",
                    root / f"r{i}",
                    args.threads,
                    crop=256,
                )
            )
            runs["baseline"].append(
                run_baseline(
                    model.with_suffix(".safetensors"), root / "photos", root / f"b{i}", args.threads
                )
            )
            runs["styler"].append(run_styler(model, root / "photos", root / f"s{i}", args.threads))
            if args.int8:
                runs["styler-int8"].append(
                    run_styler(int8, root / "photos", root / f"q{i}", args.threads)
                )
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    ips = {k: r["images"] / r["seconds"] for k, r in best.items()}
    full_pixels = best["baseline"]["pixels"]
    pps = {k: (r.get("pixels") or full_pixels) / r["seconds"] / 1e6 for k, r in best.items()}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "arch": args.arch,
        "ngf": args.ngf,
        "images": args.images,
        "size": args.size,
        "baseline_images_per_s": round(ips["baseline"], 3),
        "styler_images_per_s": round(ips["styler"], 3),
        "ratio": round(ips["styler"] / ips["baseline"], 2),
        **(
            {
                "styler_int8_images_per_s": round(ips["styler-int8"], 3),
                "ratio_int8": round(ips["styler-int8"] / ips["baseline"], 2),
                "styler_int8_peak_rss_mb": round(best["styler-int8"]["peak_rss_mb"]),
                "int8_psnr_db_vs_fp32": round(int8_psnr, 1),
                "per_pixel_int8_vs_reference_256": round(
                    pps["styler-int8"] / pps["reference-256"], 2
                ),
            }
            if args.int8
            else {}
        ),
        "baseline_peak_rss_mb": round(best["baseline"]["peak_rss_mb"]),
        "megapixels_per_s": {k: round(v, 3) for k, v in pps.items()},
        "per_pixel_vs_reference_256": round(pps["styler"] / pps["reference-256"], 2),
        "styler_peak_rss_mb": round(best["styler"]["peak_rss_mb"]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
