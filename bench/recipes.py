#!/usr/bin/env python3
"""Training recipes against each other: a run of each variant for a time
budget (or a step count), on the task with a known answer or on the photo ->
painting corpus, scored on held-out photos.

    python bench/known_answer.py build && python bench/corpus.py build
    python bench/recipes.py run fast --task known --time 30m
    python bench/recipes.py run cyclegan-today --task known --time 30m
    python bench/recipes.py run fast -x lambda_style=0 --name fast-no-style --time 15m
    python bench/recipes.py steps cyclegan-today fast painting   # step costs, one run
    python bench/recipes.py table                     # the results as markdown
    python bench/recipes.py grid RUN... -o docs/images/recipes_known.jpg  # same photos, each run

Every run appends one JSON line to bench/results/recipes.jsonl: the variant,
its flags, the machine (CPU model and the flags that matter: avx2,
avx512_bf16, avx512_vnni), the thread count, the steps run, the seconds per
training step, where the wall time went, and the scores: PSNR / SSIM
against the filter's output and the untouched photos' PSNR (task
``known``), or the KID ratios of both held-out sets (task ``corpus``; 1 is
the unmodified photos). Run one benchmark at a time: two processes on two
cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "recipes.jsonl"
RUNS = ROOT / "data" / "recipe_runs"

#: The variants compared: a recipe (or none) and flags over it.
VARIANTS: dict[str, dict[str, Any]] = {
    # What `styler train A B` ran before recipes: CycleGAN, as the shipped
    # model was trained (resnet_6blocks, ngf 32, 128-pixel crops, bf16 where fast).
    "cyclegan-today": {
        "mode": "cyclegan",
        "generator": "resnet_6blocks",
        "ngf": 32,
        "size": 128,
        "load_size": 256,
    },
    "reference": {"recipe": "reference"},
    "fast": {"recipe": "fast"},
    "painting": {"recipe": "painting"},
    "brush": {"recipe": "brush"},
}

#: Where each task's folders are (train A, train B).
TASKS = {
    "known": (ROOT / "data" / "known_answer" / "trainA", ROOT / "data" / "known_answer" / "trainB"),
    # The same task with B matched to A in colour statistics (known_answer.py).
    "matched": (
        ROOT / "data" / "known_answer_matched" / "trainA",
        ROOT / "data" / "known_answer_matched" / "trainB",
    ),
    "corpus": (ROOT / "data" / "p2p_split" / "train", ROOT / "data" / "p2p_split" / "paintings"),
}
#: The tasks with a known answer (scored by PSNR against the filter).
KNOWN = ("known", "matched")


def machine() -> dict[str, Any]:
    """The CPU's model name and the instruction-set flags that change speed."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    found = {"cpu": model, "cpu_flags": [f for f in wanted if f in flags], "cores": os.cpu_count()}
    # Instruction sets switched off for the run (an emulation of an older CPU).
    isa = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
    limits = {k: os.environ[k] for k in isa if k in os.environ}
    return {**found, "isa_limits": limits} if limits else found


