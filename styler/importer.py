"""Import generators trained with pytorch-CycleGAN-and-pix2pix.

That code saves a plain ``state_dict`` (``latest_net_G_A.pth`` and friends)
and nothing about the architecture. We read it with ``weights_only=True``,
work out the architecture, width, norm and dropout from the key names and
tensor shapes, and load it into the matching zoo network with ``strict=True``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from styler import ckptfile
from styler.errors import BadCheckpointError, BadModelError, UsageError
from styler.fsutil import check_new_output, path_kind, remove_stale_parts
from styler.log import logger
from styler.metadata import ModelMetadata
from styler.netconfig import (
    GeneratorConfig,
    ResnetGeneratorConfig,
    UnetGeneratorConfig,
    check_values,
)

if TYPE_CHECKING:
    from styler.export import ExportResult

_STALE_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
#: Which way a generator translates (CycleGAN's G_A: AtoB).
DIRECTIONS = ("AtoB", "BtoA")
#: Largest crop size a model can say it was trained at.
MAX_TRAIN_SIZE = 4096


@dataclass(frozen=True)
class ImportedGenerator:
    config: GeneratorConfig
    state_dict: dict[str, torch.Tensor]
    #: "AtoB", "BtoA", or None when the file name does not say.
    direction: str | None
    #: Keys that were dropped (stale instance-norm statistics).
    ignored_keys: tuple[str, ...]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .pth file safely (``weights_only=True``: no code in it can run)."""
    if path_kind(path, BadCheckpointError) == "other":  # a named pipe would block forever
        raise BadCheckpointError("not a regular file (named pipe, device or socket)", path)
    ckptfile.check(path)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle it refuses (a legacy protocol, ...)
            # beside the error it raises; styler says it in one line.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadCheckpointError("no such file", path) from None
    except IsADirectoryError:
        raise BadCheckpointError("is a directory, not a checkpoint file", path) from None
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        raise BadCheckpointError(f"cannot read checkpoint: {_load_failure(exc)}", path) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise BadCheckpointError("not a state_dict (expected a mapping of names to tensors)", path)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise BadCheckpointError(
                f"not a state_dict: entry {key!r} is a {type(value).__name__}, not a tensor", path
            )
        if value.layout != torch.strided or value.is_meta or value.is_complex():
            kind = "complex" if value.is_complex() else "meta" if value.is_meta else "sparse"
            raise BadCheckpointError(f"entry {key!r} is a {kind} tensor, not weights", path)
        # DataParallel wraps names in "module."
        tensors[key.removeprefix("module.")] = value
    return tensors


