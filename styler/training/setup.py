"""From folders and flags to a :class:`TrainConfig`: which mode the folders
call for, the mode's networks and defaults, held-out images, run length.

    config, found = make_config("photos/", "paintings/", lr=1e-4)

Flags are ``styler train``'s options by their Python names; one not given
(or None) takes its default from the config dataclasses: the shared ones
from :class:`TrainConfig` (or the mode's ``overrides``), the mode's own from
its :class:`~styler.training.config.ModeConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styler.errors import StylerError, UsageError
from styler.fsutil import resolved
from styler.log import logger
from styler.paths import check_two_domains
from styler.training import limits
from styler.training.budget import PROVISIONAL_STEPS
from styler.training.config import ModeConfig, TrainConfig, given
from styler.training.data import ClassScan, Scan, domain_name, scan, scan_classes
from styler.training.modes import MODES, get_mode
from styler.training.modes.gan import GanConfig
from styler.training.modes.translation import TranslationConfig, default_load_size
from styler.training.recipes import DEFAULT as DEFAULT_RECIPE
from styler.training.recipes import apply_recipe, get_recipe
from styler.training.run import RunFolder

#: The fields of TrainConfig a flag may set (the others come from the folders).
SHARED_FLAGS = frozenset(
    {"batch_size", "lr", "beta1", "beta2", "gan_loss", "lambda_gp", "flip", "seed"}
    | {"augment", "augment_color"}
    | {"precision", "init", "init_gain", "extra"}
)


@dataclass(frozen=True)
class Plan:
    """What a mode makes of the folders and its flags: its config, the
    config's data fields, the scan, and the images an epoch walks."""

    mode: ModeConfig
    fields: dict[str, Any]
    found: Scan | ClassScan
    images: int


def make_config(
    data_a: str | Path,
    data_b: str | Path | None = None,
    *,
    aligned: bool = False,
    mode: str = "auto",
    recipe: str | None = None,
    **flags: Any,
) -> tuple[TrainConfig, Scan | ClassScan]:
    """Look at the folders and build the run's config: two folders train
    CycleGAN (unpaired) or pix2pix (paired by file name), one ``aligned``
    folder pix2pix, one plain folder a GAN from noise. The run's length is
    ``steps``, ``epochs`` or ``time`` (seconds, a time budget). ``flags``
    are the other options (lr, batch_size, generator, lambda_cycle, arch, ...).

    ``recipe`` names a set of flags (:mod:`~styler.training.recipes`) that
    the given ones override; ``"auto"`` takes the default recipe for two
    unpaired folders given no mode (what ``styler train A B`` does), and none
    otherwise. The recipe used is kept in the config (``extra["recipe"]``)."""
    if data_b is not None:
        check_two_domains(data_a, data_b)
    name = recipe_for(recipe, data_a, data_b, aligned, mode, flags.get("seed"))
    if name is None:
        return _make_config(data_a, data_b, aligned=aligned, mode=mode, **flags)
    chosen = get_recipe(name)
    given_flags = given(**flags)
    if mode != "auto":
        given_flags["mode"] = mode
    merged = apply_recipe(chosen, given_flags)
    extra = {**merged.pop("extra", {}), "recipe": name}
    return _make_config(data_a, data_b, aligned=aligned, extra=extra, **merged)


def recipe_for(
    recipe: str | None,
    data_a: str | Path,
    data_b: str | Path | None,
    aligned: bool,
    mode: str,
    seed: int | None,
) -> str | None:
    """The recipe a run takes: the one named, or for ``"auto"`` the default
    one when the two folders are unpaired and no mode was asked for."""
    if recipe != "auto":
        return recipe
    if data_b is None or aligned or mode != "auto":
        return None
    # (a first look: the config's scan, next, says what it leaves out)
    found = scan(resolved(data_a), resolved(data_b), paired=None, seed=seed or 0, say=False)
    return None if found.paired else DEFAULT_RECIPE


