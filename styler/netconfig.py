"""Typed network configurations: what architecture a set of weights holds.

These dataclasses are plain Python (no torch) so that both halves of styler
share them: the model zoo builds networks from them, the exporter writes them
into the ONNX metadata, and the runtime reads them back. A config travels with
its weights everywhere (checkpoints, ONNX files, run folders).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from styler.errors import BadModelError

Norm = Literal["instance", "batch", "none"]
Upsample = Literal["transpose", "resize"]
Padding = Literal["reflect", "replicate", "zero"]
NORMS: tuple[str, ...] = ("instance", "batch", "none")


@dataclass(frozen=True)
class ResnetGeneratorConfig:
    """ResNet generator (Johnson et al.), as in CycleGAN: c7s1-ngf, two
    stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings."""

    kind: Literal["resnet"] = "resnet"
    in_channels: int = 3
    out_channels: int = 3
    ngf: int = 64
    n_blocks: int = 9
    norm: Norm = "instance"
    dropout: bool = False
    padding: Padding = "reflect"
    upsample: Upsample = "transpose"
    #: Add the input to the output (clipped to [-1, 1]): the network learns a
    #: change to the image and starts as the identity. Instance norm removes
    #: each feature map's mean, so without this a generator cannot pass the
    #: input's overall colour through and tends to paint every image in one
    #: cast; the reference network has no such path (False). Its last layer
    #: starts at zero, so that the network starts as the identity.
    residual: bool = False
    #: Hidden width of a per-pixel colour path (1x1 convolutions on the
    #: input, no normalisation) whose change is added to a residual
    #: generator's output; 0: none. Instance norm hides each image's own
    #: colours from the convolutional path, so a colour grade (saturation,
    #: channel gains, curves) is hard for it and easy for this path.
    color_mlp: int = 0
    #: Hidden width of a full-resolution detail path (three 5x5 convolutions
    #: on the input, no normalisation) whose change is added to a residual
    #: generator's output; 0: none. The convolutional path works through a
    #: bottleneck at a quarter of the size: added to the input, it cannot
    #: smooth away a photo's fine detail (what brushwork does); this path sees
    #: every pixel of a 13-pixel neighbourhood and can.
    detail: int = 0
    #: Hidden width of a smoothing path (styler.zoo.smooth: the input
    #: blurred by three fixed Gaussians and two Kuwahara filters, and
    #: per-pixel weights towards each learned by a small network) whose
    #: change is added to a residual
    #: generator's output; 0: none. It learns where a style is flat and
    #: where it keeps edges, which the bottleneck cannot.
    smooth: int = 0

    @property
    def size_multiple(self) -> int:
        return 4  # two stride-2 downsamplings

    @property
    def preset(self) -> str:
        return f"resnet_{self.n_blocks}blocks"


@dataclass(frozen=True)
class UnetGeneratorConfig:
    """U-Net generator, as in pix2pix: ``num_downs`` stride-2 downsamplings
    with skip connections (7 for unet_128, 8 for unet_256)."""

    kind: Literal["unet"] = "unet"
    in_channels: int = 3
    out_channels: int = 3
    ngf: int = 64
    num_downs: int = 8
    norm: Norm = "batch"
    dropout: bool = False
    upsample: Upsample = "transpose"
    #: Add the input to the output (clipped to [-1, 1]), the last layer
    #: starting at zero: the network starts as the identity (see the ResNet's).
    residual: bool = False

    @property
    def size_multiple(self) -> int:
        return 2**self.num_downs

    @property
    def preset(self) -> str:
        return f"unet_{2**self.num_downs}"


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    """PatchGAN discriminator; ``n_layers=3`` is the 70x70 "basic" one."""

    kind: Literal["patch"] = "patch"
    in_channels: int = 3
    ndf: int = 64
    n_layers: int = 3
    norm: Norm = "instance"

    @property
    def preset(self) -> str:
        return "basic" if self.n_layers == 3 else f"n_layers_{self.n_layers}"


@dataclass(frozen=True)
class PixelDiscriminatorConfig:
    """1x1 PatchGAN: classifies each pixel as real or fake."""

    kind: Literal["pixel"] = "pixel"
    in_channels: int = 3
    ndf: int = 64
    norm: Norm = "instance"

    @property
    def preset(self) -> str:
        return "pixel"


@dataclass(frozen=True)
class MlpGeneratorConfig:
    """Fully connected generator from noise (the classic GAN on digits): latent
    -> 256 -> 512 -> 1024, each LeakyReLU 0.2 and batch norm (Keras momentum
    0.8), -> C x size x size, tanh. ``num_classes`` > 0 makes it
    class-conditional (a class embedding multiplies the noise, as in ACGAN)."""

    kind: Literal["mlp"] = "mlp"
    latent_dim: int = 100
    out_channels: int = 1
    size: int = 28
    hidden: tuple[int, ...] = (256, 512, 1024)
    num_classes: int = 0

    @property
    def preset(self) -> str:
        return "mlp"


@dataclass(frozen=True)
class DcganGeneratorConfig:
    """DCGAN generator (Radford et al. 2016): noise -> 4x4 -> transposed
    convolutions with batch norm and ReLU doubling the size up to ``size`` (a
    power of two, at least 8), tanh. ``num_classes`` > 0: class-conditional."""

    kind: Literal["dcgan"] = "dcgan"
    latent_dim: int = 100
    out_channels: int = 3
    size: int = 64
    ngf: int = 64
    num_classes: int = 0

    @property
    def preset(self) -> str:
        return "dcgan"


@dataclass(frozen=True)
class MlpDiscriminatorConfig:
    """Fully connected discriminator: C x size x size -> 512 -> 256 (LeakyReLU
    0.2) -> real/fake score, plus a class head when ``num_classes`` > 0."""

    kind: Literal["mlp_d"] = "mlp_d"
    in_channels: int = 1
    size: int = 28
    hidden: tuple[int, ...] = (512, 256)
    num_classes: int = 0

    @property
    def preset(self) -> str:
        return "mlp"


@dataclass(frozen=True)
class DcganDiscriminatorConfig:
    """DCGAN discriminator: strided convolutions with LeakyReLU 0.2 (batch norm
    after the first) halving the size down to 4x4 -> real/fake score, plus a
    class head when ``num_classes`` > 0 (ACGAN)."""

    kind: Literal["dcgan_d"] = "dcgan_d"
    in_channels: int = 3
    size: int = 64
    ndf: int = 64
    num_classes: int = 0

    @property
    def preset(self) -> str:
        return "dcgan"


GeneratorConfig = ResnetGeneratorConfig | UnetGeneratorConfig
NoiseGeneratorConfig = MlpGeneratorConfig | DcganGeneratorConfig


#: Discriminators of images (style transfer) and of images from noise (GANs).
@dataclass(frozen=True)
class ProjectedDiscriminatorConfig:
    """Projected GAN's discriminator (Sauer et al. 2021): images seen through a
    frozen ImageNet EfficientNet-Lite0 at four scales (1/4 to 1/32), each
    feature map mixed across channels and scales by fixed random 1x1
    projections (``ndf`` channels), and judged by a small trainable head of
    its own. Needs the ``metrics`` extra (the Lite0 weights)."""

    kind: Literal["projected"] = "projected"
    in_channels: int = 3
    ndf: int = 64
    #: Feature maps judged, from the finest (1/4 of the input's side).
    scales: int = 4

    @property
    def preset(self) -> str:
        return "projected"


ImageDiscriminatorConfig = (
    PatchDiscriminatorConfig | PixelDiscriminatorConfig | ProjectedDiscriminatorConfig
)
NoiseDiscriminatorConfig = MlpDiscriminatorConfig | DcganDiscriminatorConfig
DiscriminatorConfig = ImageDiscriminatorConfig | NoiseDiscriminatorConfig
NetConfig = GeneratorConfig | NoiseGeneratorConfig | DiscriminatorConfig

#: kind -> config class: the only place a class is found from a string.
CONFIG_TYPES: dict[str, type] = {
    "resnet": ResnetGeneratorConfig,
    "unet": UnetGeneratorConfig,
    "patch": PatchDiscriminatorConfig,
    "pixel": PixelDiscriminatorConfig,
    "projected": ProjectedDiscriminatorConfig,
    "mlp": MlpGeneratorConfig,
    "dcgan": DcganGeneratorConfig,
    "mlp_d": MlpDiscriminatorConfig,
    "dcgan_d": DcganDiscriminatorConfig,
}


def generator_preset(name: str, **overrides: Any) -> GeneratorConfig:
    """Config of a named generator: resnet_9blocks, resnet_6blocks, resnet_Nblocks,
    unet_128, unet_256 (any other field can be overridden)."""
    if name.startswith("resnet_") and name.endswith("blocks"):
        n = name[len("resnet_") : -len("blocks")]
        if n.isdigit() and int(n) > 0:
            return ResnetGeneratorConfig(n_blocks=int(n), **overrides)
    if name.startswith("unet_"):
        size = name[len("unet_") :]
        if size.isdigit() and int(size) >= 32 and int(size) & (int(size) - 1) == 0:
            return UnetGeneratorConfig(num_downs=int(size).bit_length() - 1, **overrides)
    raise ValueError(
        f"unknown generator {name!r}: expected resnet_9blocks, resnet_6blocks, "
        "resnet_<N>blocks, unet_128, unet_256 or unet_<power of two, at least 32>"
    )


def discriminator_preset(name: str, **overrides: Any) -> ImageDiscriminatorConfig:
    """Config of a named discriminator: basic (70x70 PatchGAN), n_layers_N, pixel."""
    if name == "basic":
        return PatchDiscriminatorConfig(n_layers=3, **overrides)
    if name.startswith("n_layers_") and name[len("n_layers_") :].isdigit():
        return PatchDiscriminatorConfig(n_layers=int(name[len("n_layers_") :]), **overrides)
    if name == "pixel":
        return PixelDiscriminatorConfig(**overrides)
    if name == "projected":
        return ProjectedDiscriminatorConfig(
            **{k: v for k, v in overrides.items() if k in ("in_channels", "ndf")}
        )
    raise ValueError(
        f"unknown discriminator {name!r}: expected basic, n_layers_<N>, pixel or projected"
    )


def config_to_dict(config: NetConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> NetConfig:
    """Parse a config written by :func:`config_to_dict`, checking every field."""
    if not isinstance(data, dict):
        raise BadModelError(f"network config must be an object, got {type(data).__name__}")
    kind = data.get("kind")
    cls = CONFIG_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadModelError(f"unknown network kind {kind!r} (known: {', '.join(CONFIG_TYPES)})")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BadModelError(f"unknown fields for a {kind} network: {', '.join(unknown)}")
    defaults = cls()
    for name, value in data.items():
        expected = type(getattr(defaults, name))
        if expected is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise BadModelError(f"{kind} config field {name!r} must be an integer, got {value!r}")
        if expected is bool and not isinstance(value, bool):
            raise BadModelError(f"{kind} config field {name!r} must be true/false, got {value!r}")
        if expected is str and not isinstance(value, str):
            raise BadModelError(f"{kind} config field {name!r} must be a string, got {value!r}")
        if expected is tuple:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            ):
                raise BadModelError(f"{kind} config field {name!r} must be a list of sizes")
            data = {**data, name: tuple(value)}
    config = cls(**data)
    check_values(config)
    return config


#: Upper bounds of a network config's sizes: far beyond any real network, low
#: enough that a forged file cannot make styler allocate without end.
LIMITS = {
    "in_channels": 16,
    "out_channels": 16,
    "ngf": 4096,
    "ndf": 4096,
    "n_blocks": 256,
    "n_layers": 16,
    "latent_dim": 65536,
    "size": 4096,
    "num_classes": 100_000,
    # the widths of a ResNet's added paths (train takes at most 256, 64, 64)
    "color_mlp": 4096,
    "detail": 4096,
    "smooth": 4096,
}
MAX_HIDDEN = 65536


def check_values(config: NetConfig) -> None:
    """Refuse a config with unknown names or sizes out of bounds (:data:`LIMITS`)."""
    if getattr(config, "norm", "none") not in NORMS:
        raise BadModelError(f"unknown norm {config.norm!r}")
    for name in ("in_channels", "out_channels", "ngf", "ndf"):
        value = getattr(config, name, 1)
        if value < 1:
            raise BadModelError(f"config field {name!r} must be positive, got {value}")
    for name in ("color_mlp", "detail", "smooth"):  # 0: none
        value = getattr(config, name, 0)
        if value < 0:
            raise BadModelError(f"config field {name!r} must be 0 (none) or a width, got {value}")
    for name, limit in LIMITS.items():
        value = getattr(config, name, 0)
        if value > limit:
            raise BadModelError(f"config field {name!r} is {value}, more than {limit}")
    if isinstance(config, ProjectedDiscriminatorConfig) and not 1 <= config.scales <= 4:
        raise BadModelError(f"a projected discriminator judges 1 to 4 scales, not {config.scales}")
    if any(h > MAX_HIDDEN for h in getattr(config, "hidden", ())):
        raise BadModelError(f"a hidden layer wider than {MAX_HIDDEN}")
    if isinstance(config, UnetGeneratorConfig) and not 5 <= config.num_downs <= 12:
        raise BadModelError(f"unet num_downs must be in 5..12, got {config.num_downs}")
    if isinstance(config, ResnetGeneratorConfig):
        if config.n_blocks < 0:
            raise BadModelError(f"resnet n_blocks must be >= 0, got {config.n_blocks}")
        if config.padding not in ("reflect", "replicate", "zero"):
            raise BadModelError(f"unknown padding {config.padding!r}")

    if getattr(config, "residual", False) and config.in_channels != config.out_channels:
        raise BadModelError("a residual generator needs as many channels out as in")
    paths = [name for name in ("color_mlp", "detail", "smooth") if getattr(config, name, 0)]
    if paths and config.in_channels != config.out_channels:  # (residual or not)
        raise BadModelError(
            f"config field {paths[0]!r}: a ResNet's colour, detail and smoothing paths add "
            "to its input, so it needs as many channels out as in"
        )
    if getattr(config, "upsample", "transpose") not in ("transpose", "resize"):
        raise BadModelError(f"unknown upsample {config.upsample!r}")
    for name in ("latent_dim", "size"):
        if getattr(config, name, 1) < 1:
            raise BadModelError(f"config field {name!r} must be positive")
    if getattr(config, "num_classes", 0) < 0:
        raise BadModelError("num_classes must be >= 0")
    dcgan = isinstance(config, (DcganGeneratorConfig, DcganDiscriminatorConfig))
    if dcgan and (config.size < 8 or config.size & (config.size - 1)):
        raise BadModelError(f"a DCGAN size must be a power of two >= 8, got {config.size}")


__all__ = [
    "CONFIG_TYPES",
    "DcganDiscriminatorConfig",
    "DcganGeneratorConfig",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "ImageDiscriminatorConfig",
    "MlpDiscriminatorConfig",
    "MlpGeneratorConfig",
    "NetConfig",
    "NoiseDiscriminatorConfig",
    "NoiseGeneratorConfig",
    "PatchDiscriminatorConfig",
    "PixelDiscriminatorConfig",
    "ProjectedDiscriminatorConfig",
    "ResnetGeneratorConfig",
    "UnetGeneratorConfig",
    "check_values",
    "config_from_dict",
    "config_to_dict",
    "discriminator_preset",
    "generator_preset",
]
