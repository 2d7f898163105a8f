"""CUT and FastCUT (Park et al. 2020): one-sided translation A -> B with one
generator and one discriminator, content kept by a contrastive loss on
patches of the generator's own encoder features (PatchNCE) instead of a
second generator and a cycle.

One step (the paper's order): the discriminator on real B and the current
fake B, then the generator (and the patch MLP) on the GAN loss and PatchNCE
between the input's and the translation's features. CUT adds PatchNCE on
G(B) against B (an identity term); FastCUT drops it, weighs PatchNCE 10 and
flips the input at random while comparing its features unflipped, so that
the generator becomes flip-equivariant.

Options that compose with either (each off unless asked for, see
``CutConfig``): DiffAugment of everything the discriminators see, a
projected discriminator on frozen EfficientNet-Lite0 features (alone as
``--disc projected``, or beside the PatchGAN), a content and a style loss in
Lite0's feature space, the colour loss, and an exponential moving average of
the generator's weights, which samples, scores and the export then use.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from styler.errors import UsageError
from styler.netconfig import (
    ProjectedDiscriminatorConfig,
    ResnetGeneratorConfig,
    discriminator_preset,
)
from styler.training.config import TrainConfig
from styler.training.distributed import DistInfo
from styler.training.ema import Ema
from styler.training.judges import grey, grey_weights, tones
from styler.training.losses import (
    color_loss,
    content_loss,
    hue_loss,
    luma_loss,
    palette_loss,
    patch_nce,
    style_loss,
)
from styler.training.modes.translation import TranslationConfig
from styler.training.seeds import seeded
from styler.training.trainer import ExportSpec, Trainer, set_requires_grad, submodule_params
from styler.zoo.init import init_weights
from styler.zoo.patchnce import PatchSampler
from styler.zoo.resnet import nce_channels, nce_layers

#: Lite0 stages (of four) the content loss compares: 1/8 and 1/16 of the
#: side, where shapes live more than textures.
CONTENT_STAGES = (1, 2)


@dataclass(frozen=True, kw_only=True)
class CutConfig(TranslationConfig):
    """CUT's networks and weights (the paper's defaults), and the options
    that compose with it."""

    name: ClassVar[str] = "cut"
    title: ClassVar[str] = "CUT"

    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    #: PatchNCE also on G(B) against B (CUT; FastCUT leaves it out).
    nce_idt: bool = True
    nce_patches: int = 256
    nce_temperature: float = 0.07
    #: Flip the input at random and ask for the same features (FastCUT).
    flip_equivariance: bool = False
    #: A projected discriminator (frozen Lite0 features) beside the PatchGAN.
    projected: bool = False
    #: A colour discriminator beside them: a small PatchGAN without
    #: normalisation on images averaged over 4 x 4 pixels, so that it judges
    #: colours and tones, not texture (the other discriminators are fooled
    #: by texture first, and their instance norms hide an overall cast).
    color_disc: bool = False
    #: What the colour discriminator is: ``patch`` (the small PatchGAN above)
    #: or ``projected`` (a projected discriminator, frozen Lite0 features, on
    #: the 4 x 4 averages scaled back up: what judges what a colour belongs
    #: to; bench/colour_probe.py).
    color_judge: str = "patch"
    #: A texture discriminator beside them: a PatchGAN on grey images (each
    #: step a random mix of the three channels, the same for real and fake:
    #: White-box cartoonization's texture representation), so that it judges
    #: strokes, edges and flat areas, not colours.
    texture_disc: bool = False
    #: Content loss: Lite0 features of the translation against the input's.
    lambda_content: float = 0.0
    #: Style loss: Lite0 feature statistics against the style images'.
    lambda_style: float = 0.0
    #: Colour loss: the translation's chroma against the input's (see CycleGAN's).
    lambda_color: float = 0.0
    #: The colour loss compares mean chroma over a grid of this many cells a
    #: side (8: regional hues; 32 on a 128-pixel crop: 4-pixel cells, so that
    #: a hue cannot be swapped for a mix of others with the same mean).
    color_cells: int = 8
    #: Hue loss: the translation's hues against the input's, on the colour
    #: loss's grid; saturation and brightness stay free (see losses.hue_loss).
    lambda_hue: float = 0.0
    #: The share of each region's saturation the hue loss holds (0.5: a style
    #: may mute a region to half its saturation for free; 1: only saturate).
    hue_keep: float = 0.5
    #: Luma loss: the translation's mean brightness against the input's, on
    #: the colour loss's grid; texture and colour stay free (see losses.luma_loss).
    lambda_luma: float = 0.0
    #: Palette loss: the translation's colours against the style images' as
    #: two sets (sliced Wasserstein, see losses.palette_loss): saturation,
    #: warmth and contrast, wherever they fall.
    lambda_palette: float = 0.0
    #: Decay of the generator's moving average (0: none; 0.999 is typical).
    ema: float = 0.0
    #: The learning rate of the generator's smoothing and detail paths, as a
    #: multiple of the run's: they start at zero, and Adam moves a weight by
    #: about the learning rate a step, so at 2e-4 a smoothing takes thousands
    #: of steps to show. (The colour path keeps the run's: at ten times it
    #: drifted into a yellow-green cast; docs/BENCHMARKS.md.)
    lr_paths: float = 1.0

    @property
    def needs_lite0(self) -> bool:
        return self.lambda_content > 0 or self.lambda_style > 0

    def check(self, config: TrainConfig) -> None:
        # (first: config.json's own fields, which no flag sets; the general
        # check of numbers would name a flag train has not, and a bound of 0)
        if not 0 <= self.hue_keep <= 1:
            raise UsageError(f"hue_keep must be in [0, 1], got {self.hue_keep}")
        if not 0 < self.lr_paths <= 100:
            raise UsageError(f"lr_paths must be in (0, 100], got {self.lr_paths}")
        super().check(config)
        if not isinstance(self.generator, ResnetGeneratorConfig):
            raise UsageError(f"{self.name} needs a ResNet generator (its PatchNCE layers)")
        if self.nce_patches < 1 or not self.nce_temperature > 0:
            raise UsageError("--nce-patches must be >= 1 and --nce-temperature > 0")
        weights = (self.lambda_gan, self.lambda_nce, self.lambda_content, self.lambda_style)
        weights += (self.lambda_color, self.lambda_hue, self.lambda_luma, self.lambda_palette)
        if any(not w >= 0 for w in weights):
            raise UsageError("loss weights must be >= 0")
        if not 1 <= self.color_cells <= config.size:
            raise UsageError(f"--color-cells must be from 1 to --size ({config.size})")
        gen = self.generator
        if self.lr_paths != 1 and not (gen.detail or gen.smooth):
            raise UsageError(
                "lr_paths speeds up a generator's detail or smoothing path "
                "(--detail, --smooth), and this one has none"
            )
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema must be in [0, 1), got {self.ema}")
        if self.color_judge not in ("patch", "projected"):
            raise UsageError(f"color_judge must be patch or projected, got {self.color_judge!r}")
        if self.color_disc and config.size < 64:
            raise UsageError(f"--color-disc needs --size 64 or more, got {config.size}")
        if self.texture_disc and config.size < 24:  # a basic PatchGAN: 3 px left after 3 halvings
            raise UsageError(f"--texture-disc needs --size 24 or more, got {config.size}")
        if self.projected and isinstance(self.discriminator, ProjectedDiscriminatorConfig):
            raise UsageError("--projected adds a projected discriminator beside a PatchGAN")


@dataclass(frozen=True, kw_only=True)
class FastCutConfig(CutConfig):
    """FastCUT: no identity PatchNCE, PatchNCE weighed 10, flip-equivariance,
    150 + 50 epochs (the paper's settings)."""

    name: ClassVar[str] = "fastcut"
    title: ClassVar[str] = "FastCUT"
    epochs: ClassVar[float] = 200
    decay: ClassVar[float] = 0.25

    lambda_nce: float = 10.0
    nce_idt: bool = False
    flip_equivariance: bool = True


class Cut(Trainer):
    loss_names = (
        *("D", "D_proj", "D_color", "D_texture", "G", "G_proj", "G_color", "G_texture"),
        *("nce", "nce_idt", "content", "style", "color", "hue", "luma", "palette"),
    )

    def __init__(self, config: TrainConfig, device: str, dist: DistInfo) -> None:
        super().__init__(config, device, dist)
        assert isinstance(config.mode, CutConfig)
        self.options = m = config.mode
        assert isinstance(m.generator, ResnetGeneratorConfig)
        self.layers = nce_layers(m.generator)
        self.G = self.build("G", m.generator)
        self.D = self.build("D", m.discriminator)
        discs = ["D"]
        if m.projected:
            proj = ProjectedDiscriminatorConfig(in_channels=m.discriminator.in_channels)
            self.D_proj: nn.Module | None = self.build("D_proj", proj)
            discs.append("D_proj")
        else:
            self.D_proj = None
        ndf = getattr(m.discriminator, "ndf", 64)  # of the side judges
        self.D_color: nn.Module | None = None
        if m.color_disc:
            # No normalisation: instance norm would remove the overall colour it is to judge.
            judge: Any = discriminator_preset("n_layers_2", in_channels=3, ndf=ndf, norm="none")
            if m.color_judge == "projected":
                judge = ProjectedDiscriminatorConfig(in_channels=3)
            self.D_color = self.build("D_color", judge)
            discs.append("D_color")
        self.D_texture: nn.Module | None = None
        if m.texture_disc:
            grey_judge = discriminator_preset("basic", in_channels=1, ndf=ndf)
            self.D_texture = self.build("D_texture", grey_judge)
            discs.append("D_texture")
        torch.manual_seed(config.seed + len(self.nets))
        sampler = init_weights(PatchSampler(nce_channels(m.generator)), "normal", 0.02)
        self.F = sampler.to(self.device)
        self.nets["F"] = self.F
        paths = submodule_params(self.G, ("detail", "smooth"))
        self.optimise("G", ["G", "F"], paths, m.lr_paths)
        self.optimise("D", discs)
        self.discs = [self.nets[n] for n in discs]
        self.ema = Ema(self.G, m.ema) if m.ema > 0 else None
        if self.ema is not None:
            self.nets["G_ema"] = self.ema.net
        self._lite0: list[nn.Module] = []  # frozen, not a network of the run
        if m.needs_lite0:
            from styler.zoo.lite0 import Lite0Features

            self._lite0.append(Lite0Features().to(self.device))

    # -- one step -------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        c = self.options
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)
        gen = seeded(self.config.seed, "cut", step, self.dist.rank)
        flipped = c.flip_equivariance and bool(torch.rand((), generator=gen) < 0.5)
        source = torch.cat([real_A, real_B]) if c.nce_idt else real_A
        shown = source.flip(3) if flipped else source
        n = len(real_A)

        with self.autocast():
            # PatchNCE compares the output before its smoothing path: a contrastive
            # loss rewards distinct patches and would fight any smoothing
            # (bench/gradient_probe.py); what smoothing keeps is the judges' to say.
            out, content, feats = self.G.forward_with_features(shown, self.layers)
        fake_B = out[:n]

        # Discriminators, on real B and the fake just made.
        set_requires_grad(self.discs, True)
        loss: dict[str, torch.Tensor] = {}
        real_seen, fake_seen = self.augment([real_B, fake_B.detach()], gen)
        with self.autocast():
            loss["D"] = self.gan.d_loss(self.D(real_seen), self.D(fake_seen))
            if self.D_proj is not None:
                loss["D_proj"] = self.gan.d_loss(self.D_proj(real_seen), self.D_proj(fake_seen))
            if self.D_color is not None:
                up = c.color_judge == "projected"
                real = self.D_color(tones(real_seen, up))
                fake = self.D_color(tones(fake_seen, up))
                loss["D_color"] = self.gan.d_loss(real, fake)
            if self.D_texture is not None:
                w = grey_weights(gen)
                real = self.D_texture(grey(real_seen, w))
                fake = self.D_texture(grey(fake_seen, w))
                loss["D_texture"] = self.gan.d_loss(real, fake)
        self.update("D", functools.reduce(operator.add, loss.values()))

        # Generator and patch MLP, discriminators frozen.
        set_requires_grad(self.discs, False)
        g_loss = self._generator_losses(real_A, real_B, (out, content), feats, flipped, gen)
        self.update("G", functools.reduce(operator.add, g_loss.values()))
        if self.ema is not None:
            self.ema.update(self.G, step)
        loss.update(g_loss)
        names = [name for name in self.loss_names if name in loss]
        values = torch.stack([loss[name].detach().float() for name in names]).tolist()
        return dict(zip(names, values, strict=True))

    def _generator_losses(
        self,
        real_A: torch.Tensor,
        real_B: torch.Tensor,
        outputs: tuple[torch.Tensor, torch.Tensor],
        feats: list[torch.Tensor],
        flipped: bool,
        gen: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """The generator's losses on ``outputs``: the translations (of A, then
        of B when CUT's identity term is on), and the same before the
        smoothing path (what PatchNCE compares)."""
        c = self.options
        n = len(real_A)
        out, content = outputs
        fake_B = out[:n]
        loss: dict[str, torch.Tensor] = {}
        (fake_seen,) = self.augment([fake_B], gen)
        with self.autocast():
            loss["G"] = self.gan.g_loss(self.D(fake_seen)) * c.lambda_gan
            if self.D_proj is not None:
                loss["G_proj"] = self.gan.g_loss(self.D_proj(fake_seen)) * c.lambda_gan
            if self.D_color is not None:
                seen = tones(fake_seen, c.color_judge == "projected")
                loss["G_color"] = self.gan.g_loss(self.D_color(seen)) * c.lambda_gan
            if self.D_texture is not None:
                seen = grey(fake_seen, grey_weights(gen))
                loss["G_texture"] = self.gan.g_loss(self.D_texture(seen)) * c.lambda_gan
            if c.lambda_nce > 0:
                if flipped:  # keys from the input as it is, queries flipped back
                    with torch.no_grad():
                        src = torch.cat([real_A, real_B]) if c.nce_idt else real_A
                        feats = self.G.features(src, self.layers)
                queries = self.G.features(content, self.layers)
                if flipped:
                    queries = [q.flip(3) for q in queries]
                nce = self._nce(queries, feats, gen)
                loss["nce"] = nce[0] * c.lambda_nce
                if c.nce_idt:
                    loss["nce_idt"] = nce[1] * c.lambda_nce
            loss.update(self._feature_losses(real_A, real_B, fake_B))
        if c.lambda_color > 0:
            loss["color"] = color_loss(fake_B, real_A, c.color_cells) * c.lambda_color
        if c.lambda_hue > 0:
            hue = hue_loss(fake_B, real_A, c.color_cells, c.hue_keep)
            loss["hue"] = hue * c.lambda_hue
        if c.lambda_luma > 0:
            loss["luma"] = luma_loss(fake_B, real_A, c.color_cells) * c.lambda_luma
        if c.lambda_palette > 0:
            loss["palette"] = palette_loss(fake_B, real_B, gen) * c.lambda_palette
        return loss

    def _nce(
        self, queries: list[torch.Tensor], keys: list[torch.Tensor], gen: torch.Generator
    ) -> list[torch.Tensor]:
        """PatchNCE per image group (translations, then identities when on),
        averaged over the layers."""
        c = self.options
        k_patches, where = self.F([k.detach() for k in keys], c.nce_patches, generator=gen)
        q_patches, _ = self.F(queries, c.nce_patches, where)
        groups = 2 if c.nce_idt else 1
        out = []
        for g in range(groups):
            per_layer = [
                patch_nce(q.chunk(groups)[g], k.chunk(groups)[g], c.nce_temperature)
                for q, k in zip(q_patches, k_patches, strict=True)
            ]
            out.append(torch.stack(per_layer).mean())
        return out

    def _feature_losses(
        self, real_A: torch.Tensor, real_B: torch.Tensor, fake_B: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        c = self.options
        if not self._lite0:
            return {}
        lite0 = self._lite0[0]
        fake = lite0(fake_B)
        loss = {}
        if c.lambda_content > 0:
            with torch.no_grad():
                source = lite0(real_A)
            picked = list(CONTENT_STAGES)
            loss["content"] = c.lambda_content * content_loss(
                [fake[i] for i in picked], [source[i] for i in picked]
            )
        if c.lambda_style > 0:
            with torch.no_grad():
                style = lite0(real_B)
            loss["style"] = style_loss(fake, style) * c.lambda_style
        return loss

    # -- samples and export -------------------------------------------------------

    @property
    def generator(self) -> nn.Module:
        """The generator samples, scores and the export use (the average when on)."""
        return self.ema.net if self.ema is not None else self.G

    def column_names(self) -> tuple[str, ...]:
        return ("input", "translated")

    def sample_rows(self, inputs: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
        a, b = self.config.domains
        name = "G_ema" if self.ema is not None else "G"
        fake_B = self.run_generator(name, inputs["A"])
        return [(f"{a} -> {b}", [inputs["A"], fake_B.cpu()])]

    def exports(self) -> list[ExportSpec]:
        a, b = self.config.domains
        return [ExportSpec(f"{a}_to_{b}", self.generator, self.options.generator, "AtoB", (a, b))]
