"""pix2pix (Isola et al. 2017): a U-Net generator and a conditional PatchGAN
that judges (input, output) pairs; GAN + L1 losses.

One step, in the reference order: update the discriminator on (A, real B)
and (A, fake B), then the generator against the updated discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from styler.errors import UsageError
from styler.netconfig import ProjectedDiscriminatorConfig
from styler.training.config import TrainConfig
from styler.training.distributed import DistInfo
from styler.training.losses import gradient_penalty, l1
from styler.training.modes.translation import TranslationConfig, unet_for
from styler.training.seeds import seeded
from styler.training.trainer import ExportSpec, Trainer, judges_alone, pair, set_requires_grad


@dataclass(frozen=True, kw_only=True)
class Pix2PixConfig(TranslationConfig):
    """pix2pix's networks and L1 weight (the reference's defaults)."""

    name: ClassVar[str] = "pix2pix"
    title: ClassVar[str] = "pix2pix"
    overrides: ClassVar[dict[str, Any]] = {"gan_loss": "vanilla"}
    norm: ClassVar[str] = "batch"
    dropout: ClassVar[bool] = True
    paired: ClassVar[bool] = True

    lambda_l1: float = 100.0

    @classmethod
    def default_generator(cls, size: int) -> str:
        return unet_for(size)

    @classmethod
    def disc_channels(cls, own: dict[str, Any]) -> int:
        return 6  # (input, output) pairs

    def check(self, config: TrainConfig) -> None:
        if isinstance(self.discriminator, ProjectedDiscriminatorConfig):
            raise UsageError(
                "--disc projected is not for pix2pix: its discriminator judges (input, "
                "output) pairs of 6 channels, and the projected one sees RGB images only"
            )
        super().check(config)


class Pix2Pix(Trainer):
    loss_names = ("D", "G_GAN", "G_L1")

    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        super().__init__(config, device, dist)
        assert isinstance(config.mode, Pix2PixConfig)
        self.options = m = config.mode
        self.G = self.build("G", m.generator)
        self.D = self.build("D", m.discriminator)  # sees A and B stacked
        self.optimise("G", ["G"])
        self.optimise("D", ["D"])
        self.batch_disc = judges_alone(m.discriminator)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        c = self.config
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)
        with self.autocast():
            fake_B = self.G(real_A)

        # Discriminator on real and fake pairs (input and output augmented alike).
        set_requires_grad([self.D], True)
        augment = seeded(c.seed, "augment", step, self.dist.rank)
        real_AB = torch.cat([real_A, real_B], 1)
        fake_AB = torch.cat([real_A, fake_B.detach().to(real_A.dtype)], 1)
        real_AB, fake_AB = self.augment([real_AB, fake_AB], augment)
        with self.autocast():
            loss_D = self.gan.d_loss(*pair(self.D, real_AB, fake_AB, self.batch_disc))
        d_total = loss_D
        if self.gan.needs_penalty:
            gen = seeded(c.seed, "gp", step, self.dist.rank)
            d_total = d_total + c.lambda_gp * gradient_penalty(self.D, real_AB, fake_AB, gen)
        self.update("D", d_total)

        # Generator against the updated discriminator.
        set_requires_grad([self.D], False)
        (seen,) = self.augment([torch.cat([real_A, fake_B.to(real_A.dtype)], 1)], augment)
        with self.autocast():
            pred = self.D(seen)
        loss_gan = self.gan.g_loss(pred)
        loss_l1 = l1(fake_B, real_B) * self.options.lambda_l1
        self.update("G", loss_gan + loss_l1)
        values = torch.stack([x.detach().float() for x in (loss_D, loss_gan, loss_l1)]).tolist()
        return dict(zip(self.loss_names, values, strict=True))

    def column_names(self) -> tuple[str, ...]:
        return ("input", "output", "target")

    def sample_rows(self, inputs: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
        a, b = self.config.domains
        fake = self.run_generator("G", inputs["A"]).cpu()
        return [(f"{a} -> {b}", [inputs["A"], fake, inputs["B"]])]

    def exports(self) -> list[ExportSpec]:
        a, b = self.config.domains
        return [ExportSpec(f"{a}_to_{b}", self.G, self.options.generator, "AtoB", (a, b))]
