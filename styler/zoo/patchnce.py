"""The patch sampler of contrastive translation (CUT, Park et al. 2020): from
each chosen encoder feature map, the same random patch locations in the
source and in the translation, each patch's feature passed through a small
MLP (two linear layers, ReLU between) and normalised to unit length.

The loss (``styler.training.losses.patch_nce``) asks every patch of the
translation to be closer to the patch at the same place in the source than
to any other patch there: content is kept patch by patch, while colour and
texture are left to the discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Features per patch after the MLP (the paper's netF_nc).
PATCH_DIM = 256


class PatchSampler(nn.Module):
    """One MLP per feature map (``channels`` of each)."""

    def __init__(self, channels: Sequence[int], dim: int = PATCH_DIM) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels
        )

    def forward(
        self,
        features: Sequence[torch.Tensor],
        patches: int,
        locations: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """For each map (N x C x H x W): N x P x dim unit vectors of the
        patches at ``locations`` (drawn at random, the same for every image
        of the batch, when None), and the locations used."""
        out, used = [], []
        for i, (mlp, f) in enumerate(zip(self.mlps, features, strict=True)):
            h, w = f.shape[-2:]
            flat = f.flatten(2).transpose(1, 2)  # N x HW x C
            if locations is None:
                where = torch.randperm(h * w, generator=generator)[: min(patches, h * w)]
            else:
                where = locations[i]
            picked = flat[:, where.to(f.device)]
            out.append(F.normalize(mlp(picked.float()), dim=-1))
            used.append(where)
        return out, used
