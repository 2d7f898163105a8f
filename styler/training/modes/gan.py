"""Generation from noise: a GAN (fully connected or DCGAN), class-conditional
as an ACGAN when the data has one subfolder per class.

One step, as in the classic examples: the discriminator on a batch of real
images (target 1) and a batch of fakes from fresh noise (target 0), then the
generator on the same noise, trying to get its fakes scored as real. When
conditional, the discriminator also classifies both batches (real images by
their label, fakes by the class they were asked for) and the generator is
also trained to make its fakes classified as that class. Reported per step:
both losses, the discriminator's accuracy on real and fake, and the share
of fakes that fooled it (the generator's accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from styler.errors import UsageError
from styler.netconfig import (
    DcganDiscriminatorConfig,
    DcganGeneratorConfig,
    MlpDiscriminatorConfig,
    MlpGeneratorConfig,
    NoiseDiscriminatorConfig,
    NoiseGeneratorConfig,
)
from styler.training.config import ModeConfig, TrainConfig, given
from styler.training.data import ClassScan, Images, Layout
from styler.training.distributed import DistInfo
from styler.training.images import looks_grey, typical_side
from styler.training.losses import gradient_penalty
from styler.training.seeds import seeded
from styler.training.trainer import ExportSpec, Trainer, set_requires_grad

#: Images per sample grid of an unconditional generator (8 x 8), and per
#: class row of a conditional one.
GRID = 8
PER_CLASS = 10


class _ScoreOnly(torch.nn.Module):
    """The discriminator's real/fake score alone (for the gradient penalty)."""

    def __init__(self, disc: torch.nn.Module) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.disc(x)[0]


@dataclass(frozen=True, kw_only=True)
class GanConfig(ModeConfig):
    """A generator from noise and its discriminator; the class names (the
    subfolders of the data folder, in label order) when class-conditional."""

    name: ClassVar[str] = "gan"
    title: ClassVar[str] = "GAN (one folder)"
    #: Batch norm needs batches; a mirrored digit or letter is not one.
    overrides: ClassVar[dict[str, Any]] = {"batch_size": 64, "flip": False, "gan_loss": "vanilla"}
    epochs: ClassVar[float] = 100
    decay: ClassVar[float] = 0.0
    flags: ClassVar[tuple[str, ...]] = ("arch", "latent_dim", "ngf", "ndf", "size", "channels")

    generator: NoiseGeneratorConfig
    discriminator: NoiseDiscriminatorConfig
    #: Class names in label order; empty for an unconditional generator.
    classes: tuple[str, ...] = ()

    @classmethod
    def configure(
        cls,
        found: ClassScan,
        *,
        arch: str = "mlp",
        latent_dim: int | None = None,
        ngf: int | None = None,
        ndf: int | None = None,
        size: int | None = None,
        channels: int | None = None,
    ) -> GanConfig:
        """Networks for the images ``found``: ``size`` and ``channels``
        default to the data's (the typical shorter side, a power of two for
        dcgan, at most 64; grey when every image is)."""
        if arch not in ("mlp", "dcgan"):
            raise UsageError(f"unknown --arch {arch!r}: expected mlp or dcgan")
        if size is None:
            side = min(64, typical_side(found.files))
            size = 2 ** max(3, int(math.log2(side))) if arch == "dcgan" else max(4, side)
        if arch == "dcgan" and (size < 8 or size & (size - 1)):
            raise UsageError(f"--size {size}: a dcgan needs a power of two, at least 8")
        if channels is None:
            channels = 1 if looks_grey(found.files) else 3
        k = len(found.classes)
        latent = given(latent_dim=latent_dim)
        gen: NoiseGeneratorConfig
        disc: NoiseDiscriminatorConfig
        if arch == "mlp":
            gen = MlpGeneratorConfig(out_channels=channels, size=size, num_classes=k, **latent)
            disc = MlpDiscriminatorConfig(in_channels=channels, size=size, num_classes=k)
        else:
            gen = DcganGeneratorConfig(
                out_channels=channels, size=size, num_classes=k, **latent, **given(ngf=ngf)
            )
            disc = DcganDiscriminatorConfig(
                in_channels=channels, size=size, num_classes=k, **given(ndf=ndf)
            )
        return cls(generator=gen, discriminator=disc, classes=found.classes)

    def check(self, config: TrainConfig) -> None:
        g, d = self.generator, self.discriminator
        if not isinstance(g, NoiseGeneratorConfig) or not isinstance(d, NoiseDiscriminatorConfig):
            raise UsageError("gan mode needs a generator from noise (mlp or dcgan)")
        super().check(config)
        if not (config.size == g.size == d.size):
            raise UsageError(f"generator, discriminator and --size disagree ({config.size})")
        if g.num_classes != len(self.classes) or d.num_classes != len(self.classes):
            raise UsageError("the networks' class counts do not match the class folders")
        if config.data_b is not None or config.aligned:
            raise UsageError("gan mode trains on one folder")
        if config.batch_size < 2:
            raise UsageError("gan mode needs --batch-size of at least 2 (batch norm)")

    def layout(self, config: TrainConfig) -> Layout:
        return Images(self.classes, grey=self.generator.out_channels == 1)

    def describe(self, config: TrainConfig, device: str) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unconditional"
        g = self.generator
        return (
            f"gan {config.domains[0]} ({kind}): {g.preset} from {g.latent_dim}-d noise, "
            f"{config.size} px, {config.steps} steps of {config.batch_size}, "
            f"{config.gan_loss}, {config.precision} on {device}"
        )

    def summary(self, config: TrainConfig) -> dict[str, str]:
        g = self.generator
        return {
            "data": config.data_a + (f" ({len(self.classes)} classes)" if self.classes else ""),
            "generator": f"{g.preset}, latent {g.latent_dim}",
            "discriminator": self.discriminator.preset,
            "size": f"{config.size} px, {g.out_channels} channels",
        }


