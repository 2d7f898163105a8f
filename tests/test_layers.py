"""styler's faster-to-train layers: reflect padding and convolutions with
the stock ops' values and gradients (in float64 to rounding, in bf16 under
autocast), and networks that keep their parameter names."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from styler import zoo  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402
from styler.zoo.layers import (  # noqa: E402
    FastConv2d,
    PadConv2d,
    ReflectionPad2d,
    gemm_weight_grad,
    input_grad,
    phase_conv2d,
    reflect_pad,
    shared_weight_casts,
    with_stock_layers,
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
    stock = with_stock_layers(
        zoo.build(generator_preset("resnet_2blocks", ngf=8, upsample=upsample))
    )
    assert any(isinstance(m, FastConv2d) for m in net.modules())
    ours = (ReflectionPad2d, PadConv2d, FastConv2d)
    assert not any(isinstance(m, ours) for m in stock.modules())
    stock.load_state_dict(net.state_dict())
    assert list(stock.state_dict()) == list(net.state_dict())
    x = torch.rand(2, 3, 20, 24) * 2 - 1
    out, ref = net(x), stock(x)
    torch.testing.assert_close(out, ref)
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


# -- convolutions --------------------------------------------------------------------------

CONV_SHAPES = [  # (in, out, kernel, height, width): an RGB head, an RGB stem, odd cases
    (8, 3, 7, 13, 11),
    (3, 8, 7, 12, 9),
    (5, 2, 4, 9, 10),
    (4, 1, 3, 7, 8),
    (6, 6, 3, 5, 6),
]


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("phases", [2, 3])
def test_phase_conv_is_the_convolution(shape: tuple[int, ...], phases: int) -> None:
    cin, cout, k, h, w = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, cin, h + k - 1, w + k - 1, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    out = phase_conv2d(x, weight, bias, phases)
    assert out.shape == (2, cout, h, w)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_backward_pieces_are_the_convolution_gradients(shape: tuple[int, ...]) -> None:
    cin, cout, k, h, w = shape
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, cin, h + k - 1, w + k - 1, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    grad = torch.randn(3, cout, h, w, generator=gen, dtype=torch.float64)
    mask = [True, True, False]
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
    )
    torch.testing.assert_close(input_grad(grad, x, weight), gx, rtol=0, atol=1e-11)
    torch.testing.assert_close(gemm_weight_grad(grad, x, (k, k)), gw, rtol=0, atol=1e-11)


@pytest.mark.parametrize("shape", [*CONV_SHAPES, (20, 24, 3, 6, 5)])
def test_fast_conv_is_a_conv2d_with_the_same_parameters(shape: tuple[int, ...]) -> None:
    cin, cout, k, h, w = shape
    torch.manual_seed(0)
    stock = torch.nn.Conv2d(cin, cout, k).double()
    ours = FastConv2d(cin, cout, k).double()
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(2, cin, h + k - 1, w + k - 1, dtype=torch.float64, requires_grad=True)
    out, ref = ours(x), stock(x)
    assert out.grad_fn is not None and "Convolution" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(out)
    mine = torch.autograd.grad(out, [x, ours.weight, ours.bias], grad)
    theirs = torch.autograd.grad(ref, [x, stock.weight, stock.bias], grad)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    assert torch.autograd.gradcheck(ours, (x,))
    with torch.no_grad():  # inference and export: the plain convolution
        assert torch.equal(ours(x), stock(x))


@pytest.mark.parametrize("shape", [(8, 3, 7, 16, 16), (3, 24, 7, 16, 16), (32, 32, 3, 8, 8)])
def test_fast_conv_under_bf16_autocast(shape: tuple[int, ...]) -> None:
    """bf16 forward, float32 weight gradients, within bf16 rounding of the
    stock layer (the 32-channel case takes the matrix-product weight gradient)."""
    cin, cout, k, h, w = shape
    torch.manual_seed(0)
    stock = torch.nn.Conv2d(cin, cout, k)
    ours = FastConv2d(cin, cout, k)
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(2, cin, h + k - 1, w + k - 1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = ours(x), stock(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.02, atol=0.05)
    grad = torch.randn(out.shape).bfloat16()
    mine = torch.autograd.grad(out, [x, ours.weight, ours.bias], grad)
    theirs = torch.autograd.grad(ref, [x, stock.weight, stock.bias], grad)
    for a, b in zip(mine, theirs, strict=True):
        assert a.dtype == b.dtype
        scale = b.abs().max().item()
        torch.testing.assert_close(a.float() / scale, b.float() / scale, rtol=0, atol=0.02)


def test_shared_weight_casts_cast_once_per_block_with_the_same_gradients() -> None:
    """Two calls inside the block use one cast of the weight (one autograd
    node); their gradients match two separately cast calls within bf16
    rounding; the block leaves no cast behind, even when it raises."""
    torch.manual_seed(0)
    conv = FastConv2d(16, 16, 3)
    net = torch.nn.Sequential(conv)
    x = torch.randn(2, 16, 10, 10)
    grad = torch.randn(2, 16, 8, 8).bfloat16()

    def two_calls() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(x), conv(x * 0.5)

    def weight_node(out: torch.Tensor) -> object:
        return out.grad_fn.next_functions[1][0]  # type: ignore[union-attr]

    separate = two_calls()
    assert weight_node(separate[0]) is not weight_node(separate[1])
    with shared_weight_casts([net]):
        shared = two_calls()
    assert weight_node(shared[0]) is weight_node(shared[1])
    assert conv._casts is None
    for a, b in zip(shared, separate, strict=True):
        assert torch.equal(a, b)
    (g_shared,) = torch.autograd.grad(shared, [conv.weight], [grad, grad])
    (g_separate,) = torch.autograd.grad(separate, [conv.weight], [grad, grad])
    assert g_shared.dtype == torch.float32
    scale = g_separate.abs().max().item()
    torch.testing.assert_close(g_shared / scale, g_separate / scale, rtol=0, atol=0.01)
    with pytest.raises(RuntimeError, match="inside"), shared_weight_casts([net]):
        raise RuntimeError("inside")
    assert conv._casts is None
