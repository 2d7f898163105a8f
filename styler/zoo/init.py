"""Weight initialisation schemes (normal, xavier, kaiming, orthogonal)."""

from __future__ import annotations

from typing import Literal

from torch import nn

InitType = Literal["normal", "xavier", "kaiming", "orthogonal"]
INIT_TYPES: tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")


def init_weights(net: nn.Module, init_type: InitType = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv and linear weights with ``init_type`` (scaled by ``gain``
    where the scheme has one), biases with zero, and batch-norm scales with
    N(1, gain), as pix2pix and CycleGAN do."""
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init {init_type!r}: expected one of {', '.join(INIT_TYPES)}")

    def visit(m: nn.Module) -> None:
        weight = getattr(m, "weight", None)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and weight is not None:
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and weight is not None:
            nn.init.normal_(weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(visit)
    return net