def _load_failure(exc: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed."""
    text = str(exc)
    if isinstance(exc, EOFError) or "EOF" in text:
        return "the file is empty or truncated"
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"refused: it holds a Python object ({found.group(1)}) that would run code when "
            "unpickled; styler only loads tensors (weights_only=True)"
        )
    if "wrong byte size" in text:  # PyTorch's own text is unformatted ("expected %ld")
        return "its tensors' data do not match the sizes it states (damaged or forged)"
    if "Unsupported operand" in text or "invalid load key" in text:
        return "not a PyTorch checkpoint (no readable pickle data)"
    if "zip archive" in text or "central directory" in text:
        return "damaged or truncated PyTorch zip archive"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _has(sd: Mapping[str, Any], key: str) -> bool:
    return key in sd


def detect_config(sd: Mapping[str, torch.Tensor], path: Path | str = "") -> GeneratorConfig:
    """Work out which reference generator ``sd`` belongs to."""
    if _has(sd, "model.model.0.weight"):
        return _detect_unet(sd)
    if _has(sd, "model.1.weight") and sd["model.1.weight"].dim() == 4:
        return _detect_resnet(sd)
    sample = ", ".join(sorted(sd)[:5])
    raise BadCheckpointError(
        "not a pytorch-CycleGAN-and-pix2pix generator: expected keys 'model.1.weight' "
        f"(ResNet) or 'model.model.0.weight' (U-Net); found {sample}, ...",
        path,
    )


def _norm_from(sd: Mapping[str, torch.Tensor], conv: str, norm: str) -> str:
    """Norm after ``conv``, from the keys: batch norm has a weight, instance
    norm makes the conv keep its bias, no norm has neither."""
    if _has(sd, f"{norm}.weight"):
        return "batch"
    if _has(sd, f"{conv}.bias"):
        return "instance"
    return "none"


def _detect_resnet(sd: Mapping[str, torch.Tensor]) -> ResnetGeneratorConfig:
    first = sd["model.1.weight"]
    ngf, in_channels = first.shape[0], first.shape[1]
    blocks = sorted(
        {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    )
    n_blocks = len(blocks)
    norm = _norm_from(sd, "model.1", "model.2")
    # Reflection and replication padding put the conv at index 1, zero padding at 0.
    padding = "zero" if blocks and _has(sd, f"model.{blocks[0]}.conv_block.0.weight") else "reflect"
    first_conv = 0 if padding == "zero" else 1
    # conv, norm, relu, [dropout], pad, conv: dropout shifts the second conv by one.
    second_conv = [
        int(m.group(1))
        for k in sd
        if blocks
        and sd[k].dim() == 4  # convolutions only, not batch-norm weights
        and (m := re.match(rf"model\.{blocks[0]}\.conv_block\.(\d+)\.weight$", k))
    ]
    second = max((i for i in second_conv if i > first_conv), default=0)
    expected_second = first_conv + (4 if padding != "zero" else 3)
    dropout = second == expected_second + 1
    last = max(int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.weight$", k)))
    out_channels = sd[f"model.{last}.weight"].shape[0]
    return ResnetGeneratorConfig(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        ngf=int(ngf),
        n_blocks=n_blocks,
        norm=norm,  # type: ignore[arg-type]
        dropout=dropout,
        padding=padding,  # type: ignore[arg-type]
    )


def _detect_unet(sd: Mapping[str, torch.Tensor]) -> UnetGeneratorConfig:
    first = sd["model.model.0.weight"]
    ngf, in_channels = first.shape[0], first.shape[1]
    out_channels = sd["model.model.3.weight"].shape[1]  # ConvTranspose: [in, out, k, k]
    # Each nested block adds ".model.3" (a middle block's submodule index), the
    # outermost block's submodule is at ".model.1".
    prefix, num_downs = "model.model.1", 1
    while _has(sd, f"{prefix}.model.1.weight"):
        num_downs += 1
        prefix = f"{prefix}.model.3"
    norm = _norm_from(sd, "model.model.1.model.1", "model.model.1.model.2")
    # Dropout layers sit after the up norm of the inner (ngf*8) middle blocks;
    # they hold no weights, but shift nothing either, so the keys cannot tell.
    return UnetGeneratorConfig(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        ngf=int(ngf),
        num_downs=num_downs,
        norm=norm,  # type: ignore[arg-type]
    )


def _direction_from_name(path: Path) -> str | None:
    stem = path.stem
    if stem.endswith("G_A") or stem.endswith("G_AtoB"):
        return "AtoB"
    if stem.endswith("G_B") or stem.endswith("G_BtoA"):
        return "BtoA"
    if stem.endswith("net_G"):
        return "AtoB"
    return None


def import_checkpoint(path: str | Path, **overrides: Any) -> ImportedGenerator:
    """Read a reference generator checkpoint into a zoo config and state_dict.

    ``overrides`` (for example ``norm="batch"`` or ``n_blocks=6``) replace what
    detection found; the weights must then still match exactly.
    """
    from styler import zoo

    path = Path(path)
    sd = load_state_dict(path)
    config = detect_config(sd, path)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        arch_keys = {"n_blocks": "resnet", "num_downs": "unet"}
        for key, kind in arch_keys.items():
            if key in overrides and config.kind != kind:
                raise BadCheckpointError(
                    f"holds a {config.preset} generator ({config.kind}), not a {kind} one: "
                    "--arch must be of the same kind",
                    path,
                )
        try:
            config = dataclasses.replace(config, **overrides)
        except TypeError as exc:
            raise BadCheckpointError(f"cannot apply overrides: {exc}", path) from None
    try:  # sizes within bounds before a network of that size is built
        check_values(config)
    except BadModelError as exc:
        raise BadCheckpointError(f"not a usable generator: {exc.reason}", path) from None
    net = zoo.build(config, init=None)
    expected = net.state_dict()
    ignored: list[str] = []
    if config.norm != "batch":
        for key in list(sd):
            if key.endswith(_STALE_SUFFIXES) and key not in expected:
                ignored.append(key)
                del sd[key]
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise BadCheckpointError(
            f"does not match a {config.preset} generator (ngf {config.ngf}, norm {config.norm}): "
            + "; ".join(parts),
            path,
        )
    wrong = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(sd[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise BadCheckpointError(
            f"tensor shapes do not match a {config.preset} generator: {_short(wrong)}", path
        )
    state = {
        k: sd[k].detach().to(torch.float32) if sd[k].is_floating_point() else sd[k]
        for k in expected
    }
    bad = next(
        (k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None
    )
    if bad is not None:  # a diverged or damaged checkpoint: black images, whatever parity says
        raise BadCheckpointError(f"the weights hold NaN or infinite values (in {bad})", path)
    return ImportedGenerator(config, state, _direction_from_name(path), tuple(ignored))


def _short(items: list[str], limit: int = 4) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def import_to_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    license: str = "unknown",
    train_size: int | None = None,
    direction: str | None = None,
    fp16: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> ExportResult:
    """Import a reference checkpoint and export it to a styler ONNX model,
    with the exporter's parity check."""
    import hashlib

    from styler import zoo
    from styler.export import export_onnx

    checkpoint, output = Path(checkpoint), Path(output)
    if direction is not None and direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r}: expected {' or '.join(DIRECTIONS)}")
    if train_size is not None and not 1 <= train_size <= MAX_TRAIN_SIZE:
        raise UsageError(f"--train-size must be from 1 to {MAX_TRAIN_SIZE}, got {train_size}")
    check_new_output(checkpoint, output, overwrite)
    remove_stale_parts(output.parent)  # what a killed writer left
    imported = import_checkpoint(checkpoint, **overrides)
    net = zoo.build(imported.config, init=None)
    net.load_state_dict(imported.state_dict, strict=True)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    meta = ModelMetadata(
        network=imported.config,
        name=name or checkpoint.stem,
        description=description
        or f"{imported.config.preset} generator imported from {checkpoint.name}",
        license=license,
        direction=direction or imported.direction or "AtoB",
        train_size=train_size,
        source=f"pytorch-CycleGAN-and-pix2pix checkpoint {checkpoint.name} (sha256 {digest})",
    )
    if imported.ignored_keys:
        logger.info(
            "%s: ignored %d stale instance-norm statistics keys",
            checkpoint,
            len(imported.ignored_keys),
        )
    return export_onnx(net, meta, output, fp16=fp16, replace=overwrite)
