"""What a training checkpoint may hold, checked from its header alone, before
a byte of its tensors is read (:func:`styler.checkpoint.read_header`).

The run's trainer is built from the checkpoint's config on PyTorch's ``meta``
device (nothing is allocated): each declared network tensor must be one of
its networks' of the same shape, each optimiser tensor Adam's state of one of
its parameters, the image pools no larger than the config allows, and the
optimisers' parameter groups those of the fresh optimisers. A forged header
cannot then make a resume or an export read more than the run's own
networks need, nor put another network's state into this one.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from styler.checkpoint import Declared
from styler.errors import BadCheckpointError
from styler.training.config import TrainConfig
from styler.training.trainer import Trainer

#: Adam's state tensors per parameter: the step count and the two moments
#: (and the largest second moment with amsgrad), each the parameter's shape.
ADAM_STATE = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})


@functools.lru_cache(maxsize=4)
def _skeleton(config_json: str) -> Trainer:
    """The trainer of a config on the meta device (the global random state
    and warnings left as they were)."""
    from styler.training.modes import build_trainer

    config = TrainConfig.from_json(config_json)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return build_trainer(config, "meta")


def expected(config: TrainConfig) -> tuple[dict[str, torch.Tensor], Trainer]:
    """Every network and optimiser tensor a checkpoint of ``config`` may hold
    (name -> a meta tensor of its shape and type), and the meta trainer."""
    trainer = _skeleton(config.to_json())
    tensors: dict[str, torch.Tensor] = {}
    for name, net in trainer.nets.items():
        for key, value in net.state_dict().items():
            tensors[f"net.{name}.{key}"] = value
    for name, opt in trainer.optimizers.items():
        params = [p for group in opt.param_groups for p in group["params"]]
        for index, param in enumerate(params):
            for field in ADAM_STATE:
                shape = () if field == "step" else param.shape
                tensors[f"opt.{name}.{index}.{field}"] = torch.empty(shape, device="meta")
    return tensors, trainer


def check(
    path: Path, config: TrainConfig, header: dict[str, Any], declared: dict[str, Declared]
) -> None:
    """Refuse (:class:`BadCheckpointError`) a checkpoint of ``config`` whose
    header declares a tensor its trainer does not have, of another shape or
    type, image pools larger than the config's, or parameter groups that are
    not its optimisers'."""
    own, trainer = expected(config)
    extra = 0
    for key, got in declared.items():
        want = own.get(key)
        if key.startswith("extra."):
            extra += math.prod(got.shape)
            if not got.floating:
                raise BadCheckpointError(f"extra training state {key} of type {got.dtype}", path)
            continue
        what = _owner(key)
        if want is None:
            raise BadCheckpointError(f"{what} does not fit (it has no {key})", path)
        if got.shape != tuple(want.shape) or got.floating != want.is_floating_point():
            raise BadCheckpointError(
                f"{what} does not fit (at {key}: {got.dtype} {list(got.shape)}, expected "
                f"{list(want.shape)})",
                path,
            )
    if extra > trainer.extra_numel():
        raise BadCheckpointError(
            f"extra training state of {extra:,} numbers, more than the config's "
            f"{trainer.extra_numel():,}",
            path,
        )
    for name, opt in trainer.optimizers.items():
        groups = header["param_groups"].get(name)
        try:
            if groups is None:
                raise ValueError("the header holds no hyper-parameters for it")
            check_groups(groups, opt.state_dict()["param_groups"])
        except ValueError as exc:
            raise BadCheckpointError(f"optimiser {name} does not fit ({exc})", path) from None


def _owner(key: str) -> str:
    """What a tensor name belongs to: ``network G_A``, ``optimiser G``."""
    kind, _, rest = key.partition(".")
    name = rest.partition(".")[0]
    return {"net": f"network {name}", "opt": f"optimiser {name}"}.get(kind, "the checkpoint")


def check_groups(groups: object, fresh: list[dict[str, Any]]) -> None:
    """Saved parameter groups are the fresh optimiser's: as many, each over
    the same parameters, with its hyper-parameters (``ValueError`` if not)."""
    if not isinstance(groups, list) or len(groups) != len(fresh):
        raise ValueError("its parameter groups differ")
    for saved, new in zip(groups, fresh, strict=True):
        check_group(saved, new)


def check_group(saved: object, fresh: dict[str, Any]) -> None:
    """A saved parameter group holds the fresh one's parameters and
    hyper-parameters, each of its type (numbers finite, betas in [0, 1),
    eps positive); keys another PyTorch version added or dropped are plain
    values."""
    if not isinstance(saved, dict) or not {"params", "lr", "betas", "eps"} <= set(saved):
        raise ValueError("its hyper-parameters are missing")
    params = saved["params"]
    if not isinstance(params, list) or not all(_is_int(p) for p in params):
        raise ValueError("its parameters are not a list of indices")
    if params != list(fresh["params"]):
        raise ValueError("its parameters are not this optimiser's")
    for key, got in saved.items():
        value = fresh.get(key)
        if isinstance(value, list | tuple):
            ok = isinstance(got, list | tuple) and len(got) == len(value)
            ok = ok and all(_same_kind(g, v) for g, v in zip(got, value, strict=False))
        else:
            ok = _same_kind(got, value) if key in fresh else _same_kind(got, None)
        if not ok:
            raise ValueError(f"{key} is {got!r}")
    if not (all(0 <= b < 1 for b in saved["betas"]) and saved["lr"] >= 0 and saved["eps"] > 0):
        raise ValueError(f"betas {saved['betas']!r}, lr or eps out of range")


def _same_kind(got: object, fresh: object) -> bool:
    """``got`` is of ``fresh``'s JSON type (int and float count as one, and
    so do None and true/false: switches PyTorch may leave unset)."""
    if fresh is None or isinstance(fresh, bool):
        return got is None or isinstance(got, bool | int | float | str)
    if isinstance(fresh, str):
        return isinstance(got, str)
    if isinstance(fresh, int | float):
        return _is_number(got) and math.isfinite(got)  # type: ignore[arg-type]
    return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_optimizer_values(name: str, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Adam's state of optimiser ``name`` (``INDEX.FIELD`` tensors) in range:
    steps whole and from 0 to a billion, second moments not negative."""
    for key, value in tensors.items():
        field = key.partition(".")[2]
        if field == "step":
            bad = not (0 <= float(value) <= 1e9 and float(value).is_integer())
        elif field in ("exp_avg_sq", "max_exp_avg_sq"):
            bad = bool((value < 0).any())
        else:
            continue
        if bad:
            raise BadCheckpointError(
                f"optimiser {name} does not fit (its state {key} is out of range)", path
            )
