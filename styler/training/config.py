"""What a training run is: one typed dataclass, saved as ``config.json`` in
the run folder and inside every checkpoint.

Plain Python (no torch), so that the CLI can parse, check and print a
config before anything heavy is imported. Every default here is the
documented default of ``styler train``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from styler.errors import BadCheckpointError, UsageError
from styler.netconfig import (
    DiscriminatorConfig,
    GeneratorConfig,
    NoiseGeneratorConfig,
    config_from_dict,
    config_to_dict,
)

Mode = Literal["cyclegan", "pix2pix", "gan"]
MODES: tuple[str, ...] = ("cyclegan", "pix2pix", "gan")
GanLoss = Literal["lsgan", "vanilla", "hinge", "wgangp"]
GAN_LOSSES: tuple[str, ...] = ("lsgan", "vanilla", "hinge", "wgangp")
Precision = Literal["fp32", "bf16", "fp16"]
DiscInput = Literal["rgb", "luma"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: Bump when an older styler could misread a newer run folder.
CONFIG_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (not how it is watched)."""

    mode: Mode
    #: Domain A: a folder of images (for ``aligned``, of side-by-side A|B
    #: images; for ``gan``, the images to imitate, in class subfolders when
    #: class-conditional).
    data_a: str
    #: Domain B: a folder of images (None when ``aligned`` and for ``gan``).
    data_b: str | None
    generator: GeneratorConfig | NoiseGeneratorConfig
    discriminator: DiscriminatorConfig
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
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gan_loss: GanLoss = "lsgan"
    lambda_cycle: float = 10.0
    #: Identity loss weight, relative to ``lambda_cycle`` (as in CycleGAN).
    lambda_identity: float = 0.5
    lambda_l1: float = 100.0
    #: CycleGAN colour loss: L1 between the chroma (Cb, Cr) of input and
    #: output averaged over (size/8)-pixel cells, which keeps each region's hue
    #: while leaving brightness and texture free (0, as the reference, is off).
    lambda_color: float = 0.0
    #: What CycleGAN's discriminators see: ``rgb`` (the reference), or
    #: ``luma`` (brightness only), which leaves colour to the generator's
    #: other losses so that a style's palette does not replace the photo's.
    disc_input: DiscInput = "rgb"
    #: Weight of the WGAN-GP gradient penalty.
    lambda_gp: float = 10.0
    #: Past fakes each discriminator sees (CycleGAN's image pool); 0 disables it.
    pool_size: int = 50
    flip: bool = True
    seed: int = 0
    #: Arithmetic of the forward passes: fp32, or autocast to bf16 / fp16.
    precision: Precision = "fp32"
    init: str = "normal"
    init_gain: float = 0.02
    #: Held-out file names (relative to their folder), never trained on.
    holdout_a: tuple[str, ...] = ()
    holdout_b: tuple[str, ...] = ()
    #: ``gan`` mode: class names (subfolders of ``data_a``) in label order;
    #: empty for an unconditional generator.
    classes: tuple[str, ...] = ()
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self)

    @property
    def constant_steps(self) -> int:
        return self.steps - self.decay_steps

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["generator"] = config_to_dict(self.generator)
        data["discriminator"] = config_to_dict(self.discriminator)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "") -> TrainConfig:
        try:
            data = dict(data)
            version = data.get("version", 0)
            if not isinstance(version, int) or version > CONFIG_VERSION:
                raise ValueError(
                    f"config version {version!r} is newer than this styler understands "
                    f"({CONFIG_VERSION}); upgrade styler"
                )
            data["generator"] = config_from_dict(data["generator"])
            data["discriminator"] = config_from_dict(data["discriminator"])
            for key in ("domains", "holdout_a", "holdout_b", "classes"):
                if key in data:
                    data[key] = tuple(data[key])
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"unknown fields {', '.join(unknown)}")
            return cls(**data)
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise BadCheckpointError(f"not a valid training config ({exc})", source) from None

    @classmethod
    def from_json(cls, text: str, source: str | Path = "") -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadCheckpointError(f"training config is not JSON ({exc.msg})", source) from None
        if not isinstance(data, dict):
            raise BadCheckpointError("training config must be a JSON object", source)
        return cls.from_dict(data, source)


def disc_channels(mode: str, disc_input: str) -> int:
    """Channels a style-transfer discriminator takes: luma 1, pix2pix's
    (input, output) pairs 6, CycleGAN's images 3."""
    return 1 if disc_input == "luma" else 6 if mode == "pix2pix" else 3


def check(config: TrainConfig) -> None:
    """Refuse configs that cannot train, with a message that says which flag."""
    if config.mode not in MODES:
        raise UsageError(f"unknown mode {config.mode!r}: expected one of {', '.join(MODES)}")
    if config.gan_loss not in GAN_LOSSES:
        raise UsageError(
            f"unknown GAN loss {config.gan_loss!r}: expected one of {', '.join(GAN_LOSSES)}"
        )
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {config.precision!r}")
    if config.disc_input not in ("rgb", "luma"):
        raise UsageError(f"unknown --disc-input {config.disc_input!r}: expected rgb or luma")
    if config.disc_input == "luma" and config.mode != "cyclegan":
        raise UsageError("--disc-input luma is for CycleGAN")
    expected = disc_channels(config.mode, config.disc_input)
    if config.mode != "gan" and config.discriminator.in_channels != expected:
        raise UsageError(
            f"the discriminator takes {config.discriminator.in_channels} channels, "
            f"this mode gives it {expected}"
        )
    if config.mode == "gan":
        _check_gan(config)
        return
    multiple = getattr(config.generator, "size_multiple", 1)
    if config.size < 16 or config.size % multiple:
        raise UsageError(
            f"--size {config.size} must be at least 16 and a multiple of {multiple} "
            f"for a {config.generator.preset} generator"
        )
    if config.load_size < config.size:
        raise UsageError(f"--load-size {config.load_size} is smaller than --size {config.size}")
    if config.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if config.steps < 1 or not 0 <= config.decay_steps <= config.steps:
        raise UsageError(
            f"--steps must be positive and the decay ({config.decay_steps} steps) "
            f"no longer than the run ({config.steps} steps)"
        )
    if not config.lr > 0:
        raise UsageError(f"--lr must be positive, got {config.lr}")
    if config.pool_size < 0:
        raise UsageError("--pool-size must be >= 0")
    if config.aligned != (config.data_b is None):
        raise UsageError("give either two folders (A/ B/) or one --aligned folder")


def _check_gan(config: TrainConfig) -> None:
    g, d = config.generator, config.discriminator
    if g.kind not in ("mlp", "dcgan") or d.kind not in ("mlp_d", "dcgan_d"):
        raise UsageError("gan mode needs a generator from noise (mlp or dcgan)")
    if not (config.size == g.size == d.size):  # type: ignore[union-attr]
        raise UsageError(f"generator, discriminator and --size disagree ({config.size})")
    if g.num_classes != len(config.classes) or d.num_classes != len(config.classes):  # type: ignore[union-attr]
        raise UsageError("the networks' class counts do not match the class folders")
    if config.data_b is not None or config.aligned:
        raise UsageError("gan mode trains on one folder")
    if config.batch_size < 2:
        raise UsageError("gan mode needs --batch-size of at least 2 (batch norm)")
    if config.steps < 1 or not 0 <= config.decay_steps <= config.steps:
        raise UsageError("--steps must be positive and the decay no longer than the run")
