"""CycleGAN (Zhu et al. 2017): two generators, two PatchGAN discriminators,
adversarial + cycle-consistency + identity losses, and image pools.

One step: update both generators (discriminators frozen), then both
discriminators on real images and pooled fakes. Same-network calls are
batched, which is exact for instance-norm networks: G_A runs once on
[real A, real B] (giving fake B and identity A) and G_B once on
[real B, real A] plus, for small images, fake B (giving the reconstruction
of A in the same call).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from styler.errors import UsageError
from styler.training import limits
from styler.training.config import TrainConfig
from styler.training.distributed import DistInfo
from styler.training.losses import color_loss, gradient_penalty, l1
from styler.training.modes.translation import TranslationConfig
from styler.training.pool import ImagePool
from styler.training.seeds import seeded
from styler.training.trainer import (
    ExportSpec,
    Trainer,
    batched,
    judges_alone,
    pair,
    set_requires_grad,
)
from styler.zoo.layers import shared_weight_casts

DiscInput = Literal["rgb", "luma"]

#: Largest input batch (elements) for which the generator step batches a
#: generator's third image (the reconstruction) with its other two: three
#: generator calls instead of four. Measured on whole bf16 CycleGAN steps
#: (resnet_9blocks, 2 cores, alternating A/B): three calls were 1.9 points
#: faster at 128x128 (5.8% against 3.9% over the previous code) and 4.7
#: points slower at 256x256 (-2.3% against +2.4%).
BATCH_THREE_MAX = 3 * 160 * 160


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """Brightness (BT.601 luma) of RGB images, as one channel."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights[None, :, None, None]).sum(1, keepdim=True)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True, kw_only=True)
class CycleGanConfig(TranslationConfig):
    """CycleGAN's networks and loss weights (the reference's defaults)."""

    name: ClassVar[str] = "cyclegan"
    title: ClassVar[str] = "CycleGAN"

    lambda_cycle: float = 10.0
    #: Identity loss weight, relative to ``lambda_cycle`` (as in CycleGAN).
    lambda_identity: float = 0.5
    #: Colour loss: L1 between the chroma (Cb, Cr) of input and output
    #: averaged over (size/8)-pixel cells, which keeps each region's hue
    #: while leaving brightness and texture free (0, as the reference, is off).
    lambda_color: float = 0.0
    #: What the discriminators see: ``rgb`` (the reference), or ``luma``
    #: (brightness only), which leaves colour to the generator's other
    #: losses so that a style's palette does not replace the photo's.
    disc_input: DiscInput = "rgb"
    #: Past fakes each discriminator sees (the image pool); 0 disables it.
    pool_size: int = 50

    @classmethod
    def disc_channels(cls, own: dict[str, Any]) -> int:
        return 1 if own.get("disc_input", cls.disc_input) == "luma" else 3

    def check(self, config: TrainConfig) -> None:
        if self.disc_input not in ("rgb", "luma"):
            raise UsageError(f"unknown --disc-input {self.disc_input!r}: expected rgb or luma")
        super().check(config)
        limits.check_count("--pool-size", self.pool_size, 0, limits.MAX_POOL)
        if self.pool_size * config.size**2 > limits.MAX_POOL_PIXELS:
            raise UsageError(
                f"--pool-size {self.pool_size} of {config.size} px fakes is more than "
                f"{limits.MAX_POOL_PIXELS:,} pixels a pool: lower it"
            )