def _value(text: str) -> Any:
    """A -x value: JSON when it parses (numbers, true/false), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import torch

    from styler.training.budget import parse_duration
    from styler.training.loop import WatchOptions, train
    from styler.training.setup import make_config

    torch.set_num_threads(args.threads)
    flags = dict(VARIANTS[args.variant])
    flags.update(_value_pairs(args.x))
    recipe = flags.pop("recipe", None)
    length: dict[str, Any] = {"steps": args.steps} if args.steps else {}
    if args.time:
        length = {"time": parse_duration(args.time)}
    a, b = TASKS[args.task]
    name = args.name or args.variant
    out = RUNS / args.task / f"{name}-{args.time or args.steps}"
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or give --name")
    config, found = make_config(a, b, recipe=recipe, seed=args.seed, **length, **flags)
    watch = WatchOptions(display="plain", workers=1, checkpoint_minutes=1e9)
    began = time.perf_counter()
    result = train(config, out, device="cpu", watch=watch, found=found)
    wall = time.perf_counter() - began
    model = next(p for p in result.models if "_to_" in p.name)  # A -> B comes first
    record: dict[str, Any] = {
        "name": name, "variant": args.variant, "task": args.task, "flags": flags,
        "recipe": recipe, "budget": args.time, "steps": result.step, "wall": round(wall, 1),
        "sec_per_step": round(result.seconds / max(result.step, 1), 4),
        "spent": {k: round(v, 1) for k, v in result.spent.items()},
        "threads": args.threads, "seed": args.seed, **machine(), "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    record.update(_score(args.task, model))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def _value_pairs(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"-x takes key=value, got {pair!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


def _score(task: str, model: Path) -> dict[str, Any]:
    if task in KNOWN:
        import known_answer

        data = TASKS[task][0].parent
        scored = known_answer.score(model, data)
        untouched = known_answer.score(None, data)
        return {
            **scored,
            "untouched_psnr": untouched["psnr"],
            "untouched_saturation": untouched["saturation"],
            "untouched_detail": untouched["detail"],
            "gain": scored["psnr"] - untouched["psnr"],
        }
    import corpus

    report = corpus.score(model)
    ratios = {k: v["ratio"] for k, v in report.items() if isinstance(v, dict) and "ratio" in v}
    return {**ratios, "colour": report["colour"]}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def table(path: Path) -> str:
    """The results as a markdown table, one row per run, in file order."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| run | task | budget | steps | s/step | threads | score | CPU |", "|---" * 8 + "|"]
    for r in rows:
        if r["task"] in KNOWN:
            score = f"{r['psnr']:.2f} dB ({r['gain']:+.2f} over untouched), SSIM {r['ssim']:.3f}"
        else:
            score = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.startswith("lite"))
        cpu = f"{r['cpu']} ({', '.join(r.get('cpu_flags', r['flags']))})"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['budget'] or '-'} | {r['steps']} | "
            f"{r['sec_per_step']:.3f} | {r['threads']} | {score} | {cpu} |"
        )
    return "\n".join(lines)


STEP_WORKER = r"""
import json, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.path.insert(0, sys.argv[1])
from styler.training.device import choose
from styler.training.modes import build_trainer
from styler.training.recipes import get_recipe
from styler.training.setup import make_config
flags, steps, warmup, threads = json.loads(sys.argv[2]), *(int(v) for v in sys.argv[3:6])
torch.set_num_threads(threads)
recipe = flags.pop("recipe", None)
# The precision `styler train` picks: the recipe's, else the best this CPU computes fast.
wanted = sys.argv[6]
if wanted == "auto" and recipe is not None:
    wanted = get_recipe(recipe).flags.get("precision", "auto")
flags["precision"] = choose("cpu", wanted)[1]
with tempfile.TemporaryDirectory() as tmp:  # folders make_config can look at
    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        (Path(tmp) / side).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path(tmp) / side / f"{i}.png")
    config, _ = make_config(Path(tmp) / "a", Path(tmp) / "b", recipe=recipe, steps=1000,
                            seed=0, **flags)
torch.manual_seed(0)
trainer = build_trainer(config, "cpu")
gen = torch.Generator().manual_seed(0)
n, size = config.batch_size, config.size
batches = [{"A": torch.rand(n, 3, size, size, generator=gen) * 2 - 1,
            "B": torch.rand(n, 3, size, size, generator=gen) * 2 - 1} for _ in range(4)]
times = []
for step in range(warmup + steps):
    began = time.perf_counter()
    trainer.train_step(batches[step % 4], step)
    if step >= warmup:
        times.append(time.perf_counter() - began)
print(json.dumps({"median": statistics.median(times), "size": size, "batch": n,
                  "precision": trainer.precision,
                  "mode": config.mode.name}))
"""