def _make_config(
    data_a: str | Path,
    data_b: str | Path | None = None,
    *,
    aligned: bool = False,
    mode: str = "auto",
    steps: int | None = None,
    epochs: float | None = None,
    decay: float | None = None,
    time: float | None = None,
    **flags: Any,
) -> tuple[TrainConfig, Scan | ClassScan]:
    if sum(x is not None for x in (steps, epochs, time)) > 1:
        raise UsageError("give one of --steps, --epochs and --time")
    if epochs is not None:
        limits.check_number("--epochs", epochs, 0.0)
        if epochs == 0:
            raise UsageError("--epochs must be positive")
    flags = given(**flags)
    if flags.get("gan_loss") == "auto":
        del flags["gan_loss"]
    shared = {k: flags.pop(k) for k in SHARED_FLAGS if k in flags}
    if "seed" in shared:  # chooses the held-out images before the config is checked
        limits.check_seed(shared["seed"])
    if "batch_size" in shared:  # divides the images into epochs
        limits.check_count("--batch-size", shared["batch_size"], 1, limits.MAX_BATCH)
    if data_b is None and not aligned:
        if mode not in ("auto", "gan"):
            raise UsageError(f"--mode {mode} needs two folders (or --aligned for pix2pix)")
        plan = _generation(resolved(data_a), flags)
    else:
        seed = shared.get("seed", TrainConfig.seed)
        plan = _translation(data_a, data_b, mode, seed, flags)
    if flags:
        raise UsageError(_not_for(plan.mode, flags))
    shared = {**plan.mode.overrides, **shared}
    decay = plan.mode.decay if decay is None else decay
    if not 0 <= decay <= 1:
        raise UsageError("--decay is the share of the run with a decaying learning rate, 0..1")
    if time is not None:  # the speed, measured in the first steps, sets the count
        steps = PROVISIONAL_STEPS
        shared["time_budget"] = float(time)
    if steps is None:
        batch = int(shared.get("batch_size", TrainConfig.batch_size))
        epoch_steps = max(1, math.ceil(plan.images / batch))
        epochs = epochs if epochs is not None else plan.mode.epochs
        length = epochs * epoch_steps
        if length > limits.MAX_STEPS:
            raise UsageError(f"--epochs {epochs:g} makes more than {limits.MAX_STEPS:,} steps")
        steps = max(1, round(length))
    decay_steps = round(steps * decay)
    config = TrainConfig(
        mode=plan.mode, steps=steps, decay_steps=decay_steps, **plan.fields, **shared
    )
    return config, plan.found


def _translation(
    data_a: str | Path, data_b: str | Path | None, mode: str, seed: int, flags: dict[str, Any]
) -> Plan:
    """Two folders, or one of side-by-side pairs: CycleGAN, or pix2pix when
    the files pair up by name, unless ``mode`` says."""
    modes = [name for name, m in MODES.items() if issubclass(m.config, TranslationConfig)]
    if mode not in ("auto", *modes):
        raise UsageError(f"unknown mode {mode!r}: expected auto, {', '.join(modes)}")
    root_a = resolved(data_a)
    root_b = None if data_b is None else resolved(data_b)
    forced = None if mode == "auto" else translation_mode(mode)
    if root_b is None and forced is not None and not forced.paired:
        raise UsageError(f"--aligned data is paired: it trains pix2pix, not {mode}")
    found = scan(root_a, root_b, paired=None if forced is None else forced.paired, seed=seed)
    if found.unpaired_left:
        logger.warning(
            "%d files of %s have no partner in %s and are not used",
            found.unpaired_left,
            root_a,
            root_b,
        )
    chosen = forced or translation_mode("pix2pix" if found.paired else "cyclegan")
    size = int(flags.pop("size", TrainConfig.size))
    fields = {
        "data_a": str(root_a),
        "data_b": None if root_b is None else str(root_b),
        "aligned": root_b is None,
        "domains": _domains(root_a, root_b),
        "size": size,
        "load_size": int(flags.pop("load_size", default_load_size(size))),
        "holdout_a": tuple(found.holdout_a),
        "holdout_b": tuple(found.holdout_b),
    }
    a = len(found.sources_a) - len(found.holdout_a)
    b = len(found.sources_b) - len(found.holdout_b)
    return Plan(chosen.configure(size, flags), fields, found, max(a, b, 1))


def _generation(root: Path, flags: dict[str, Any]) -> Plan:
    """One folder: a GAN from noise."""
    found = scan_classes(root)
    mode = GanConfig.configure(found, **{k: flags.pop(k) for k in GanConfig.flags if k in flags})
    size = mode.generator.size
    fields = {
        "data_a": str(root),
        "domains": (domain_name(root), "generated"),
        "size": size,
        "load_size": size,
    }
    return Plan(mode, fields, found, len(found.files))


def _domains(root_a: Path, root_b: Path | None) -> tuple[str, str]:
    """Short names of the domains, from the folder names ("photos", "monet")."""
    if root_b is None:
        return ("A", "B")
    a, b = domain_name(root_a), domain_name(root_b)
    return (f"{a}_A", f"{b}_B") if a == b else (a, b)


def _not_for(mode: ModeConfig, flags: dict[str, Any]) -> str:
    """The message for flags that ``mode`` does not take."""
    parts = []
    for flag in sorted(flags):
        takers = [m.config.title for m in MODES.values() if flag in m.config.flag_names()]
        where = f"for {' and '.join(takers)}, " if takers else ""
        parts.append(f"--{flag.replace('_', '-')} is {where}not {mode.title}")
    return "; ".join(parts)


def translation_mode(name: str) -> type[TranslationConfig]:
    config = get_mode(name).config
    if not issubclass(config, TranslationConfig):
        raise UsageError(f"--mode {name} trains on one folder, not two")
    return config


def default_run_dir(config: TrainConfig, root: Path = Path("runs")) -> Path:
    """runs/A_to_B, or runs/A_to_B-2, -3, ... when taken (a folder a run
    left before its first checkpoint is not taken: it starts afresh)."""
    base = f"{config.domains[0]}_to_{config.domains[1]}"
    candidate = root / base
    n = 2
    while _taken(candidate):
        candidate = root / f"{base}-{n}"
        n += 1
    return candidate


def _taken(folder: Path) -> bool:
    try:
        RunFolder(folder).check_new()
    except StylerError:
        return True
    return False