class Gan(Trainer):
    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        super().__init__(config, device, dist)
        assert isinstance(config.mode, GanConfig)
        self.options = m = config.mode
        self.G = self.build("G", m.generator)
        self.D = self.build("D", m.discriminator)
        self.optimise("G", ["G"])
        self.optimise("D", ["D"])
        self.num_classes = len(m.classes)
        self.latent = m.generator.latent_dim
        self.loss_names = ("D", "G", "D_acc", "G_acc") + (("cls_acc",) if self.num_classes else ())

    def noise(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(n, self.latent, generator=gen).to(self.device)
        if not self.num_classes:
            return z, None
        return z, torch.randint(0, self.num_classes, (n,), generator=gen).to(self.device)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        c = self.config
        real = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device) if self.num_classes else None
        gen = seeded(c.seed, "noise", step, self.dist.rank)
        z, asked = self.noise(real.shape[0], gen)

        augment = seeded(c.seed, "augment", step, self.dist.rank)
        set_requires_grad([self.D], True)
        with self.autocast():
            fake = self.G(z, asked)
        seen_real, seen_fake = self.augment([real, fake.detach().to(real.dtype)], augment)
        with self.autocast():
            real_score, real_cls = self.D(seen_real)
            fake_score, fake_cls = self.D(seen_fake)
        loss_d = self.gan.d_loss(real_score, fake_score)
        if self.num_classes:
            loss_d = loss_d + 0.5 * (
                F.cross_entropy(real_cls.float(), labels) + F.cross_entropy(fake_cls.float(), asked)
            )
        total = loss_d
        if self.gan.needs_penalty:
            total = total + c.lambda_gp * gradient_penalty(_ScoreOnly(self.D), real, fake, gen)
        self.update("D", total)

        set_requires_grad([self.D], False)
        (seen,) = self.augment([fake], augment)
        with self.autocast():
            score, cls = self.D(seen)
        loss_g = self.gan.g_loss(score)
        if self.num_classes:
            loss_g = loss_g + F.cross_entropy(cls.float(), asked)
        self.update("G", loss_g)

        stats = [
            loss_d.detach(),
            loss_g.detach(),
            0.5 * ((real_score > 0).float().mean() + (fake_score < 0).float().mean()),
            (score > 0).float().mean(),
        ]
        if self.num_classes:
            stats.append((real_cls.argmax(1) == labels).float().mean())
        values = torch.stack([s.float() for s in stats]).tolist()
        return dict(zip(self.loss_names, values, strict=True))

    # -- samples and export -------------------------------------------------------

    def fixed_noise(self) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """The same noise at every sample grid: 8 x 8, or one row per class."""
        gen = seeded(self.config.seed, "sample-noise")
        if not self.num_classes:
            return torch.randn(GRID * GRID, self.latent, generator=gen), None, [""]
        z = torch.randn(self.num_classes * PER_CLASS, self.latent, generator=gen)
        labels = torch.arange(self.num_classes).repeat_interleave(PER_CLASS)
        return z, labels, list(self.options.classes)

    def column_names(self) -> tuple[str, ...]:
        return ("",) * (PER_CLASS if self.num_classes else GRID)

    @torch.no_grad()
    def sample_rows(self, inputs: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
        z, labels, names = self.fixed_noise()
        images = self.G(z.to(self.device), None if labels is None else labels.to(self.device))
        images = images.float().cpu()
        if labels is None:  # 8 rows of 8
            grid = images.view(GRID, GRID, *images.shape[1:])
            return [("", [grid[:, col] for col in range(GRID)])]
        rows = images.view(self.num_classes, PER_CLASS, *images.shape[1:])
        return [
            (name, [rows[i, col : col + 1] for col in range(PER_CLASS)])
            for i, name in enumerate(names)
        ]

    def exports(self) -> list[ExportSpec]:
        name = f"{self.config.domains[0]}_generator"
        return [
            ExportSpec(
                name,
                self.G,
                self.options.generator,
                "generate",
                self.config.domains,
                task="generate",
                classes=self.options.classes,
            )
        ]
