"""Reliability, the fifty-first pass: the code since pass 50 (`styler info`'s
path widths, the split of the shape walk, CUT's ``lr_paths``) through the
real CLI. A generator checkpoint whose ResNet has a colour, detail or
smoothing path and fewer channels out than in was exported until the graph
was checked, and refused naming no file; a run's config.json with
``lr_paths`` (or ``hue_keep``) below 0 was refused naming a flag `train`
has not. Each test fails on the code of the pass's start (9b8e7a2) for the
reason its docstring gives."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")

from test_safety import _png  # noqa: E402

from styler import zoo  # noqa: E402
from styler.checkpoint import save_generator  # noqa: E402
from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import discriminator_preset, generator_preset  # noqa: E402
from styler.training.config import TrainConfig  # noqa: E402
from styler.training.modes.cut import FastCutConfig  # noqa: E402


def test_export_of_a_path_generator_with_fewer_channels_out_is_one_line(
    tmp_path: Path, cli: Any
) -> None:
    """A generator checkpoint whose metadata gives a ResNet of 3 channels in,
    1 out, ``residual`` false and a detail path of 4 (its weights those of
    that network): the paths add to the input whatever ``residual`` says, so
    the graph made 3 channels, and `styler export` was refused only by the
    check of the graph in memory: "<in-memory model>: output 'styled' has 3
    channels, the metadata says 1", naming no file. The metadata is refused
    now, as a residual one's is: the checkpoint named, exit 2, nothing
    written."""
    config = dataclasses.replace(
        generator_preset("resnet_1blocks", ngf=4), in_channels=3, out_channels=1, detail=4
    )
    net = zoo.build(config)
    meta = ModelMetadata(network=config, name="odd")
    checkpoint = save_generator(tmp_path / "odd.safetensors", net.state_dict(), meta)
    out = tmp_path / "odd.onnx"
    result = cli("export", str(checkpoint), "-o", str(out))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line == (
        f"styler: error: {checkpoint}: bad styler metadata: config field 'detail': a "
        "ResNet's colour, detail and smoothing paths add to its input, so it needs as "
        "many channels out as in"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("lr_paths", -1, "lr_paths must be in (0, 100], got -1"),
        ("hue_keep", -1, "hue_keep must be in [0, 1], got -1"),
    ],
)
def test_a_resumed_config_with_a_negative_config_only_field_names_the_field(
    tmp_path: Path, cli: Any, field: str, value: float, reason: str
) -> None:
    """A FastCUT run's config.json edited to `"lr_paths": -1` (or
    `"hue_keep": -1`): `train --resume` said "--lr-paths must be a number at
    least 0, got -1", naming a flag train has not (`--lr-paths`: "No such
    option") and a bound that is refused too (0: "lr_paths must be in (0,
    100]"). The field's own range is checked first now: one line naming the
    field as config.json does, exit 2, nothing written."""
    for name in ("A", "B"):
        _png(tmp_path / name / "0.png", 40, 40)
    mode = FastCutConfig(
        generator=generator_preset("resnet_2blocks", ngf=4, residual=True, detail=4),
        discriminator=discriminator_preset("basic", ndf=4),
    )
    config = TrainConfig(
        mode=mode, data_a=str(tmp_path / "A"), data_b=str(tmp_path / "B"), size=32, load_size=36
    ).to_dict()
    config[field] = value
    run = tmp_path / "run"
    run.mkdir()
    text = json.dumps(config)
    (run / "config.json").write_text(text)
    result = cli("train", "--resume", str(run), "--steps", "4")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line == (f"styler: error: {run / 'config.json'}: not a valid training config ({reason})")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert (run / "config.json").read_text() == text
