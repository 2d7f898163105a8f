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
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styler import strictjson
from styler.checkpoint import TRAIN_HEADER_KEY, Declared, read_header, read_safetensors
from styler.errors import BadCheckpointError
from styler.fsutil import atomic_write_bytes
from styler.log import logger
from styler.training import layout, limits
from styler.training.config import TrainConfig
from styler.training.trainer import Trainer

HEADER_KEY = TRAIN_HEADER_KEY
STATE_VERSION = 1
#: A checkpoint's name, matched whole (``fullmatch``: a ``$`` would match
#: before a trailing newline).
_NAME = re.compile(r"step_(\d{7,})\.safetensors")


class ForeignCheckpoint(BadCheckpointError):
    """A checkpoint saved by another run: its config is not the run's."""

    def __init__(self, path: Path, config: TrainConfig, run: TrainConfig) -> None:
        self.config = config
        self.fields = run.differences(config)
        super().__init__(
            "saved by another run: its config differs from config.json "
            f"(in {', '.join(self.fields)})",
            path,
        )


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


def load(path: Path, run: TrainConfig | None = None) -> TrainState:
    """Read a checkpoint (never executing anything from it): its header
    first, then, if what it declares fits the networks of its config
    (:mod:`~styler.training.layout`), its tensors. With ``run`` (the run's
    config), a checkpoint of another config is a :class:`ForeignCheckpoint`."""
    _regular_file(path)
    found: list[tuple[int, TrainConfig, dict[str, Any]]] = []

    def check(meta: dict[str, str], declared: dict[str, Declared]) -> None:
        found.append(_checked_header(path, meta, run))
        layout.check(path, found[0][1], found[0][2], declared)

    _, tensors = read_safetensors(path, "a readable checkpoint", check)
    step, config, header = found[0]
    return TrainState(path, step, config, header, tensors)


def peek(path: Path, run: TrainConfig | None = None) -> int:
    """The step of the checkpoint ``path`` if its header reads whole (the
    file is complete and its header valid, and with ``run`` of that
    config), without reading its tensors; else :class:`BadCheckpointError`."""
    _regular_file(path)
    meta, _ = read_header(path, "a readable checkpoint")
    return _checked_header(path, meta, run)[0]


def _checked_header(
    path: Path, meta: dict[str, str], run: TrainConfig | None
) -> tuple[int, TrainConfig, dict[str, Any]]:
    step, config, header = _header(meta, path)
    _check_name(path, step)
    if run is not None and not config.same_run(run):
        raise ForeignCheckpoint(path, config, run)
    return step, config, header


def _check_name(path: Path, step: int) -> None:
    """A file named as the checkpoint of one step (``step_NNNNNNN``) holds
    that step (a copy of another under its name would send a resume back,
    and have pruning count it as the newest)."""
    match = _NAME.fullmatch(path.name)
    if match is not None and int(match.group(1)) != step:
        raise BadCheckpointError(
            f"named step {int(match.group(1))} but saved after step {step}", path
        )


def check_values(ckpt: TrainState) -> None:
    """Refuse a checkpoint holding a NaN or infinite number (weights, Adam's
    moments, pools), or Adam's state out of range (a negative step or second
    moment): a run resumed from it could only blow up."""
    bad = next((k for k, v in ckpt.tensors.items() if not _finite(v)), None)
    if bad is not None:
        raise BadCheckpointError(f"holds NaN or infinite values (in {bad})", ckpt.path)
    for name in {k.split(".")[1] for k in ckpt.tensors if k.startswith("opt.")}:
        layout.check_optimizer_values(name, _with_prefix(ckpt.tensors, f"opt.{name}."), ckpt.path)


