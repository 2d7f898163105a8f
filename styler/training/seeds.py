"""Seeds: every random draw of a run comes from a generator seeded by a
stable hash of (seed, what it is for, step, rank), so that a step computes
the same thing whether the run was interrupted or not."""

from __future__ import annotations

import hashlib

import torch


def seeded(*parts: object) -> torch.Generator:
    """A generator seeded by a stable hash of ``parts`` (never Python's hash)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of torch's global generator during ``step`` (dropout, ...)."""
    return int(seeded(seed, "global", step, rank).initial_seed())
