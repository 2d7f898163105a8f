"""Benchmark: seconds per CycleGAN training step, styler against the textbook loop.

Both sides train the same networks from the same initial weights
(resnet_9blocks generators at ngf 64, 70x70 PatchGAN discriminators at ndf
64, instance norm, batch 1, LSGAN, cycle 10, identity 0.5, image pool 50):

- baseline: the step written the textbook way, as pytorch-CycleGAN-and-pix2pix
  writes it (six separate generator calls, discriminators run on real and fake
  separately, plain Adam, fp32, eager, PyTorch's own padding and
  convolution layers);
- styler: ``styler.training.modes.cyclegan.CycleGan.train_step`` in fp32 and with
  the precision ``styler train`` picks by default here (bf16 autocast on CPUs
  with AVX-512 BF16 or AMX), in a process whose malloc keeps freed memory, as
  ``styler train`` sets it (``styler.training.allocator``). To give the
  baseline the same malloc, set it for both in the environment (styler then
  leaves it alone): ``MALLOC_MMAP_THRESHOLD_=33554432
  MALLOC_TRIM_THRESHOLD_=1073741824 python bench/train_step.py``.

Each variant runs in its own process, one after the other, alternating over
``--repeat`` rounds; the median of ``--steps`` timed steps after
``--warmup`` untimed ones is reported.

    python bench/train_step.py --size 128 --steps 10
    python bench/train_step.py --size 256 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import torch
from styler import zoo
from styler.netconfig import generator_preset, discriminator_preset
variant = sys.argv[1]
size, steps, warmup, threads = (int(v) for v in sys.argv[2:6])
torch.set_num_threads(threads)
gen = torch.Generator().manual_seed(0)
batches = [(torch.rand(1, 3, size, size, generator=gen) * 2 - 1,
            torch.rand(1, 3, size, size, generator=gen) * 2 - 1) for _ in range(4)]
times = []

if variant == "baseline":
    import itertools, random
    torch.manual_seed(0)
    # PyTorch's own layers (styler's are faster to train through).
    from styler.zoo.layers import with_stock_layers as textbook
    G_A = textbook(zoo.build(generator_preset("resnet_9blocks", ngf=64)))
    G_B = textbook(zoo.build(generator_preset("resnet_9blocks", ngf=64)))
    D_A = zoo.build(discriminator_preset("basic", ndf=64, norm="instance"))
    D_B = zoo.build(discriminator_preset("basic", ndf=64, norm="instance"))
    chain = itertools.chain
    opt_G = torch.optim.Adam(chain(G_A.parameters(), G_B.parameters()), 2e-4, (0.5, 0.999))
    opt_D = torch.optim.Adam(chain(D_A.parameters(), D_B.parameters()), 2e-4, (0.5, 0.999))
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    pools = {"A": [], "B": []}
    def query(pool, image):
        if len(pool) < 50:
            pool.append(image); return image
        if random.uniform(0, 1) > 0.5:
            i = random.randint(0, 49); old = pool[i].clone(); pool[i] = image; return old
        return image
    def gan(pred, real):
        return mse(pred, torch.full_like(pred, 1.0 if real else 0.0))
    def set_grad(nets, flag):
        for n in nets:
            for p in n.parameters():
                p.requires_grad = flag
    def step(real_A, real_B):
        fake_B = G_A(real_A); rec_A = G_B(fake_B)
        fake_A = G_B(real_B); rec_B = G_A(fake_A)
        set_grad([D_A, D_B], False)
        opt_G.zero_grad()
        idt_A = G_A(real_B); idt_B = G_B(real_A)
        loss_G = (gan(D_A(fake_B), True) + gan(D_B(fake_A), True)
                  + l1(rec_A, real_A) * 10 + l1(rec_B, real_B) * 10
                  + l1(idt_A, real_B) * 5 + l1(idt_B, real_A) * 5)
        loss_G.backward(); opt_G.step()
        set_grad([D_A, D_B], True)
        opt_D.zero_grad()
        fb = query(pools["B"], fake_B.detach())
        loss = (gan(D_A(real_B), True) + gan(D_A(fb), False)) * 0.5
        loss.backward()
        fa = query(pools["A"], fake_A.detach())
        loss = (gan(D_B(real_A), True) + gan(D_B(fa), False)) * 0.5
        loss.backward()
        opt_D.step()
else:
    from pathlib import Path
    from styler.training.config import TrainConfig
    from styler.training.modes.cyclegan import CycleGan, CycleGanConfig
    from styler.training.distributed import DistInfo
    from styler.training.allocator import keep_freed_memory
    keep_freed_memory()  # as `styler train` does
    precision = variant.split("-")[1]
    mode = CycleGanConfig(generator=generator_preset("resnet_9blocks", ngf=64),
                          discriminator=discriminator_preset("basic", ndf=64, norm="instance"))
    config = TrainConfig(mode=mode, data_a="A", data_b="B",
                         size=size, load_size=size, steps=1000, decay_steps=500,
                         precision=precision)
    task = CycleGan(config, "cpu", DistInfo())
    task.train(True)
    counter = iter(range(10**9))
    def step(real_A, real_B):
        task.train_step({"A": real_A, "B": real_B}, next(counter))

for i in range(warmup + steps):
    a, b = batches[i % len(batches)]
    t = time.perf_counter()
    step(a, b)
    if i >= warmup:
        times.append(time.perf_counter() - t)
print("RESULT", json.dumps(times))
"""


def run(variant: str, size: int, steps: int, warmup: int, threads: int) -> list[float]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-c", WORKER, variant, str(size), str(steps), str(warmup), str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-2000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--variants", default="baseline,styler-fp32,styler-bf16", help="comma-separated"
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for v in variants:
            times[v] += run(v, args.size, args.steps, args.warmup, args.threads)
    medians = {v: statistics.median(t) for v, t in times.items()}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "size": args.size,
        "steps_timed": args.steps * args.repeat,
        "median_seconds_per_step": {v: round(m, 3) for v, m in medians.items()},
    }
    if "baseline" in medians:
        report["speedup_vs_baseline"] = {
            v: round(medians["baseline"] / m, 2) for v, m in medians.items() if v != "baseline"
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