def _regular_file(path: Path) -> None:
    """Only regular files are read (not a folder, a device, a FIFO or a symlink)."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise BadCheckpointError(f"cannot read: {exc.strerror or exc}", path) from None
    if not stat.S_ISREG(mode):
        raise BadCheckpointError("not a checkpoint (not a regular file)", path)


class NewerCheckpoint(BadCheckpointError):
    """A checkpoint a newer styler wrote: whole, as far as this one can tell,
    and never replaced."""


def _header(meta: dict[str, str], path: Path) -> tuple[int, TrainConfig, dict[str, Any]]:
    """The step, config and whole header of a checkpoint, every value checked."""
    if HEADER_KEY not in meta:
        raise BadCheckpointError("not a styler training checkpoint (no training header)", path)
    try:
        header = strictjson.loads(meta[HEADER_KEY])
    except ValueError as exc:
        raise BadCheckpointError(f"damaged training header ({exc})", path) from None
    if not isinstance(header, dict):
        raise BadCheckpointError("damaged training header (not an object)", path)
    version = header.get("version", 0)
    if not _is_int(version) or version > STATE_VERSION:
        raise NewerCheckpoint(f"written by a newer styler (version {version!r})", path)
    step = header.get("step")
    if not _is_int(step) or not 0 <= step <= limits.MAX_STEPS:
        raise BadCheckpointError(f"damaged training header (step {step!r})", path)
    for key in ("config", "param_groups", "scalers", "info"):
        if not isinstance(header.setdefault(key, {}), dict):
            raise BadCheckpointError(f"damaged training header ({key} is not an object)", path)
    _check_info(header["info"], path)
    return step, TrainConfig.from_dict(header["config"], path), header


def _check_info(info: dict[str, Any], path: Path) -> None:
    """What a checkpoint says about its run: seconds spent in steps and in
    the loop (``wall``, what a time budget counts), a score, the device."""
    for key, low in (("seconds", 0.0), ("wall", 0.0), ("kid", -math.inf), ("kid_std", 0.0)):
        value = info.get(key, 0.0)  # (KID, unbiased, can be a little below 0)
        if not _is_number(value) or not low <= value <= 1e12:
            raise BadCheckpointError(f"damaged training header (info {key} {value!r})", path)
    if not isinstance(info.get("device", ""), str):
        raise BadCheckpointError("damaged training header (info device)", path)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def restore(trainer: Trainer, ckpt: TrainState) -> None:
    """Put a checkpoint's networks, optimisers and extra state into ``trainer``
    (anything that does not fit it is a :class:`BadCheckpointError`)."""
    restore_networks(trainer, ckpt)
    for name, opt in trainer.optimizers.items():
        try:
            _restore_optimizer(opt, _with_prefix(ckpt.tensors, f"opt.{name}."), ckpt, name)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise BadCheckpointError(f"optimiser {name} does not fit: {exc}", ckpt.path) from None
    try:
        trainer.load_extra_state(_with_prefix(ckpt.tensors, "extra."))
        trainer.load_scaler_state(ckpt.header["scalers"])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise BadCheckpointError(f"extra training state does not fit: {exc}", ckpt.path) from None


def restore_networks(trainer: Trainer, ckpt: TrainState) -> None:
    """Put a checkpoint's networks into ``trainer``: all of them, or (when
    one does not fit, or holds a NaN) none, a :class:`BadCheckpointError`."""
    nets = {name: _with_prefix(ckpt.tensors, f"net.{name}.") for name in trainer.nets}
    for name, weights in nets.items():
        bad = next((k for k, v in weights.items() if not _finite(v)), None)
        if bad is not None:
            raise BadCheckpointError(f"network {name} holds NaN or infinite weights", ckpt.path)
        own = trainer.nets[name].state_dict()
        wrong = set(own) ^ set(weights) or {
            k for k, v in weights.items() if v.shape != own[k].shape
        }
        if wrong:
            raise BadCheckpointError(
                f"network {name} does not fit (at {sorted(wrong)[0]})", ckpt.path
            )
    for name, weights in nets.items():
        try:
            trainer.nets[name].load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise BadCheckpointError(f"network {name} does not fit: {exc}", ckpt.path) from None


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def _restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], ckpt: TrainState, name: str
) -> None:
    """Adam's state from ``INDEX.FIELD`` tensors and the header's hyper-parameters,
    each checked against the fresh optimiser (shapes, types, ranges)."""
    groups = ckpt.header["param_groups"].get(name)
    if groups is None:
        raise ValueError("the header holds no hyper-parameters for it")
    layout.check_groups(groups, opt.state_dict()["param_groups"])
    layout.check_optimizer_values(name, tensors, ckpt.path)
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, _, field = key.partition(".")
        if not index.isdigit() or int(index) >= len(params) or field not in layout.ADAM_STATE:
            raise ValueError(f"unexpected state {key!r}")
        expected = () if field == "step" else params[int(index)].shape
        if tuple(value.shape) != tuple(expected) or not value.is_floating_point():
            raise ValueError(f"state {key!r} has shape {list(value.shape)} or type {value.dtype}")
        if not _finite(value):
            raise ValueError(f"state {key!r} holds NaN or infinite values")
        state.setdefault(int(index), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def generator_weights(ckpt: TrainState, name: str) -> dict[str, torch.Tensor]:
    prefix = f"net.{name}."
    weights = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
    if not weights:
        raise BadCheckpointError(f"holds no network {name}", ckpt.path)
    return weights


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of what is named like a checkpoint in ``folder``, oldest
    first (whether it reads is for :func:`load` and :func:`peek` to say)."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    found = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match:
            found.append((int(match.group(1)), folder / name))
    return sorted(found)


def newest(
    folder: Path, run: TrainConfig | None = None
) -> tuple[TrainState | None, list[BadCheckpointError]]:
    """The newest checkpoint that reads whole, holds finite numbers only and
    (with ``run``) is of the run's config, and why each newer one is passed
    over."""
    skipped = []
    for _, path in reversed(list_checkpoints(folder)):
        try:
            ckpt = load(path, run)
            check_values(ckpt)
            return ckpt, skipped
        except BadCheckpointError as exc:
            skipped.append(exc)
    return None, skipped


def latest(folder: Path, run: TrainConfig | None = None) -> TrainState | None:
    """The newest checkpoint that reads whole (a damaged one is reported and
    passed over)."""
    found, skipped = newest(folder, run)
    said: set[str] = set()
    for exc in skipped:
        report_damaged(exc, said)
    return found


def report_damaged(exc: BadCheckpointError, said: set[str], then: str = "") -> None:
    """Say that a checkpoint is passed over (and left where it is), and
    ``then`` what is done instead, unless ``said`` (the paths reported so
    far, which this adds to) shows it was."""
    if str(exc.path) not in said:
        said.add(str(exc.path))
        logger.warning("passing over %s (left as it is)%s", exc, then)


def prune(
    folder: Path,
    keep: int,
    said: set[str],
    upto: int | None = None,
    run: TrainConfig | None = None,
) -> None:
    """Remove all but the newest ``keep`` (at least 1) checkpoints that read
    whole, up to step ``upto`` (the one just saved: a newer one is one a
    resume passed over). What does not read (damaged, a folder, a symlink,
    a name that is not its step, with ``run`` a checkpoint of another
    config) is never counted and never removed: it is reported (once, by
    ``said``) and left alone."""
    good = []
    for step, path in list_checkpoints(folder):
        if upto is not None and step > upto:
            continue
        try:
            peek(path, run)
        except BadCheckpointError as exc:
            report_damaged(exc, said)
            continue
        good.append(path)
    for path in good[: -max(1, keep)]:
        path.unlink(missing_ok=True)