class CycleGan(Trainer):
    loss_names = (
        "D_A",
        "G_A",
        "cycle_A",
        "idt_A",
        "color_A",
        "D_B",
        "G_B",
        "cycle_B",
        "idt_B",
        "color_B",
    )

    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        super().__init__(config, device, dist)
        assert isinstance(config.mode, CycleGanConfig)
        self.options = m = config.mode
        self.G_A = self.build("G_A", m.generator)  # A -> B
        self.G_B = self.build("G_B", m.generator)  # B -> A
        self.D_A = self.build("D_A", m.discriminator)  # judges B images
        self.D_B = self.build("D_B", m.discriminator)  # judges A images
        self.optimise("G", ["G_A", "G_B"])
        self.optimise("D", ["D_A", "D_B"])
        self.pool_A = ImagePool(m.pool_size)  # fake A images, for D_B
        self.pool_B = ImagePool(m.pool_size)  # fake B images, for D_A
        # Batching two images through one call changes nothing only when the
        # networks normalise each image by itself.
        self.batch_calls = m.generator.norm != "batch"
        self.batch_disc = judges_alone(m.discriminator)
        self.see = to_luma if m.disc_input == "luma" else _same

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        c = self.options
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)
        identity = c.lambda_identity > 0
        together = self.batch_calls
        augment = seeded(self.config.seed, "augment", step, self.dist.rank)
        discs = (self.D_A, self.D_B)

        # Generators, discriminators frozen.
        set_requires_grad(discs, False)
        # G_A runs twice (translation, reconstruction): its weights are cast once.
        with self.autocast(), shared_weight_casts((self.G_A, self.G_B)):
            out_A = batched(self.G_A, [real_A, real_B] if identity else [real_A], together)
            fake_B = out_A[0]
            inputs_B = [real_B, real_A] if identity else [real_B]
            if together and real_A.numel() <= BATCH_THREE_MAX:
                # Small images: the reconstruction joins G_B's batch (three
                # generator calls in all, the fewest the dependencies allow).
                out_B = batched(self.G_B, [*inputs_B, fake_B], True)
            else:
                out_B = [*batched(self.G_B, inputs_B, together), self.G_B(fake_B)]
            fake_A, rec_A = out_B[0], out_B[-1]
            rec_B = self.G_A(fake_A)
            seen_B, seen_A = self.augment([self.see(fake_B), self.see(fake_A)], augment)
            pred_A, pred_B = self.D_A(seen_B), self.D_B(seen_A)
        loss = {
            "G_A": self.gan.g_loss(pred_A),
            "G_B": self.gan.g_loss(pred_B),
            "cycle_A": l1(rec_A, real_A) * c.lambda_cycle,
            "cycle_B": l1(rec_B, real_B) * c.lambda_cycle,
        }
        if identity:  # G_A(real B) and G_B(real A), second in their batches
            loss["idt_A"] = l1(out_A[1], real_B) * c.lambda_cycle * c.lambda_identity
            loss["idt_B"] = l1(out_B[1], real_A) * c.lambda_cycle * c.lambda_identity
        if c.lambda_color > 0:
            loss["color_A"] = color_loss(fake_B, real_A) * c.lambda_color
            loss["color_B"] = color_loss(fake_A, real_B) * c.lambda_color
        self.update("G", functools.reduce(operator.add, loss.values()))

        # Discriminators, on real images and pooled fakes.
        set_requires_grad(discs, True)
        gen = seeded(self.config.seed, "pool", step, self.dist.rank)
        pooled_B = self.pool_B.query(fake_B.detach().float(), gen)
        pooled_A = self.pool_A.query(fake_A.detach().float(), gen)
        real_B, pooled_B = self.augment([self.see(real_B), self.see(pooled_B)], augment)
        real_A, pooled_A = self.augment([self.see(real_A), self.see(pooled_A)], augment)
        with self.autocast():
            loss["D_A"] = self.gan.d_loss(*pair(self.D_A, real_B, pooled_B, self.batch_disc))
            loss["D_B"] = self.gan.d_loss(*pair(self.D_B, real_A, pooled_A, self.batch_disc))
        d_total = loss["D_A"] + loss["D_B"]
        if self.gan.needs_penalty:
            d_total = d_total + self.config.lambda_gp * (
                gradient_penalty(self.D_A, real_B, pooled_B, gen)
                + gradient_penalty(self.D_B, real_A, pooled_A, gen)
            )
        self.update("D", d_total)
        names = [n for n in self.loss_names if n in loss]
        values = torch.stack([loss[n].detach().float() for n in names]).tolist()
        return dict(zip(names, values, strict=True))

    # -- samples and export -------------------------------------------------------

    def column_names(self) -> tuple[str, ...]:
        return ("input", "translated", "reconstructed")

    def sample_rows(self, inputs: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
        a, b = self.config.domains
        fake_B = self.run_generator("G_A", inputs["A"])
        rec_A = self.run_generator("G_B", fake_B)
        fake_A = self.run_generator("G_B", inputs["B"])
        rec_B = self.run_generator("G_A", fake_A)
        return [
            (f"{a} -> {b}", [inputs["A"], fake_B.cpu(), rec_A.cpu()]),
            (f"{b} -> {a}", [inputs["B"], fake_A.cpu(), rec_B.cpu()]),
        ]

    def exports(self) -> list[ExportSpec]:
        a, b = self.config.domains
        g = self.options.generator
        return [
            ExportSpec(f"{a}_to_{b}", self.G_A, g, "AtoB", (a, b)),
            ExportSpec(f"{b}_to_{a}", self.G_B, g, "BtoA", (a, b)),
        ]

    def extra_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, pool in (("pool_A", self.pool_A), ("pool_B", self.pool_B)):
            images = pool.state()
            if images is not None:
                out[name] = images
        return out

    def extra_numel(self) -> int:
        g, size = self.options.generator, self.config.size
        return self.pool_A.size * (g.in_channels + g.out_channels) * size * size

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        size = self.config.size
        shape_A = (self.options.generator.in_channels, size, size)  # G_B makes A images
        shape_B = (self.options.generator.out_channels, size, size)
        self.pool_A.load(tensors.get("pool_A"), self.device, shape_A)
        self.pool_B.load(tensors.get("pool_B"), self.device, shape_B)
