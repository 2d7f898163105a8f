"""What a training run is: one typed dataclass, saved as ``config.json`` in
the run folder and inside every checkpoint.

:class:`TrainConfig` holds what every mode shares (data, crop size, run
length, optimiser, precision, seed); its ``mode`` holds what one mode adds (its
networks and its own weights and switches), a :class:`ModeConfig` subclass
defined beside the mode's training step in ``styler/training/modes/``. Every
default lives on one of these dataclasses; ``ModeConfig.overrides`` says
where a mode starts from other values of the shared fields (a GAN from noise
trains on batches of 64, not 1).

The JSON is flat: the shared fields, ``"mode": NAME`` and the mode's own fields
side by side (as written since the first version, so that older run folders
still resume). This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from styler import strictjson
from styler.errors import BadCheckpointError, BadModelError, UsageError
from styler.netconfig import config_from_dict
from styler.training import limits

if TYPE_CHECKING:
    from styler.training.data import Layout

GanLoss = Literal["lsgan", "vanilla", "hinge", "wgangp"]
GAN_LOSSES: tuple[str, ...] = ("lsgan", "vanilla", "hinge", "wgangp")
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: Bump when an older styler could misread a newer run folder.
CONFIG_VERSION = 1

#: Fields that config.json files of every mode held before each mode had a
#: config of its own (a CycleGAN run wrote lambda_l1, a GAN pool_size); a
#: mode passes over those it does not have when it reads such a file.
FORMER_SHARED_FIELDS = frozenset(
    {"lambda_cycle", "lambda_identity", "lambda_l1", "lambda_color", "disc_input", "pool_size"}
    | {"classes"}
)


@dataclass(frozen=True, kw_only=True)
class ModeConfig(ABC):
    """What one training mode adds to :class:`TrainConfig`: its networks and
    its own hyper-parameters. A subclass per mode, next to its training step
    (``styler/training/modes/<name>.py``), registered in ``modes.MODES``."""

    #: The mode's name (``--mode``, ``"mode"`` in config.json), and in messages.
    name: ClassVar[str]
    title: ClassVar[str]
    #: Shared fields whose default differs in this mode.
    overrides: ClassVar[dict[str, Any]] = {}
    #: Run length when neither --steps nor --epochs is given, and the share
    #: of it over which the learning rate decays.
    epochs: ClassVar[float] = 200
    decay: ClassVar[float] = 0.5
    #: The flags (``styler train`` options) that build the mode's networks.
    flags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def own_flags(cls) -> set[str]:
        """The fields a flag sets as it is (loss weights, switches); not the
        networks, which the mode builds from its ``flags``."""
        return {f.name for f in dataclasses.fields(cls)} - {"generator", "discriminator", "classes"}

    @classmethod
    def flag_names(cls) -> set[str]:
        """Every flag the mode takes."""
        return cls.own_flags() | set(cls.flags)

    def __post_init__(self) -> None:
        limits.check_fields(self)

    def check(self, config: TrainConfig) -> None:
        """Refuse what this mode cannot train, saying which flag (a subclass
        calls this first: it checks the networks' sizes)."""
        limits.check_weights(self)
        for name in ("generator", "discriminator"):
            limits.check_network(name, getattr(self, name), config)

    @abstractmethod
    def layout(self, config: TrainConfig) -> Layout:
        """How the run's data is laid out (see :mod:`styler.training.data`)."""

    @abstractmethod
    def describe(self, config: TrainConfig, device: str) -> str:
        """One line about what the run will do."""

    @abstractmethod
    def summary(self, config: TrainConfig) -> dict[str, str]:
        """The data, networks and sizes, for report.html."""

    @property
    def size_multiple(self) -> int:
        """What the generator's input sides must be a multiple of."""
        return 1

    def cpu_note(self, config: TrainConfig) -> str | None:
        """Advice for a run on a CPU that will be slow, if it will."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """The mode's fields, networks as dicts (what config.json holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModeConfig:
        values = dict(data)
        for f in dataclasses.fields(cls):
            if f.name in ("generator", "discriminator") and f.name in values:
                try:
                    values[f.name] = config_from_dict(values[f.name])
                except BadModelError as exc:
                    raise ValueError(f"{f.name}: {exc.reason}") from None
            elif isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (not how it is watched)."""

    #: The mode and what it alone has (networks, loss weights).
    mode: ModeConfig
    #: Domain A: a folder of images (for ``aligned``, of side-by-side A|B
    #: images; for a GAN, the images to imitate, in class subfolders when
    #: class-conditional).
    data_a: str
    #: Domain B: a folder of images (None when ``aligned`` and for a GAN).
    data_b: str | None = None
    #: Short names of the two domains, for model names and metadata.
    domains: tuple[str, str] = ("A", "B")
    aligned: bool = False
    #: Square crop size the networks train on.
    size: int = 256
    #: Images are scaled so that their shorter side is this, then cropped.
    load_size: int = 286
    batch_size: int = 1
    #: Total optimiser steps; the learning rate is constant for
    #: ``steps - decay_steps`` steps, then falls linearly to zero.
    steps: int = 1000
    decay_steps: int = 500
    #: A time budget in seconds (``--time``; 0: none): ``steps`` is then the
    #: count the measured speed gives (see :mod:`styler.training.budget`).
    time_budget: float = 0.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gan_loss: GanLoss = "lsgan"
    #: Weight of the WGAN-GP gradient penalty.
    lambda_gp: float = 10.0
    flip: bool = True
    #: DiffAugment before every discriminator (every mode): random
    #: translation and cut-out of real and fake images alike ...
    augment: bool = False
    #: ... and random brightness, saturation and contrast.
    augment_color: bool = False
    seed: int = 0
    #: Arithmetic of the forward passes: fp32, or autocast to bf16 / fp16.
    precision: Precision = "fp32"
    init: str = "normal"
    init_gain: float = 0.02
    #: Held-out file names (relative to their folder), never trained on.
    holdout_a: tuple[str, ...] = ()
    holdout_b: tuple[str, ...] = ()
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ModeConfig) or not isinstance(self.data_a, str):
            raise UsageError("a config needs a mode and a data folder")
        limits.check_fields(self)
        check(self)
        self.mode.check(self)

    def same_run(self, other: TrainConfig) -> bool:
        """Whether ``other`` is this run's config, perhaps at another length
        (a resume's --steps, a time budget's estimate)."""
        return dataclasses.replace(other, steps=self.steps, decay_steps=self.decay_steps) == self

    def differences(self, other: TrainConfig) -> list[str]:
        """The fields (as config.json names them) whose values differ in
        ``other``, but for the run's length (see :meth:`same_run`)."""
        mine, theirs = self.to_dict(), other.to_dict()
        keys = sorted((set(mine) | set(theirs)) - {"steps", "decay_steps"})
        return [k for k in keys if mine.get(k) != theirs.get(k)]

    @property
    def decay_share(self) -> float:
        """The share of the run whose learning rate decays."""
        return self.decay_steps / self.steps

    @property
    def constant_steps(self) -> int:
        return self.steps - self.decay_steps

    def to_dict(self) -> dict[str, Any]:
        """The flat form of config.json: shared fields, the mode's name and its fields."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del shared["mode"]
        return {**shared, "mode": self.mode.name, **self.mode.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "") -> TrainConfig:
        from styler.training.modes import mode_config_class

        try:
            data = dict(data)
            version = data.get("version", 0)
            if not isinstance(version, int) or version > CONFIG_VERSION:
                raise ValueError(
                    f"config version {version!r} is newer than this styler understands "
                    f"({CONFIG_VERSION}); upgrade styler"
                )
            mode = data.pop("mode")
            if not isinstance(mode, str):
                raise ValueError(f"mode must be a string, got {type(mode).__name__}")
            mode_cls = mode_config_class(mode)
            shared = {f.name for f in dataclasses.fields(cls)} - {"mode"}
            own = {f.name for f in dataclasses.fields(mode_cls)}
            unknown = sorted(set(data) - shared - own - FORMER_SHARED_FIELDS)
            if unknown:
                raise ValueError(f"unknown fields {', '.join(unknown)}")
            mode = mode_cls.from_dict({k: v for k, v in data.items() if k in own})
            values = {k: v for k, v in data.items() if k in shared}
            for key in ("domains", "holdout_a", "holdout_b"):
                if isinstance(values.get(key), list):
                    values[key] = tuple(values[key])
            return cls(mode=mode, **values)
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise BadCheckpointError(f"not a valid training config ({exc})", source) from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path = "") -> TrainConfig:
        """Parse config.json strictly (UTF-8, no NaN, bounded numbers and nesting)."""
        try:
            data = strictjson.loads(text)
        except ValueError as exc:
            raise BadCheckpointError(f"training config is not JSON: {exc}", source) from None
        if not isinstance(data, dict):
            raise BadCheckpointError("training config must be a JSON object", source)
        return cls.from_dict(data, source)


def given(**values: Any) -> dict[str, Any]:
    """The ``values`` that are not None: options given, as opposed to left at
    their default (which the config's own dataclass then supplies)."""
    return {k: v for k, v in values.items() if v is not None}


def check(config: TrainConfig) -> None:
    """Refuse shared settings that cannot train, with a message that says which flag."""
    from styler.zoo.init import INIT_TYPES

    limits.check_sizes(config)
    limits.check_domains(config.domains)
    for key in ("data_a", "data_b"):
        if getattr(config, key) == "":  # (the current folder, which no run is made from)
            raise UsageError(f"{key} must name a folder, got an empty string")
    if config.init not in INIT_TYPES:
        raise UsageError(f"unknown init {config.init!r}: expected one of {', '.join(INIT_TYPES)}")
    if config.gan_loss not in GAN_LOSSES:
        raise UsageError(
            f"unknown GAN loss {config.gan_loss!r}: expected one of {', '.join(GAN_LOSSES)}"
        )
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {config.precision!r}")
    if config.time_budget:
        limits.check_number("--time", config.time_budget, 1.0, 366 * 86400.0)
    if config.steps < 1 or not 0 <= config.decay_steps <= config.steps:
        raise UsageError(
            f"--steps must be positive and the decay ({config.decay_steps} steps) "
            f"no longer than the run ({config.steps} steps)"
        )
