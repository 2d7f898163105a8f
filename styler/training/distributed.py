"""Data-parallel training over several processes (``torchrun``).

Each process trains on its own slice of the data (its rank is part of every
batch plan) and, after each backward pass, gradients are averaged across
processes before the optimiser steps, so every replica stays identical. This
is what DistributedDataParallel does; it is done explicitly here because a
GAN step runs each network several times, freezes the discriminators for the
generator update and steps two optimisers, which DDP's hooks do not follow.
Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from styler.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int, low: int, high: int | None = None) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"at least {low}"
        raise UsageError(f"the environment variable {name}={raw!r} is not a whole number {bound}")
    return value


def from_env() -> DistInfo:
    """What torchrun says about this process (one process when run plainly);
    a value torchrun would never set is a usage error naming the variable."""
    world = _env_int("WORLD_SIZE", 1, 1)
    if world == 1:
        return DistInfo()
    info = DistInfo(
        rank=_env_int("RANK", 0, 0, world - 1),
        world=world,
        local_rank=_env_int("LOCAL_RANK", 0, 0),
    )
    if not os.environ.get("MASTER_ADDR", "").strip():
        raise UsageError(
            f"WORLD_SIZE={world} but MASTER_ADDR is not set: start the processes with "
            "torchrun (which sets where they meet), or set MASTER_ADDR and MASTER_PORT"
        )
    _env_int("MASTER_PORT", 29500, 1, 65535)
    return info


def init(info: DistInfo, device: str) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(info.local_rank)
        try:
            dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world)
        except (ValueError, RuntimeError) as exc:  # no rendezvous, a port in use, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"cannot join the other training processes: {first}") from None


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[nn.Parameter], info: DistInfo) -> None:
    """Replace every gradient by its mean over the processes (one flat buffer)."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Make every replica start from rank 0's parameters and buffers."""
    if not info.enabled:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
