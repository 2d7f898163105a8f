"""U-Net generator (Ronneberger et al. 2015), the pix2pix default.

Built recursively from the innermost block outwards, with the same module
layout and parameter names as pytorch-CycleGAN-and-pix2pix's ``UnetGenerator``.
"""

from __future__ import annotations

import torch
from torch import nn

from styler.netconfig import Norm, UnetGeneratorConfig
from styler.zoo.layers import ResizeConv, conv_bias, norm_layer
from styler.zoo.resnet import residual_output


def _up(c_in: int, c_out: int, bias: bool, resize: bool) -> nn.Module:
    if resize:
        return ResizeConv(c_in, c_out, bias, pad="zero")
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=bias)


class UnetSkipConnectionBlock(nn.Module):
    """down - submodule - up, with the block's input concatenated to its output
    (except for the outermost block)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        norm: Norm,
        resize: bool,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            assert submodule is not None
            upconv = _up(inner_nc * 2, outer_nc, True, resize)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = _up(inner_nc, outer_nc, bias, resize)
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(norm, outer_nc)]
        else:
            assert submodule is not None
            upconv = _up(inner_nc * 2, outer_nc, bias, resize)
            layers = [
                downrelu,
                downconv,
                norm_layer(norm, inner_nc),
                submodule,
                uprelu,
                upconv,
                norm_layer(norm, outer_nc),
            ]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, config: UnetGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ngf, norm = config.ngf, config.norm
        resize = config.upsample == "resize"
        kw = {"norm": norm, "resize": resize}
        if config.num_downs < 5:
            raise ValueError(f"a U-Net needs num_downs >= 5, got {config.num_downs}")
        # The innermost blocks (all but the outer four) have ngf*8 channels.
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(config.num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, dropout=config.dropout, **kw
            )
        for outer, inner in ((4, 8), (2, 4), (1, 2)):
            block = UnetSkipConnectionBlock(ngf * outer, ngf * inner, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(
            config.out_channels,
            ngf,
            input_nc=config.in_channels,
            submodule=block,
            outermost=True,
            **kw,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.model(x))

    def finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return residual_output(self.config.residual, x, y)

    def start_as_identity(self) -> None:
        """A residual U-Net's last (up) convolution starts at zero: the
        network starts as the identity (called after initialisation)."""
        if self.config.residual:
            up = self.model.model[-2]  # a transposed convolution, or a resize-convolution
            last = [m for m in up.modules() if getattr(m, "weight", None) is not None][-1]
            torch.nn.init.zeros_(last.weight)
            if last.bias is not None:
                torch.nn.init.zeros_(last.bias)
