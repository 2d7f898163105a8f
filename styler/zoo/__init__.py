"""The model zoo: every network styler trains, built from a typed config.

``build(config)`` is the one entry point; ``BUILDERS`` maps each config class
to its network class (an explicit registry, no lookup of classes by string).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from styler.netconfig import (
    DcganDiscriminatorConfig,
    DcganGeneratorConfig,
    MlpDiscriminatorConfig,
    MlpGeneratorConfig,
    NetConfig,
    PatchDiscriminatorConfig,
    PixelDiscriminatorConfig,
    ProjectedDiscriminatorConfig,
    ResnetGeneratorConfig,
    UnetGeneratorConfig,
    discriminator_preset,
    generator_preset,
)
from styler.zoo.discriminators import PatchDiscriminator, PixelDiscriminator
from styler.zoo.init import INIT_TYPES, InitType, init_weights
from styler.zoo.noise import DcganDiscriminator, DcganGenerator, MlpDiscriminator, MlpGenerator
from styler.zoo.projected import ProjectedDiscriminator
from styler.zoo.resnet import ResnetGenerator
from styler.zoo.unet import UnetGenerator

BUILDERS: dict[type, Callable[..., nn.Module]] = {
    ResnetGeneratorConfig: ResnetGenerator,
    UnetGeneratorConfig: UnetGenerator,
    PatchDiscriminatorConfig: PatchDiscriminator,
    PixelDiscriminatorConfig: PixelDiscriminator,
    ProjectedDiscriminatorConfig: ProjectedDiscriminator,
    MlpGeneratorConfig: MlpGenerator,
    DcganGeneratorConfig: DcganGenerator,
    MlpDiscriminatorConfig: MlpDiscriminator,
    DcganDiscriminatorConfig: DcganDiscriminator,
}


def build(config: NetConfig, init: InitType | None = "normal", gain: float = 0.02) -> nn.Module:
    """Build the network ``config`` describes, initialised with ``init``
    (``None`` keeps PyTorch's default initialisation)."""
    try:
        cls = BUILDERS[type(config)]
    except KeyError:
        raise TypeError(f"no network for config type {type(config).__name__}") from None
    net = cls(config)
    if init is not None:
        init_weights(net, init, gain)
        start = getattr(net, "start_as_identity", None)
        if start is not None:
            start()
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = [
    "BUILDERS",
    "INIT_TYPES",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UnetGenerator",
    "build",
    "count_parameters",
    "discriminator_preset",
    "generator_preset",
    "init_weights",
]
