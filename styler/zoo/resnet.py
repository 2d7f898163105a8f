"""ResNet generator (Johnson et al. 2016), the CycleGAN default.

Module layout and parameter names match pytorch-CycleGAN-and-pix2pix's
``ResnetGenerator`` exactly, so its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from styler.netconfig import Padding, ResnetGeneratorConfig
from styler.zoo.layers import FastConv2d, ReflectionPad2d, ResizeConv, conv_bias, norm_layer
from styler.zoo.smooth import SmoothPath


def _padding(padding: Padding, amount: int) -> tuple[list[nn.Module], int]:
    """Explicit padding layers and the conv's own padding for a padding type."""
    if padding == "reflect":
        return [ReflectionPad2d(amount)], 0
    if padding == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding == "zero":
        return [], amount
    raise ValueError(f"unknown padding {padding!r}")


class ResnetBlock(nn.Module):
    """conv3x3-norm-relu-(dropout)-conv3x3-norm, plus the input."""

    def __init__(self, dim: int, config: ResnetGeneratorConfig) -> None:
        super().__init__()
        bias = conv_bias(config.norm)
        layers: list[nn.Module] = []
        for second in (False, True):
            pad_layers, p = _padding(config.padding, 1)
            layers += [*pad_layers, FastConv2d(dim, dim, 3, padding=p, bias=bias)]
            layers.append(norm_layer(config.norm, dim))
            if not second:
                layers.append(nn.ReLU(True))
                if config.dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, config: ResnetGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ngf, norm, bias = config.ngf, config.norm, conv_bias(config.norm)
        layers: list[nn.Module] = [
            ReflectionPad2d(3),
            FastConv2d(config.in_channels, ngf, 7, padding=0, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        n_down = 2
        for i in range(n_down):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_down
        layers += [ResnetBlock(ngf * mult, config) for _ in range(config.n_blocks)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            c_in, c_out = ngf * mult, ngf * mult // 2
            if config.upsample == "resize":
                up: nn.Module = ResizeConv(c_in, c_out, bias, config.padding)
            else:
                up = nn.ConvTranspose2d(
                    c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias
                )
            layers += [up, norm_layer(norm, c_out), nn.ReLU(True)]
        layers += [
            ReflectionPad2d(3),
            FastConv2d(ngf, config.out_channels, 7, padding=0),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)
        self.color = color_mlp(config.in_channels, config.out_channels, config.color_mlp)
        self.detail = detail_cnn(config.in_channels, config.out_channels, config.detail)
        self.smooth = SmoothPath(config.in_channels, config.smooth) if config.smooth else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.model(x))

    def finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The output from the input ``x`` and the last layer's ``y``."""
        if self.color is None and self.detail is None and self.smooth is None:
            return residual_output(self.config.residual, x, y)
        base = self._graded(x)
        if self.smooth is not None:  # and smoothed where the style is flat
            base = base + self.smooth(x)
        return residual_output(True, base, y)

    def finish_both(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`finish`'s output and the output without the smoothing path
        (the same tensor when it has none; what training's PatchNCE compares)."""
        if self.smooth is None:
            out = self.finish(x, y)
            return out, out
        base = self._graded(x)
        return residual_output(True, base + self.smooth(x), y), residual_output(True, base, y)

    def _graded(self, x: torch.Tensor) -> torch.Tensor:
        """The input with the colour and detail paths' changes added."""
        base = x
        if self.color is not None:  # the input, colour-graded pixel by pixel
            base = base + self.color(x)
        if self.detail is not None:  # and its fine detail changed at full size
            base = base + self.detail(x)
        return base

    def start_as_identity(self) -> None:
        """A residual generator's last convolution (and the last layer of its
        colour, detail and smoothing paths) starts at zero: the network
        starts as the identity (called after initialisation). The paths'
        hidden layers take PyTorch's default initialisation: at the GAN's
        N(0, 0.02) they would pass almost nothing on, and the paths would
        learn slowly."""
        if self.config.residual:
            last = self.model[-2]
            torch.nn.init.zeros_(last.weight)
            if last.bias is not None:
                torch.nn.init.zeros_(last.bias)
        for path in (self.color, self.detail):
            if path is None:
                continue
            for layer in path:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
            torch.nn.init.zeros_(path[-1].weight)
            torch.nn.init.zeros_(path[-1].bias)
        if self.smooth is not None:
            self.smooth.start_at_zero()

    def features(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """The outputs of the layers (indices into ``model``) in ``layers``,
        running the network only as far as the last of them."""
        out = []
        for i, layer in enumerate(self.model[: max(layers) + 1]):
            x = layer(x)
            if i in layers:
                out.append(x)
        return out

    def forward_with_features(
        self, x: torch.Tensor, layers: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The output, the output without its smoothing path (see
        :meth:`finish_both`) and, on the way, :meth:`features` (one forward pass)."""
        y, out = x, []
        for i, layer in enumerate(self.model):
            y = layer(y)
            if i in layers:
                out.append(y)
        return *self.finish_both(x, y), out


def color_mlp(c_in: int, c_out: int, width: int) -> nn.Sequential | None:
    """A per-pixel MLP (three 1x1 convolutions, no normalisation) of ``width``
    hidden channels, or None for width 0."""
    if width <= 0:
        return None
    return nn.Sequential(
        nn.Conv2d(c_in, width, 1),
        nn.SiLU(),
        nn.Conv2d(width, width, 1),
        nn.SiLU(),
        nn.Conv2d(width, c_out, 1),
    )


def detail_cnn(c_in: int, c_out: int, width: int) -> nn.Sequential | None:
    """Three 5x5 convolutions at full size (reflection padding, no
    normalisation) of ``width`` hidden channels, or None for width 0."""
    if width <= 0:
        return None
    return nn.Sequential(
        ReflectionPad2d(2),
        nn.Conv2d(c_in, width, 5),
        nn.SiLU(),
        ReflectionPad2d(2),
        nn.Conv2d(width, width, 5),
        nn.SiLU(),
        ReflectionPad2d(2),
        nn.Conv2d(width, c_out, 5),
    )


def residual_output(residual: bool, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A generator's output from its input ``x`` and its last layer's ``y``:
    ``y``, or for a residual generator ``x + y`` clipped to [-1, 1]."""
    if not residual:
        return y
    # At sizes that are not a multiple of the size multiple the output is larger.
    return (x + y[:, :, : x.shape[2], : x.shape[3]]).clamp(-1.0, 1.0)


def nce_layers(config: ResnetGeneratorConfig) -> tuple[int, ...]:
    """The layers CUT's PatchNCE compares (its 0, 4, 8, 12, 16 on its
    anti-aliased network): the input (after padding), the two downsampling
    convolutions, the first residual block and the fifth (or the last)."""
    first_block = 10
    last = first_block + min(4, config.n_blocks - 1)
    return (0, 4, 7, *sorted({first_block, last})) if config.n_blocks else (0, 4, 7)


def nce_channels(config: ResnetGeneratorConfig) -> tuple[int, ...]:
    """Channels of each of :func:`nce_layers`."""
    ngf = config.ngf
    blocks = len(nce_layers(config)) - 3
    return (config.in_channels, ngf * 2, ngf * 4, *[ngf * 4] * blocks)
