"""The training modes: one module each, holding the mode's config (its
networks, its own loss weights, its defaults and checks) and its trainer (the
networks, the optimisers and one training step).

A new mode is a new module here with a :class:`~styler.training.config.ModeConfig`
subclass and a :class:`~styler.training.trainer.Trainer` subclass, and one
line in :data:`MODES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from styler.errors import UsageError
from styler.training.config import ModeConfig, TrainConfig
from styler.training.distributed import DistInfo
from styler.training.modes.cut import Cut, CutConfig, FastCutConfig
from styler.training.modes.cyclegan import CycleGan, CycleGanConfig
from styler.training.modes.gan import Gan, GanConfig
from styler.training.modes.pix2pix import Pix2Pix, Pix2PixConfig
from styler.training.trainer import Trainer


@dataclass(frozen=True)
class Mode:
    config: type[ModeConfig]
    trainer: type[Trainer]


#: name -> mode: the only place a mode is found from its name.
MODES: dict[str, Mode] = {
    "cyclegan": Mode(CycleGanConfig, CycleGan),
    "cut": Mode(CutConfig, Cut),
    "fastcut": Mode(FastCutConfig, Cut),
    "pix2pix": Mode(Pix2PixConfig, Pix2Pix),
    "gan": Mode(GanConfig, Gan),
}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise UsageError(f"unknown mode {name!r}: expected one of {', '.join(MODES)}")
    return MODES[name]


def mode_config_class(name: str) -> type[ModeConfig]:
    return get_mode(name).config


def build_trainer(config: TrainConfig, device: str, dist: DistInfo | None = None) -> Trainer:
    """The networks and optimisers of ``config``'s mode, on ``device``."""
    return get_mode(config.mode.name).trainer(config, device, dist or DistInfo())