def step_costs(
    variants: list[str], steps: int, warmup: int, repeat: int, threads: int, precision: str
) -> dict[str, Any]:
    """Seconds per training step of each variant at its own settings, the
    variants in their own processes one after the other, alternating over
    ``repeat`` rounds (one run: the ratios are what to read, machines are
    noisy); random crops of the variant's size, no data loading or upkeep."""
    medians: dict[str, list[float]] = {v: [] for v in variants}
    info: dict[str, Any] = {}
    for _ in range(repeat):
        for variant in variants:
            flags = {**VARIANTS[variant]}
            out = subprocess.run(
                [sys.executable, "-c", STEP_WORKER, str(ROOT), json.dumps(flags),
                 str(steps), str(warmup), str(threads), precision],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            medians[variant].append(result["median"])
            info[variant] = result
    base = statistics.median(medians[variants[0]])
    return {
        "baseline": variants[0],
        "variants": {
            v: {
                **info[v],
                "median": round(statistics.median(m), 4),
                "rounds": [round(x, 4) for x in m],
                "ratio": round(statistics.median(m) / base, 3),
            }
            for v, m in medians.items()
        },
        "steps": steps, "warmup": warmup, "repeat": repeat, "threads": threads,
        **machine(), "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def grid(runs: list[Path], out: Path, task: str, count: int = 4, side: int = 256) -> Path:
    """A picture grid: ``count`` held-out photos (rows), untouched, through
    each run's A -> B model, and (task ``known``) the filter's own output."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image, ImageDraw

    from styler.apply import Stylizer

    if task in KNOWN:
        folder = TASKS[task][0].parent / "test"
        targets: Path | None = TASKS[task][0].parent / "test_target"
    else:
        folder, targets = ROOT / "data" / "p2p_split" / "second", None
    photos = sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg"))
    photos = photos[:: max(1, len(photos) // count)][:count]
    models = [next(r.glob("*_to_*.onnx")) for r in runs]
    columns = ["photo", *(r.name for r in runs)] + (["target"] if targets else [])
    stylizers = [Stylizer(m, device="cpu") for m in models]
    cells: list[list[np.ndarray]] = []
    for path in photos:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side * 2, side))
            x = np.asarray(im, np.float32) / 255
        row = [x, *(s.apply_array(x) for s in stylizers)]
        if targets is not None:
            with Image.open(targets / path.name) as t:
                row.append(np.asarray(t.convert("RGB").resize(im.size), np.float32) / 255)
        cells.append(row)
    w = max(c.shape[1] for row in cells for c in row)
    h = [max(c.shape[0] for c in row) for row in cells]
    sheet = Image.new("RGB", (w * len(columns), 20 + sum(h)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((j * w + 4, 4), name, fill="black")
    y = 20
    for row, height in zip(cells, h, strict=True):
        for j, cell in enumerate(row):
            pixels = (np.clip(cell, 0, 1) * 255 + 0.5).astype(np.uint8)
            sheet.paste(Image.fromarray(pixels), (j * w, y))
        y += height
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one variant and score it")
    r.add_argument("variant", choices=sorted(VARIANTS))
    r.add_argument("--task", choices=sorted(TASKS), default="known")
    r.add_argument("--time", help="a time budget: 15m, 30m, 1h")
    r.add_argument("--steps", type=int, help="or a step count")
    r.add_argument("-x", action="append", default=[], help="a flag over the variant: key=value")
    r.add_argument("--name", help="the run's name [default: the variant's]")
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    r.add_argument("--seed", type=int, default=0)
    st = sub.add_parser("steps", help="seconds per step of each variant, against the first")
    st.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    st.add_argument("--steps", type=int, default=20)
    st.add_argument("--warmup", type=int, default=3)
    st.add_argument("--repeat", type=int, default=3)
    st.add_argument("--threads", type=int, default=1)
    st.add_argument("--precision", default="auto", help="auto (as styler train), fp32, bf16")
    t = sub.add_parser("table", help="the results as markdown")
    t.add_argument("results", nargs="?", type=Path, default=RESULTS)
    g = sub.add_parser("grid", help="a picture grid: the same photos through each run's model")
    g.add_argument("runs", nargs="+", type=Path)
    g.add_argument("-o", "--out", type=Path, required=True)
    g.add_argument("--task", choices=sorted(TASKS), default="known")
    args = parser.parse_args()
    if args.command == "grid":
        print(grid(args.runs, args.out, args.task))
    elif args.command == "steps":
        costs = step_costs(
            args.variants, args.steps, args.warmup, args.repeat, args.threads, args.precision
        )
        with (RESULTS.parent / "steps.jsonl").open("a") as f:
            f.write(json.dumps(costs) + "\n")
        print(json.dumps(costs, indent=1))
    elif args.command == "run":
        if not args.time and not args.steps:
            parser.error("give --time or --steps")
        print(json.dumps(run(args)))
    else:
        print(table(args.results))


if __name__ == "__main__":
    main()
