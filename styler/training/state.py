"""Training checkpoints: everything a resume needs, in one safetensors file.

A checkpoint holds every network's weights (``net.NAME.KEY``), every Adam
state tensor (``opt.NAME.INDEX.KEY``), extra tensors such as image pools
(``extra.NAME``), and a JSON header with the step, the config, the
optimisers' hyper-parameters and the gradient scalers. Nothing is pickled,
so loading one can run no code. Files are written atomically: a crash or a
kill leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styler.checkpoint import read_safetensors
from styler.errors import BadCheckpointError
from styler.fsutil import atomic_write_bytes
from styler.log import logger
from styler.training.config import TrainConfig
from styler.training.trainer import Trainer

HEADER_KEY = "styler_train"
STATE_VERSION = 1
_NAME = re.compile(r"^step_(\d{7,})\.safetensors$")


@dataclass(frozen=True)
class TrainState:
    """A training checkpoint as read back: the step it was saved after, the
    run's config, the JSON header and every tensor."""

    path: Path
    step: int
    config: TrainConfig
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def save(path: Path, trainer: Trainer, step: int, info: dict[str, Any] | None = None) -> Path:
    """Write the whole training state after ``step`` completed steps."""
    from safetensors.torch import save as to_bytes

    tensors: dict[str, torch.Tensor] = {}
    for name, net in trainer.nets.items():
        for key, value in net.state_dict().items():
            tensors[f"net.{name}.{key}"] = value
    groups: dict[str, Any] = {}
    for name, opt in trainer.optimizers.items():
        state = opt.state_dict()
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if not isinstance(value, torch.Tensor):
                    value = torch.tensor(value)
                tensors[f"opt.{name}.{index}.{key}"] = value
        groups[name] = state["param_groups"]
    for name, value in trainer.extra_state().items():
        tensors[f"extra.{name}"] = value
    header = {
        "version": STATE_VERSION,
        "step": step,
        "config": trainer.config.to_dict(),
        "param_groups": groups,
        "scalers": trainer.scaler_state(),
        "info": info or {},
    }
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = to_bytes(cpu, metadata={HEADER_KEY: json.dumps(header)})
    atomic_write_bytes(path, data)
    return path


def load(path: Path) -> TrainState:
    """Read a checkpoint (never executing anything from it)."""
    meta, tensors = read_safetensors(path, "a readable checkpoint")
    if HEADER_KEY not in meta:
        raise BadCheckpointError("not a styler training checkpoint (no training header)", path)
    try:
        header = json.loads(meta[HEADER_KEY])
        step = int(header["step"])
        if int(header.get("version", 0)) > STATE_VERSION:
            raise BadCheckpointError("written by a newer styler; upgrade styler", path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise BadCheckpointError("damaged training header", path) from None
    config = TrainConfig.from_dict(header["config"], path)
    return TrainState(path, step, config, header, tensors)


def restore(trainer: Trainer, ckpt: TrainState) -> None:
    """Put a checkpoint's networks, optimisers and extra state into ``trainer``."""
    for name, net in trainer.nets.items():
        prefix = f"net.{name}."
        weights = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise BadCheckpointError(f"network {name} does not fit: {exc}", ckpt.path) from None
    for name, opt in trainer.optimizers.items():
        prefix = f"opt.{name}."
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in ckpt.tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix) :].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        try:
            opt.load_state_dict({"state": state, "param_groups": ckpt.header["param_groups"][name]})
        except (KeyError, ValueError, RuntimeError) as exc:
            raise BadCheckpointError(f"optimiser {name} does not fit: {exc}", ckpt.path) from None
    extra = {k[len("extra.") :]: v for k, v in ckpt.tensors.items() if k.startswith("extra.")}
    trainer.load_extra_state(extra)
    trainer.load_scaler_state(ckpt.header.get("scalers", {}))


def generator_weights(ckpt: TrainState, name: str) -> dict[str, torch.Tensor]:
    prefix = f"net.{name}."
    weights = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
    if not weights:
        raise BadCheckpointError(f"holds no network {name}", ckpt.path)
    return weights


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest(folder: Path) -> TrainState | None:
    """The newest checkpoint that reads whole (a damaged one is reported and
    passed over)."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load(path)
        except BadCheckpointError as exc:
            logger.warning("passing over %s", exc)
    return None


def prune(folder: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints."""
    for _, path in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)
