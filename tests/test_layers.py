"""styler's reflect padding: the stock op's values and gradients, in the
input's dtype under autocast, and networks that keep their parameter names."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from styler import zoo  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402
from styler.zoo.layers import (  # noqa: E402
    PadConv2d,
    ReflectionPad2d,
    reflect_pad,
    with_stock_padding,
)

PADDINGS = [(1, 1, 1, 1), (3, 3, 3, 3), (2, 0, 1, 3), (0, 1, 0, 0)]


@pytest.mark.parametrize("padding", PADDINGS)
def test_values_and_gradients_are_the_stock_ops(padding: tuple[int, int, int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 7 + padding[2] + padding[3], 9 + padding[0] + padding[1],
                       generator=gen, dtype=torch.float64)  # fmt: skip
    ours = reflect_pad(x, padding)
    stock = F.pad(x, padding, mode="reflect")
    assert torch.equal(ours, stock)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_stock,) = torch.autograd.grad(stock, x, grad)
    torch.testing.assert_close(g_ours, g_stock, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: reflect_pad(t, padding), (x,))


def test_under_autocast_the_pad_keeps_bf16() -> None:
    x = torch.randn(1, 4, 8, 8).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.pad(x, (1, 1, 1, 1), mode="reflect").dtype == torch.float32  # the stock op
        padded = ReflectionPad2d(1)(x)
        assert padded.dtype == torch.bfloat16
        with torch.no_grad():
            assert ReflectionPad2d(1)(x).dtype == torch.bfloat16
    padded.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_pad_conv_is_a_reflect_conv2d_with_the_same_parameters() -> None:
    torch.manual_seed(0)
    stock = torch.nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
    ours = PadConv2d(3, 5, 3, padding=1, padding_mode="reflect")
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    torch.testing.assert_close(ours(x), stock(x))
    (g_ours,) = torch.autograd.grad(ours(x).square().sum(), x)
    (g_stock,) = torch.autograd.grad(stock(x).square().sum(), x)
    torch.testing.assert_close(g_ours, g_stock)


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resnet_trains_through_it_like_the_stock_layers(upsample: str) -> None:
    """The same generator with stock padding layers: same state_dict keys, same
    outputs and same weight gradients."""
    torch.manual_seed(0)
    net = zoo.build(generator_preset("resnet_2blocks", ngf=8, upsample=upsample))
    assert any(isinstance(m, ReflectionPad2d) for m in net.modules())
    stock = with_stock_padding(
        zoo.build(generator_preset("resnet_2blocks", ngf=8, upsample=upsample))
    )
    assert not any(isinstance(m, (ReflectionPad2d, PadConv2d)) for m in stock.modules())
    stock.load_state_dict(net.state_dict())
    assert list(stock.state_dict()) == list(net.state_dict())
    x = torch.rand(2, 3, 20, 24) * 2 - 1
    out, ref = net(x), stock(x)
    torch.testing.assert_close(out, ref)
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
