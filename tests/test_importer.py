"""Importing pytorch-CycleGAN-and-pix2pix checkpoints: detection, parity, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE

torch = pytest.importorskip("torch")

from styler import zoo  # noqa: E402
from styler.errors import BadCheckpointError  # noqa: E402
from styler.importer import detect_config, import_checkpoint, load_state_dict  # noqa: E402
from styler.netconfig import generator_preset  # noqa: E402

CASES = json.loads((REFERENCE / "parity_cases.json").read_text())
EXPECTED = {
    "resnet_9blocks_ngf16_instance": generator_preset("resnet_9blocks", ngf=16),
    "resnet_6blocks_ngf16_instance": generator_preset("resnet_6blocks", ngf=16),
    "unet_256_ngf8_batch": generator_preset("unet_256", ngf=8),
    "unet_128_ngf8_batch": generator_preset("unet_128", ngf=8),
}


def _run(config: object, state: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    net = zoo.build(config, init=None)
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_checkpoints_are_detected_and_reproduced(case: str) -> None:
    imported = import_checkpoint(REFERENCE / f"{case}.pth")
    assert imported.config == EXPECTED[case]
    x = np.load(REFERENCE / f"{case}.input.npy")
    y = _run(imported.config, imported.state_dict, x)
    assert np.abs(y - np.load(REFERENCE / f"{case}.output.npy")).max() <= 1e-5


def test_direction_from_file_name(tmp_path: Path) -> None:
    src = REFERENCE / "resnet_6blocks_ngf16_instance.pth"
    for name, direction in [
        ("latest_net_G_A.pth", "AtoB"),
        ("latest_net_G_B.pth", "BtoA"),
        ("latest_net_G.pth", "AtoB"),
        ("weights.pth", None),
    ]:
        shutil.copy(src, tmp_path / name)
        assert import_checkpoint(tmp_path / name).direction == direction


def test_stale_instance_norm_statistics_are_ignored(tmp_path: Path) -> None:
    case = "resnet_6blocks_ngf16_instance"
    state = load_state_dict(REFERENCE / f"{case}.pth")
    stale = {}
    for index, channels in ((2, 16), (5, 32), (8, 64)):
        stale[f"model.{index}.running_mean"] = torch.randn(channels)
        stale[f"model.{index}.running_var"] = torch.rand(channels)
        stale[f"model.{index}.num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "old.pth"
    torch.save({**state, **stale}, path)
    imported = import_checkpoint(path)
    assert sorted(imported.ignored_keys) == sorted(stale)
    y = _run(imported.config, imported.state_dict, np.load(REFERENCE / f"{case}.input.npy"))
    assert np.abs(y - np.load(REFERENCE / f"{case}.output.npy")).max() <= 1e-5


@pytest.mark.parametrize(
    "config",
    [
        generator_preset("resnet_3blocks", ngf=8, norm="batch"),
        generator_preset("resnet_2blocks", ngf=8, norm="none"),
        generator_preset("resnet_2blocks", ngf=8, dropout=True),
        generator_preset("resnet_2blocks", ngf=8, padding="zero"),
        generator_preset("resnet_2blocks", ngf=8, padding="zero", dropout=True, norm="batch"),
        generator_preset("unet_64", ngf=4, norm="instance"),
        generator_preset("unet_32", ngf=4, norm="none", in_channels=1, out_channels=2),
    ],
)
def test_detection_recovers_the_config(config: object) -> None:
    state = zoo.build(config).state_dict()
    assert detect_config(state) == config


def test_data_parallel_prefix_and_wrapped_state_dict(tmp_path: Path) -> None:
    state = load_state_dict(REFERENCE / "unet_128_ngf8_batch.pth")
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    assert import_checkpoint(path).config == EXPECTED["unet_128_ngf8_batch"]


def test_overrides_that_do_not_fit_name_the_keys() -> None:
    with pytest.raises(BadCheckpointError, match=r"unexpected keys: model\.16\.conv_block"):
        import_checkpoint(REFERENCE / "resnet_9blocks_ngf16_instance.pth", n_blocks=6)
    with pytest.raises(BadCheckpointError, match="shapes do not match"):
        import_checkpoint(REFERENCE / "resnet_9blocks_ngf16_instance.pth", ngf=32)


def test_bad_files(tmp_path: Path) -> None:
    cases = {
        "empty.pth": b"",
        "random.pth": bytes(range(256)) * 4,
        "text.pth": b"just some text\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"model.1.weight": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pth")
    torch.save(
        zoo.build(generator_preset("resnet_1blocks", ngf=4)).state_dict(), tmp_path / "ok.pth"
    )
    for name in [*cases, "mixed.pth", "missing.pth"]:
        with pytest.raises(BadCheckpointError) as info:
            import_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(BadCheckpointError, match="directory"):
        import_checkpoint(tmp_path)
    assert import_checkpoint(tmp_path / "ok.pth").config.n_blocks == 1


def test_malicious_pickle_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.1.weight": Evil()}, path)
    with pytest.raises(BadCheckpointError, match="would run code"):
        import_checkpoint(path)
    assert not marker.exists()
