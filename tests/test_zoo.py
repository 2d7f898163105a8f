"""The model zoo against the reference implementation's layouts and counts."""

from __future__ import annotations

import json

import pytest
from conftest import REFERENCE

torch = pytest.importorskip("torch")

from styler import zoo  # noqa: E402
from styler.errors import BadModelError  # noqa: E402
from styler.netconfig import (  # noqa: E402
    config_from_dict,
    config_to_dict,
    discriminator_preset,
    generator_preset,
)

LAYOUTS = json.loads((REFERENCE / "state_dict_layouts.json").read_text())
CONFIGS = {
    "G_resnet_9blocks_ngf64_instance": generator_preset("resnet_9blocks"),
    "G_resnet_6blocks_ngf64_instance": generator_preset("resnet_6blocks"),
    "G_unet_256_ngf64_batch": generator_preset("unet_256"),
    "G_unet_128_ngf64_batch": generator_preset("unet_128"),
    "D_basic_ndf64_instance": discriminator_preset("basic"),
    "D_basic_ndf64_batch": discriminator_preset("basic", norm="batch"),
    "D_pixel_ndf64_batch": discriminator_preset("pixel", norm="batch"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_layout_and_parameter_count_match_the_reference(name: str) -> None:
    net = zoo.build(CONFIGS[name], init=None)
    layout = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert layout == LAYOUTS[name]["state_dict"]
    assert zoo.count_parameters(net) == LAYOUTS[name]["num_params"]


def test_documented_parameter_counts() -> None:
    expected = {
        "resnet_9blocks": 11_378_179,
        "resnet_6blocks": 7_837_699,
        "unet_256": 54_413_955,
        "unet_128": 41_828_995,
    }
    for preset, count in expected.items():
        assert zoo.count_parameters(zoo.build(generator_preset(preset), init=None)) == count
    assert zoo.count_parameters(zoo.build(discriminator_preset("basic"), init=None)) == 2_764_737


@pytest.mark.parametrize(
    "config",
    [
        generator_preset("resnet_1blocks", ngf=8, norm="batch", dropout=True),
        generator_preset("resnet_4blocks", ngf=8, norm="none", padding="zero"),
        generator_preset("resnet_2blocks", ngf=8, upsample="resize", padding="replicate"),
        generator_preset("unet_32", ngf=8, upsample="resize", norm="instance"),
        generator_preset("unet_64", ngf=4, in_channels=1, out_channels=2),
    ],
)
def test_generators_keep_the_spatial_size(config: object) -> None:
    net = zoo.build(config).eval()
    h, w = 2 * config.size_multiple, 3 * config.size_multiple
    y = net(torch.rand(2, config.in_channels, h, w) * 2 - 1)
    assert y.shape == (2, config.out_channels, h, w)
    assert y.abs().max() <= 1


def test_a_residual_generator_changes_the_input_and_starts_near_it() -> None:
    torch.manual_seed(0)
    config = generator_preset("resnet_2blocks", ngf=8, residual=True)
    net = zoo.build(config).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    last = net.model[-2]  # the output convolution, before tanh
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        assert torch.equal(net(x), x)  # no change learned yet: the identity
        last.bias.fill_(0.5)
        y = net(x)
    assert torch.allclose(y, (x + torch.tanh(torch.tensor(0.5))).clamp(-1, 1))
    plain = zoo.build(generator_preset("resnet_2blocks", ngf=8)).eval()
    plain.load_state_dict(net.state_dict())  # the same parameters as the reference layout
    with pytest.raises(BadModelError, match="as many channels"):
        config_from_dict({**config_to_dict(config), "out_channels": 1})


@pytest.mark.parametrize(
    ("config", "size", "out"),
    [
        (discriminator_preset("basic", ndf=8), 64, 6),
        (discriminator_preset("n_layers_2", ndf=8), 64, 14),
        (discriminator_preset("pixel", ndf=8), 20, 20),
    ],
)
def test_discriminator_output_shapes(config: object, size: int, out: int) -> None:
    y = zoo.build(config)(torch.rand(1, 3, size, size))
    assert y.shape == (1, 1, out, out)


@pytest.mark.parametrize(
    ("init", "gain", "std"),
    [("normal", 0.02, 0.02), ("normal", 0.2, 0.2), ("orthogonal", 1.0, None)],
)
def test_init_schemes(init: str, gain: float, std: float | None) -> None:
    torch.manual_seed(0)
    net = zoo.build(generator_preset("resnet_2blocks", ngf=16), init=init, gain=gain)
    weight = net.model[4].weight  # the first downsampling conv, 16 -> 32 channels
    if std is not None:
        assert abs(float(weight.detach().std()) - std) < 0.1 * std
    else:
        flat = weight.reshape(weight.shape[0], -1)
        assert torch.allclose(flat @ flat.T, torch.eye(flat.shape[0]) * gain**2, atol=1e-4)
    for name in ("xavier", "kaiming"):
        other = zoo.build(generator_preset("resnet_2blocks", ngf=16), init=name)
        assert not torch.equal(other.model[4].weight, weight)
    with pytest.raises(ValueError, match="unknown init"):
        zoo.build(generator_preset("resnet_2blocks"), init="uniform")  # type: ignore[arg-type]


def test_config_round_trip_and_rejections() -> None:
    for config in CONFIGS.values():
        assert config_from_dict(config_to_dict(config)) == config
    good = config_to_dict(generator_preset("resnet_6blocks"))
    for bad, message in [
        ({**good, "kind": "vgg"}, "unknown network kind"),
        ({**good, "colour": 1}, "unknown fields"),
        ({**good, "ngf": "64"}, "must be an integer"),
        ({**good, "ngf": 0}, "must be positive"),
        ({**good, "dropout": 1}, "true/false"),
        ({**good, "norm": "layer"}, "unknown norm"),
        ({**config_to_dict(generator_preset("unet_128")), "num_downs": 3}, "num_downs"),
    ]:
        with pytest.raises(BadModelError, match=message):
            config_from_dict(bad)


def test_presets() -> None:
    assert generator_preset("resnet_9blocks").n_blocks == 9
    assert generator_preset("unet_256").num_downs == 8
    assert generator_preset("unet_128").size_multiple == 128
    assert discriminator_preset("n_layers_5").n_layers == 5
    for bad in ("resnet_blocks", "unet_100", "unet_16", "vgg"):
        with pytest.raises(ValueError):
            generator_preset(bad)
    with pytest.raises(ValueError):
        discriminator_preset("huge")
