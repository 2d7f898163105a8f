"""What the image-to-image modes share (CycleGAN, pix2pix): a generator of
images from images, a PatchGAN discriminator, and the flags that build them.

A mode config subclasses :class:`TranslationConfig` and says what differs:
its default generator, the norm of its networks, what its discriminator
sees, how its data is laid out, and its own loss weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from styler.errors import UsageError
from styler.netconfig import (
    GeneratorConfig,
    ImageDiscriminatorConfig,
    PatchDiscriminatorConfig,
    ResnetGeneratorConfig,
    discriminator_preset,
    generator_preset,
)
from styler.training.budget import format_duration
from styler.training.config import ModeConfig, TrainConfig
from styler.training.data import Layout, Paired, Unpaired

#: The flags that build the networks (``styler train --gen ... --ndf ...``).
NETWORK_FLAGS = (
    "generator",
    "ngf",
    "norm",
    "upsample",
    "residual",
    "color_mlp",
    "detail",
    "smooth",
    "discriminator",
    "ndf",
)
#: Sample grids show squares of up to this many pixels.
SAMPLE_SIDE = 256
#: Unless --load-size says, images are scaled to this multiple of the crop
#: size (the reference: 286 for 256-pixel crops), so that crops move.
LOAD_SCALE = 286 / 256


def default_load_size(size: int) -> int:
    return max(size, round(size * LOAD_SCALE))


@dataclass(frozen=True, kw_only=True)
class TranslationConfig(ModeConfig):
    generator: GeneratorConfig
    discriminator: ImageDiscriminatorConfig

    #: Norm of both networks unless --norm says otherwise (the generator only).
    norm: ClassVar[str] = "instance"
    #: Whether the generator uses dropout (pix2pix's noise source).
    dropout: ClassVar[bool] = False
    #: Whether the mode trains on pairs of images cropped alike.
    paired: ClassVar[bool] = False
    flags: ClassVar[tuple[str, ...]] = (*NETWORK_FLAGS, "size", "load_size")

    @classmethod
    def default_generator(cls, size: int) -> str:
        return "resnet_9blocks"

    @classmethod
    def disc_channels(cls, own: dict[str, Any]) -> int:
        """Channels the discriminator takes, given the mode's own flags."""
        return 3

    @classmethod
    def networks(
        cls,
        size: int,
        own: dict[str, Any],
        *,
        generator: str | None = None,
        ngf: int | None = None,
        norm: str | None = None,
        upsample: str | None = None,
        residual: bool = False,
        color_mlp: int = 0,
        detail: int = 0,
        smooth: int = 0,
        discriminator: str = "basic",
        ndf: int | None = None,
    ) -> tuple[GeneratorConfig, ImageDiscriminatorConfig]:
        """The networks the flags ask for; flags not given keep the
        preset's value (ngf 64, upsample transpose) or the mode's (norm)."""
        arch = generator or cls.default_generator(size)
        try:
            base = generator_preset(arch)
            changes: dict[str, Any] = {"norm": norm or cls.norm, "dropout": cls.dropout}
            if ngf is not None:
                changes["ngf"] = ngf
            if upsample is not None:
                changes["upsample"] = upsample
            if residual:
                changes["residual"] = True
            if color_mlp:
                if not isinstance(base, ResnetGeneratorConfig) or not 0 < color_mlp <= 256:
                    raise ValueError("--color-mlp is a width of 1 to 256, for ResNet generators")
                changes["color_mlp"] = color_mlp
                changes["residual"] = True  # the colour path adds to the input
            if detail:
                if not isinstance(base, ResnetGeneratorConfig) or not 0 < detail <= 64:
                    raise ValueError("--detail is a width of 1 to 64, for ResNet generators")
                changes["detail"] = detail
                changes["residual"] = True  # the detail path adds to the input
            if smooth:
                if not isinstance(base, ResnetGeneratorConfig) or not 0 < smooth <= 64:
                    raise ValueError("--smooth is a width of 1 to 64, for ResNet generators")
                changes["smooth"] = smooth
                changes["residual"] = True  # the smoothing path adds to the input
            disc = {"in_channels": cls.disc_channels(own), "norm": cls.norm}
            if ndf is not None:
                disc["ndf"] = ndf
            return (
                dataclasses.replace(base, **changes),
                discriminator_preset(discriminator, **disc),
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @classmethod
    def configure(cls, size: int, options: dict[str, Any]) -> TranslationConfig:
        """The mode's config from the flags in ``options`` (taken out of it)."""
        own = {name: options.pop(name) for name in cls.own_flags() if name in options}
        flags = {name: options.pop(name) for name in NETWORK_FLAGS if name in options}
        gen, disc = cls.networks(size, own, **flags)
        return cls(generator=gen, discriminator=disc, **own)

    @property
    def size_multiple(self) -> int:
        return self.generator.size_multiple

    def check(self, config: TrainConfig) -> None:
        g, d = self.generator, self.discriminator
        if not isinstance(g, GeneratorConfig) or not isinstance(d, ImageDiscriminatorConfig):
            raise UsageError(f"{self.name} needs an image-to-image generator and a PatchGAN")
        super().check(config)
        multiple = self.size_multiple
        if config.size < 16:
            raise UsageError(f"--size {config.size} must be at least 16")
        if config.size % multiple:
            raise UsageError(
                f"--size {config.size} must be a multiple of {multiple} "
                f"for a {self.generator.preset} generator"
            )
        _check_patches(d, config.size)
        if config.load_size < config.size:
            raise UsageError(f"--load-size {config.load_size} is smaller than --size {config.size}")
        if config.aligned != (config.data_b is None):
            raise UsageError("give either two folders (A/ B/) or one --aligned folder")
        if config.domains[0] == config.domains[1]:
            raise UsageError(
                f"the two domain names must differ (both are {config.domains[0]!r}): they "
                "name the models, one for each direction"
            )
        expected = self.disc_channels(dataclasses.asdict(self))
        if self.discriminator.in_channels != expected:
            raise UsageError(
                f"the discriminator takes {self.discriminator.in_channels} channels, "
                f"this mode gives it {expected}"
            )

    def cpu_note(self, config: TrainConfig) -> str | None:
        if self.generator.ngf < 64 or config.size < 256:
            return None
        return (
            "the published defaults (ngf 64, 256-pixel crops) take several seconds per step "
            "on a CPU; the shipped model was trained with --gen resnet_6blocks --ngf 32 "
            "--upsample resize --size 128 --load-size 512 (see weights/photo2painting.md)"
        )

    def layout(self, config: TrainConfig) -> Layout:
        # Samples show the networks at their training scale: squares of up
        # to 256 pixels cut from the middle of images scaled as for training.
        multiple = self.size_multiple
        side = max(config.size, min(config.load_size, SAMPLE_SIDE) // multiple * multiple)
        return Paired(side) if self.paired else Unpaired(side)

    def describe(self, config: TrainConfig, device: str) -> str:
        a, b = config.domains
        g = self.generator
        length = (
            f"for {format_duration(config.time_budget)}"
            if config.time_budget
            else f"{config.steps} steps"
        )
        return (
            f"{self.name} {a} -> {b}: {g.preset} (ngf {g.ngf}), {config.size} px crops, "
            f"{length}, {config.gan_loss}, {config.precision} on {device}"
        )

    def summary(self, config: TrainConfig) -> dict[str, str]:
        g = self.generator
        folders = f"  →  {config.data_b}" if config.data_b else " (aligned)"
        return {
            "data": config.data_a + folders,
            "generator": f"{g.preset}, ngf {g.ngf}, norm {g.norm}",
            "discriminator": self.discriminator.preset,
            "size": f"{config.size} px crops of images scaled to {config.load_size} px",
        }


def _check_patches(disc: ImageDiscriminatorConfig, size: int) -> None:
    """A PatchGAN halves the crop n_layers times, then takes two 4x4
    convolutions: at least 3 pixels must be left for the second one to see
    a patch (and for its norm to see more than one)."""
    if isinstance(disc, PatchDiscriminatorConfig) and size >> max(disc.n_layers, 1) < 3:
        least = 3 << max(disc.n_layers, 1)
        raise UsageError(
            f"a {disc.preset} discriminator needs crops of at least {least} px, not --size {size}"
        )


def unet_for(size: int) -> str:
    """The U-Net whose depth takes a ``size`` crop down to 1 pixel (unet_256
    at 256, unet_128 at 128), at least unet_32 and at most unet_256."""
    depth = min(8, max(5, int(math.log2(size))))
    return f"unet_{2**depth}"
