"""Recipes: named sets of ``styler train`` flags, applied before the user's
own (which win). Each says what it is for and why; ``styler train`` prints
the one it uses.

- ``reference``: the published CycleGAN settings (Zhu et al. 2017), as
  pytorch-CycleGAN-and-pix2pix runs them: what to compare with, days on a CPU.
- ``fast``: one-sided, small, data-efficient, for an hour of a laptop's
  CPU; of what styler has measured (docs/BENCHMARKS.md), the recipe that
  never made a photo worse. It changes photos little in an hour: a recipe
  that learns a style from a few images is still being tuned (issue 16).
  The default for two unpaired folders.
- ``painting``: the shipped photo -> painting model's settings, for a
  style that should show: FastCUT without the identity start at a quarter
  of the width (ngf 16), a style loss and a coarse colour loss, crops of
  larger images, for an hour. Its outputs look painted (and, with their
  own colours, cast towards the style's palette: apply keeps each photo's
  colours with ``--keep-colours``); on a subtle style it changes photos
  more than the style does (docs/BENCHMARKS.md).
- ``brush``: ``fast`` with a colour path judged by a projected colour
  discriminator and a smoothing path (Gaussian blurs and Kuwahara filters:
  flat patches of paint) learning at ten times the rate, for 30 minutes: on
  the task with a known answer, the only recipe measured to learn the
  brushwork (+4.1 dB over the untouched photos in 1500 steps, two seeds);
  not yet measured on the painting corpus, so not the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from styler.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    name: str
    #: What it is, in a line (printed at the start of a run).
    summary: str
    #: make_config flags (mode, networks, sizes, loss weights, ...).
    flags: dict[str, Any] = field(default_factory=dict)
    #: The run's length when none is given: a time budget (seconds) ...
    time: float | None = None
    #: ... or epochs.
    epochs: float | None = None


#: The fast recipe's flags (``brush`` adds to them).
_FAST: dict[str, Any] = {
    "mode": "fastcut",
    "generator": "resnet_6blocks",
    "ngf": 32,
    "upsample": "resize",
    "residual": True,
    "size": 128,
    "load_size": 256,
    "augment": True,
    "projected": True,
    "ema": 0.999,
}

RECIPES: dict[str, Recipe] = {
    "reference": Recipe(
        "reference",
        "the published CycleGAN settings: resnet_9blocks (ngf 64), 256-pixel crops of images "
        "scaled to 286, batch 1, LSGAN, cycle 10, identity 0.5, pool 50, Adam 2e-4, 200 epochs "
        "(the last 100 decaying), fp32",
        {
            "mode": "cyclegan",
            "generator": "resnet_9blocks",
            "ngf": 64,
            "ndf": 64,
            "discriminator": "basic",
            "size": 256,
            "load_size": 286,
            "batch_size": 1,
            "lr": 2e-4,
            "beta1": 0.5,
            "gan_loss": "lsgan",
            "lambda_cycle": 10.0,
            "lambda_identity": 0.5,
            "pool_size": 50,
            "precision": "fp32",
            "decay": 0.5,
        },
        epochs=200,
    ),
    "fast": Recipe(
        "fast",
        "FastCUT with a generator that starts as the identity (resnet_6blocks, ngf 32), "
        "DiffAugment, a projected discriminator beside the PatchGAN, an average of the "
        "generator's weights, 128-pixel crops; for 1 hour: of the recipes measured, the one "
        "that never made photos worse (docs/BENCHMARKS.md)",
        _FAST,
        time=3600.0,
    ),
    "painting": Recipe(
        "painting",
        "the shipped photo -> painting model's settings: FastCUT without the identity start "
        "(resnet_6blocks, ngf 16), DiffAugment, a projected discriminator beside the PatchGAN, "
        "a style loss (20) and a colour loss (30 over 32 x 32 cells), an average of the "
        "generator's weights, 128-pixel crops of images scaled to 512; for 1 hour: of the "
        "recipes measured, the closest to the paintings per CPU-hour, and it recolours photos "
        "towards the style's palette (docs/BENCHMARKS.md)",
        {
            "mode": "fastcut",
            "generator": "resnet_6blocks",
            "ngf": 16,
            "upsample": "resize",
            "residual": False,
            "size": 128,
            "load_size": 512,
            "augment": True,
            "projected": True,
            "ema": 0.999,
            "lambda_style": 20.0,
            "lambda_color": 30.0,
            "color_cells": 32,
        },
        time=3600.0,
    ),
    "brush": Recipe(
        "brush",
        "the fast recipe with a colour path (32) judged by a projected discriminator on 4 x 4 "
        "averages, and a smoothing path (16: Gaussian blurs and Kuwahara filters, flat "
        "patches of paint with edges kept) at ten times the learning rate; for 30 minutes: "
        "on the known-answer task the recipe that learns the brushwork (docs/BENCHMARKS.md)",
        {
            **_FAST,
            "color_mlp": 32,
            "color_disc": True,
            "color_judge": "projected",
            "smooth": 16,
            "lr_paths": 10.0,
        },
        time=1800.0,
    ),
}

#: The recipe of two unpaired folders given without --mode or --recipe.
DEFAULT = "fast"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"unknown --recipe {name!r}: expected one of {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_recipe(recipe: Recipe, flags: dict[str, Any]) -> dict[str, Any]:
    """The recipe's flags, then the user's (``flags``, those given) over them;
    the recipe's run length only when the user gave none."""
    merged = {**recipe.flags, **flags}
    if not any(flags.get(k) is not None for k in ("steps", "epochs", "time")):
        if recipe.time is not None:
            merged["time"] = recipe.time
        elif recipe.epochs is not None:
            merged["epochs"] = recipe.epochs
    return merged
