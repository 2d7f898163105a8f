"""The styler command through a real subprocess: import, export, info, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE

Cli = Callable[..., subprocess.CompletedProcess[str]]
CASES = json.loads((REFERENCE / "parity_cases.json").read_text())


def test_help_and_version_import_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys\n"
        "from styler.cli import main\n"
        "for argv in (['--help'], ['--version'], ['import', '--help'], ['info', '--help']):\n"
        "    assert main(argv) == 0, argv\n"
        "heavy = ['torch', 'onnxruntime', 'numpy', 'onnx', 'PIL']\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "import" in out.stdout and "export" in out.stdout and "info" in out.stdout


def test_version(cli: Cli) -> None:
    from styler import __version__

    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"styler {__version__}"


def test_unknown_option_is_a_usage_error(cli: Cli) -> None:
    result = cli("info", "--no-such-flag")
    assert result.returncode == 2
    assert "No such option" in result.stderr


#: The three largest references (the torch side of every case is checked in
#: test_importer.py; these add 26 s of ONNX export to the default run).
SLOW_CASES = {
    "resnet_9blocks_ngf16_instance",
    "unet_256_ngf8_batch",
    "resnet_6blocks_ngf16_instance",
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in sorted(CASES)],
)
def test_import_reproduces_the_reference_outputs(tmp_path: Path, case: str) -> None:
    """Every reference checkpoint, imported to ONNX, gives the reference output."""
    pytest.importorskip("torch")
    from styler.importer import import_to_onnx
    from styler.runtime import Model

    result = import_to_onnx(REFERENCE / f"{case}.pth", tmp_path / f"{case}.onnx")
    x = np.load(REFERENCE / f"{case}.input.npy")
    expected = np.load(REFERENCE / f"{case}.output.npy")
    got = Model.open(result.path, device="cpu").run(x)
    assert got.shape == expected.shape == tuple(CASES[case]["output_shape"])
    assert np.abs(got - expected).max() <= 1e-5
    assert result.parity_error <= 1e-4


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_import_cli_writes_a_described_model(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    src = tmp_path / "latest_net_G_B.pth"
    src.write_bytes((REFERENCE / "resnet_6blocks_ngf16_instance.pth").read_bytes())
    result = cli("import", str(src), "--license", "CC-BY-4.0", "--train-size", "256")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "latest_net_G_B.onnx"
    assert result.stdout.strip() == str(out)
    # One line of styler's own on stderr: no onnxruntime or torch log line.
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"styler: wrote {out}: resnet_6blocks"), lines
    assert out.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

    info = cli("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["architecture"] == "resnet_6blocks"
    assert meta["network"]["ngf"] == 16 and meta["network"]["norm"] == "instance"
    assert meta["direction"] == "BtoA"
    assert meta["license"] == "CC-BY-4.0"
    assert meta["train_size"] == 256
    assert "pytorch-CycleGAN-and-pix2pix" in meta["source"]
    assert meta["parity_error"] <= 1e-4

    text = cli("info", str(out))
    assert text.returncode == 0
    assert "resnet_6blocks" in text.stdout and "BtoA" in text.stdout

    # The output exists now: a second import refuses to overwrite it.
    again = cli("import", str(src))
    assert again.returncode == 2
    assert "exists" in again.stderr and "--overwrite" in again.stderr


def test_import_of_a_discriminator_names_the_keys(cli: Cli, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from styler import zoo
    from styler.netconfig import discriminator_preset

    path = tmp_path / "latest_net_D_A.pth"
    torch.save(zoo.build(discriminator_preset("basic", ndf=8)).state_dict(), path)
    result = cli("import", str(path))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert str(path) in line and "model.1.weight" in line
    assert not (tmp_path / "latest_net_D_A.onnx").exists()


def test_import_refuses_a_malicious_pickle_without_running_it(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    # A pickle that would run a shell command if unpickled without weights_only.
    payload = b"\x80\x04cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    evil.write_bytes(payload)
    result = cli("import", str(evil))
    assert result.returncode == 2
    assert "refused" in result.stderr and str(evil) in result.stderr
    assert not marker.exists()


def test_export_cli_from_a_styler_checkpoint(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    config = generator_preset("unet_32", ngf=4)
    meta = ModelMetadata(
        network=config, name="edges2shoes", train_size=32, domains=("edges", "shoes")
    )
    ckpt = save_generator(tmp_path / "G.safetensors", zoo.build(config).state_dict(), meta)
    result = cli("export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--license", "MIT")
    assert result.returncode == 0, result.stderr
    info = json.loads(cli("info", str(tmp_path / "m.onnx"), "--json").stdout)
    assert info["name"] == "edges2shoes"
    assert info["architecture"] == "unet_32"
    assert info["size_multiple"] == 32
    assert info["domains"] == ["edges", "shoes"]
    assert info["license"] == "MIT"
    assert info["source"] == "styler checkpoint G.safetensors"

    # A safetensors file without styler metadata is refused with a pointer to `import`.
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file(zoo.build(config).state_dict(), str(bare))
    result = cli("export", str(bare))
    assert result.returncode == 2
    assert "styler import" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"not an onnx model at all", "not a loadable ONNX model"),
        (None, "no such model file"),
    ],
)
def test_info_rejects_bad_files_in_one_line(
    cli: Cli, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = cli("info", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0]


def test_info_rejects_a_truncated_model(cli: Cli, tmp_path: Path, tiny_resnet_onnx: Path) -> None:
    data = tiny_resnet_onnx.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    result = cli("info", str(cut))
    assert result.returncode == 2
    assert str(cut) in result.stderr


def test_info_shows_the_widths_of_a_resnets_paths(
    cli: Cli, tmp_path: Path, tiny_resnet_onnx: Path
) -> None:
    """A ResNet generator's colour, detail and smoothing paths are named with
    their widths; a model without them mentions none, and --json is the
    metadata as before."""
    pytest.importorskip("torch")
    import torch

    from styler import zoo
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset(
        "resnet_1blocks", ngf=4, residual=True, color_mlp=8, detail=4, smooth=2
    )
    meta = ModelMetadata(network=config, name="paths", license="CC0-1.0", train_size=32)
    path = tmp_path / "paths.onnx"
    export_onnx(zoo.build(config), meta, path)

    text = cli("info", str(path))
    assert text.returncode == 0, text.stderr
    (line,) = [x for x in text.stdout.splitlines() if x.startswith("architecture")]
    assert line.endswith(
        "resnet_1blocks (resnet, ngf 4, norm instance, upsample transpose, residual, "
        "colour path 8, detail path 4, smoothing path 2)"
    ), line
    data = json.loads(cli("info", str(path), "--json").stdout)
    assert {k: data["network"][k] for k in ("color_mlp", "detail", "smooth")} == {
        "color_mlp": 8,
        "detail": 4,
        "smooth": 2,
    }
    assert set(data) == {*meta.to_dict(), "file", "file_size"}

    plain = cli("info", str(tiny_resnet_onnx))
    assert plain.returncode == 0, plain.stderr
    (line,) = [x for x in plain.stdout.splitlines() if x.startswith("architecture")]
    assert line.endswith("(resnet, ngf 8, norm instance, upsample transpose)"), line
    for label in ("colour path", "detail path", "smoothing path"):
        assert label not in plain.stdout


def test_models_lists_what_ships(cli: Cli) -> None:
    from styler.shipped import shipped_models

    listed = json.loads(cli("models", "--json").stdout)
    assert [m["name"] for m in listed] == [m.name for m in shipped_models()]
    plain = cli("models")
    assert plain.returncode == 0
    if not listed:
        assert "no models ship" in plain.stderr


def test_cli_reference_matches_the_code() -> None:
    """docs/CLI.md is rendered from the app; regenerate it when this fails:
    python -m styler.cli.reference > docs/CLI.md"""
    from styler.cli.reference import command_names, render

    doc = (Path(__file__).parent.parent / "docs" / "CLI.md").read_text()
    assert doc == render()
    for name in ("apply", "train", "generate", "eval", "export", "import", "info", "models"):
        assert name in command_names() and f"## styler {name}\n" in doc
