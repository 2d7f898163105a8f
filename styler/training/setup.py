"""From folders and flags to a :class:`TrainConfig`: the pairing decision,
the architecture defaults of each mode, held-out images, run length."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from styler.errors import UsageError
from styler.log import logger
from styler.netconfig import (
    DiscriminatorConfig,
    GeneratorConfig,
    discriminator_preset,
    generator_preset,
)
from styler.training.config import TrainConfig, disc_channels
from styler.training.data import (
    ClassScan,
    Scan,
    domain_name,
    looks_grey,
    scan,
    scan_classes,
    typical_side,
)

#: Epochs of the reference schedule: constant for half, linear decay for half.
DEFAULT_EPOCHS = 200


def default_generator(mode: str, size: int) -> str:
    """resnet_9blocks for CycleGAN; for pix2pix the U-Net whose depth takes
    the crop down to 1 pixel (unet_256 at 256, unet_128 at 128), at most 8."""
    if mode == "cyclegan":
        return "resnet_9blocks"
    depth = min(8, max(5, int(math.log2(size))))
    return f"unet_{2**depth}"


def make_generator(
    mode: str,
    size: int,
    arch: str | None,
    ngf: int,
    norm: str | None,
    upsample: str = "transpose",
    dropout: bool | None = None,
    residual: bool = False,
) -> GeneratorConfig:
    arch = arch or default_generator(mode, size)
    try:
        base = generator_preset(arch)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    changes: dict[str, Any] = {"ngf": ngf, "upsample": upsample}
    if residual:
        if not hasattr(base, "residual"):
            raise UsageError(f"--residual is for ResNet generators, not {arch}")
        changes["residual"] = True
    if norm is not None:
        changes["norm"] = norm
    elif mode == "cyclegan":
        changes["norm"] = "instance"
    else:
        changes["norm"] = "batch"
    # pix2pix's U-Net uses dropout as its noise source; CycleGAN's ResNet does not.
    changes["dropout"] = (mode == "pix2pix") if dropout is None else dropout
    return dataclasses.replace(base, **changes)


def make_discriminator(
    mode: str, arch: str, ndf: int, norm: str | None, disc_input: str = "rgb"
) -> DiscriminatorConfig:
    in_channels = disc_channels(mode, disc_input)
    norm = norm or ("batch" if mode == "pix2pix" else "instance")
    try:
        return discriminator_preset(arch, in_channels=in_channels, ndf=ndf, norm=norm)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_config(
    data_a: str | Path,
    data_b: str | Path | None = None,
    *,
    aligned: bool = False,
    mode: str = "auto",
    generator: str | None = None,
    ngf: int = 64,
    norm: str | None = None,
    upsample: str = "transpose",
    residual: bool = False,
    discriminator: str = "basic",
    ndf: int = 64,
    size: int | None = None,
    load_size: int | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    decay: float | None = None,
    precision: str = "fp32",
    **options: Any,
) -> tuple[TrainConfig, Scan | ClassScan]:
    """Look at the folders and build the run's config: two folders train
    CycleGAN or pix2pix, one ``aligned`` folder pix2pix, one plain folder a
    GAN (see :func:`make_gan_config`). ``options`` are any other
    :class:`TrainConfig` fields (lr, batch_size, gan_loss, seed, ...)."""
    if data_b is None and not aligned:
        if mode not in ("auto", "gan"):
            raise UsageError(f"--mode {mode} needs two folders (or --aligned for pix2pix)")
        return make_gan_config(
            data_a, size=size, steps=steps, epochs=epochs, precision=precision, **options
        )
    if mode not in ("auto", "cyclegan", "pix2pix"):
        raise UsageError(f"unknown mode {mode!r}: expected auto, cyclegan or pix2pix")
    if steps is not None and epochs is not None:
        raise UsageError("give --steps or --epochs, not both")
    decay = 0.5 if decay is None else decay
    if not 0 <= decay <= 1:
        raise UsageError("--decay is the share of the run with a decaying learning rate, 0..1")
    size = size or 256
    seed = int(options.get("seed", 0))
    data_a = Path(data_a).resolve()
    data_b = None if data_b is None else Path(data_b).resolve()
    found = scan(data_a, data_b, mode=mode, seed=seed)
    chosen = found.mode
    if found.unpaired_left:
        logger.warning(
            "%d files of %s have no partner in %s and are not used",
            found.unpaired_left,
            data_a,
            data_b,
        )
    if options.get("gan_loss", "auto") == "auto":
        options["gan_loss"] = "vanilla" if chosen == "pix2pix" else "lsgan"
    gen = make_generator(chosen, size, generator, ngf, norm, upsample, residual=residual)
    disc = make_discriminator(chosen, discriminator, ndf, None, options.get("disc_input", "rgb"))
    batch = int(options.get("batch_size", 1))
    n_train = max(
        len(found.sources_a) - len(found.holdout_a), len(found.sources_b) - len(found.holdout_b), 1
    )
    epoch_steps = max(1, math.ceil(n_train / batch))
    if steps is None:
        steps = max(1, round((epochs if epochs is not None else DEFAULT_EPOCHS) * epoch_steps))
    if data_b is None:
        domains = ("A", "B")
    else:
        domains = (domain_name(data_a), domain_name(data_b))
        if domains[0] == domains[1]:
            domains = (f"{domains[0]}_A", f"{domains[1]}_B")
    config = TrainConfig(
        mode=chosen,  # type: ignore[arg-type]
        data_a=str(data_a),
        data_b=None if data_b is None else str(data_b),
        aligned=data_b is None,
        generator=gen,
        discriminator=disc,
        domains=domains,
        size=size,
        load_size=load_size or max(size, round(size * 286 / 256)),
        steps=steps,
        decay_steps=round(steps * decay),
        precision=precision,  # type: ignore[arg-type]
        holdout_a=tuple(found.holdout_a),
        holdout_b=tuple(found.holdout_b),
        **options,
    )
    return config, found


def default_run_dir(config: TrainConfig, root: Path = Path("runs")) -> Path:
    """runs/A_to_B, or runs/A_to_B-2, -3, ... when taken."""
    base = f"{config.domains[0]}_to_{config.domains[1]}"
    candidate = root / base
    n = 2
    while candidate.exists():
        candidate = root / f"{base}-{n}"
        n += 1
    return candidate


def make_gan_config(
    folder: str | Path,
    *,
    arch: str = "mlp",
    latent_dim: int = 100,
    ngf: int = 64,
    ndf: int = 64,
    size: int | None = None,
    channels: int | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    decay: float = 0.0,
    precision: str = "fp32",
    **options: Any,
) -> tuple[TrainConfig, ClassScan]:
    """A generator from noise for the images in ``folder`` (class-conditional
    when it holds one subfolder per class). ``size`` and ``channels`` default
    to the data's: the typical shorter side (a power of two for dcgan, at most
    64) and greyscale when every image is."""
    from styler.netconfig import (
        DcganDiscriminatorConfig,
        DcganGeneratorConfig,
        MlpDiscriminatorConfig,
        MlpGeneratorConfig,
    )

    if arch not in ("mlp", "dcgan"):
        raise UsageError(f"unknown --arch {arch!r}: expected mlp or dcgan")
    if steps is not None and epochs is not None:
        raise UsageError("give --steps or --epochs, not both")
    root = Path(folder).resolve()
    found = scan_classes(root)
    if size is None:
        side = min(64, typical_side(found.files))
        size = 2 ** max(3, int(math.log2(side))) if arch == "dcgan" else max(4, side)
    if arch == "dcgan" and (size < 8 or size & (size - 1)):
        raise UsageError(f"--size {size}: a dcgan needs a power of two, at least 8")
    if channels is None:
        channels = 1 if looks_grey(found.files) else 3
    k = len(found.classes)
    gen: Any
    if arch == "mlp":
        gen = MlpGeneratorConfig(
            latent_dim=latent_dim, out_channels=channels, size=size, num_classes=k
        )
        disc: Any = MlpDiscriminatorConfig(in_channels=channels, size=size, num_classes=k)
    else:
        gen = DcganGeneratorConfig(
            latent_dim=latent_dim, out_channels=channels, size=size, ngf=ngf, num_classes=k
        )
        disc = DcganDiscriminatorConfig(in_channels=channels, size=size, ndf=ndf, num_classes=k)
    options.setdefault("batch_size", 64)
    options.setdefault("flip", False)  # a mirrored digit or letter is not one
    if options.get("gan_loss", "auto") == "auto":
        options["gan_loss"] = "vanilla"
    for unused in (
        "pool_size",
        "lambda_cycle",
        "lambda_identity",
        "lambda_l1",
        "lambda_color",
        "disc_input",
    ):
        options.pop(unused, None)
    epoch_steps = max(1, math.ceil(len(found.files) / int(options["batch_size"])))
    if steps is None:
        steps = max(1, round((epochs if epochs is not None else 100) * epoch_steps))
    config = TrainConfig(
        mode="gan",
        data_a=str(root),
        data_b=None,
        generator=gen,
        discriminator=disc,
        domains=(domain_name(root), "generated"),
        size=size,
        load_size=size,
        steps=steps,
        decay_steps=round(steps * decay),
        precision=precision,  # type: ignore[arg-type]
        classes=found.classes,
        **options,
    )
    return config, found
