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

import torch
import torch.nn.functional as F

from styler.training.config import TrainConfig
from styler.training.data import seeded
from styler.training.distributed import DistInfo
from styler.training.losses import gradient_penalty
from styler.training.task import ExportSpec, Task, set_requires_grad

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


class Gan(Task):
    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        super().__init__(config, device, dist)
        self.G = self.build("G", config.generator)
        self.D = self.build("D", config.discriminator)
        self.optimise("G", ["G"])
        self.optimise("D", ["D"])
        self.num_classes = len(config.classes)
        self.latent = config.generator.latent_dim  # type: ignore[union-attr]
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

        set_requires_grad([self.D], True)
        with self.autocast():  # type: ignore[attr-defined]
            fake = self.G(z, asked)
            real_score, real_cls = self.D(real)
            fake_score, fake_cls = self.D(fake.detach())
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
        with self.autocast():  # type: ignore[attr-defined]
            score, cls = self.D(fake)
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
        return z, labels, list(self.config.classes)

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
                self.config.generator,
                "generate",  # type: ignore[arg-type]
                self.config.domains,
                task="generate",
                classes=self.config.classes,
            )
        ]
