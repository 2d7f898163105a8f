"""Generation from noise: training on one folder (plain or with class
subfolders), export, and `styler generate` with onnxruntime alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from styler import zoo  # noqa: E402
from styler.errors import BadModelError, UsageError  # noqa: E402
from styler.netconfig import (  # noqa: E402
    DcganDiscriminatorConfig,
    DcganGeneratorConfig,
    MlpDiscriminatorConfig,
    MlpGeneratorConfig,
)
from styler.training.loop import WatchOptions, train  # noqa: E402
from styler.training.setup import make_config  # noqa: E402

Cli = Callable[..., subprocess.CompletedProcess[str]]
QUIET = WatchOptions(display="quiet", workers=1)


def digit_like(folder: Path, classes: int | None, per_class: int = 12, size: int = 8) -> None:
    """Tiny greyscale images: a bright bar whose position says the class."""
    rng = np.random.default_rng(0)
    for k in range(classes or 1):
        sub = folder / str(k) if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            img[:, k % size] = 230
            Image.fromarray(img, "L").save(sub / f"{i:03d}.png")


def test_networks_have_the_documented_shapes() -> None:
    g = zoo.build(MlpGeneratorConfig(size=28))
    assert [m.out_features for m in g.modules() if isinstance(m, torch.nn.Linear)] == [
        256,
        512,
        1024,
        784,
    ]
    bn = next(m for m in g.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert bn.momentum == pytest.approx(0.2)  # Keras momentum 0.8
    d = zoo.build(MlpDiscriminatorConfig(size=28))
    assert [m.out_features for m in d.modules() if isinstance(m, torch.nn.Linear)] == [512, 256, 1]
    g = zoo.build(DcganGeneratorConfig(size=64))
    assert zoo.count_parameters(g) == 3_576_704  # the PyTorch DCGAN tutorial's generator
    x = g(torch.randn(3, 100))
    assert x.shape == (3, 3, 64, 64) and x.abs().max() <= 1
    score, cls = zoo.build(DcganDiscriminatorConfig(size=64, num_classes=5))(x)
    assert score.shape == (3,) and cls is not None and cls.shape == (3, 5)


def test_one_folder_trains_a_gan_and_class_folders_an_acgan(tmp_path: Path) -> None:
    plain, classes = tmp_path / "plain", tmp_path / "classes"
    digit_like(plain, None)
    digit_like(classes, 3)
    config, _ = make_config(plain, steps=2)
    assert config.mode.name == "gan" and config.mode.classes == () and config.size == 8
    assert config.mode.generator.out_channels == 1 and config.batch_size == 64 and not config.flip
    config, _ = make_config(classes, steps=2, arch="dcgan")
    assert config.mode.classes == ("0", "1", "2") and config.mode.generator.num_classes == 3
    with pytest.raises(UsageError, match="power of two"):
        make_config(classes, steps=2, arch="dcgan", size=12)
    with pytest.raises(UsageError, match="two folders"):
        make_config(classes, mode="cyclegan")


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_training_exports_a_model_that_generates(
    tmp_path: Path, arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "digits"
    digit_like(data, 3)
    config, found = make_config(data, arch=arch, steps=3, batch_size=8, ngf=8, ndf=8)
    result = train(config, tmp_path / "run", device="cpu", watch=QUIET, found=found)
    assert result.finished and [p.name for p in result.models] == ["digits_generator.onnx"]
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert {"D", "G", "D_acc", "G_acc", "cls_acc"} <= records[-1].keys()
    assert 0 <= records[-1]["D_acc"] <= 1 and 0 <= records[-1]["G_acc"] <= 1
    grid = Image.open(tmp_path / "run/samples/step_0000003.png")
    assert grid.height > 3 * 8 * 10  # one (enlarged) row per class

    from styler.generate import ImageGenerator

    gen = ImageGenerator(result.models[0], device="cpu")
    assert gen.meta.task == "generate" and gen.classes == ("0", "1", "2")
    first = gen.sample(6, seed=5)
    again = gen.sample(10, seed=5)
    assert [g.label for g in first] == [0, 1, 2, 0, 1, 2]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=False))
    assert first[0].image.shape == (8, 8, 1) and first[0].image.dtype == np.uint8
    other = gen.sample(6, seed=6)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert {g.label for g in gen.sample(4, seed=0, label="2")} == {2}
    # Large images come fewer to a call (pass 43): 4 of 8 x 8 here, the same images.
    import styler.generate

    monkeypatch.setattr(styler.generate, "CHUNK_BYTES", 4 * 1 * 8 * 8 * 4)
    calls: list[int] = []
    run = gen.model.generate
    monkeypatch.setattr(gen.model, "generate", lambda n, y=None: calls.append(len(n)) or run(n, y))
    chunked = gen.sample(10, seed=5)
    assert calls == [1, 4, 4, 1]  # one image first (pass 45)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(chunked, again, strict=True))
    with pytest.raises(UsageError, match="unknown class"):
        gen.sample(1, label="7")


def test_generate_cli_is_deterministic_and_pipeline_friendly(tmp_path: Path, cli: Cli) -> None:
    data = tmp_path / "faces"
    digit_like(data, None, per_class=16)
    trained = cli(
        "train", str(data), "-o", str(tmp_path / "run"), "--steps", "2", "--batch-size", "8"
    )
    assert trained.returncode == 0, trained.stderr
    assert "gan faces (unconditional): mlp from 100-d noise" in trained.stderr
    model = Path(trained.stdout.split()[0])
    out = tmp_path / "out"
    result = cli(
        "generate",
        str(model),
        "-n",
        "5",
        "-o",
        str(out),
        "--seed",
        "7",
        "--grid",
        str(tmp_path / "grid.png"),
    )
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert paths[-1] == str(tmp_path / "grid.png")
    assert [Path(p).name for p in paths[:-1]] == [f"sample_{i:05d}.png" for i in range(5)]
    first = [np.asarray(Image.open(p)) for p in paths[:-1]]
    again = cli("generate", str(model), "-n", "5", "-o", str(tmp_path / "again"), "--seed", "7")
    assert again.returncode == 0
    assert all(
        np.array_equal(a, np.asarray(Image.open(p)))
        for a, p in zip(first, again.stdout.split(), strict=True)
    )
    # Existing files are kept, and said so.
    rerun = cli("generate", str(model), "-n", "5", "-o", str(out), "--seed", "8")
    assert rerun.returncode == 0 and rerun.stdout == "" and "kept 5 existing" in rerun.stderr
    assert np.array_equal(first[0], np.asarray(Image.open(paths[0])))
    info = cli("info", str(model))
    assert info.returncode == 0 and "generate (noise in, images out)" in info.stdout
    # A class for an unconditional model is an error.
    bad = cli("generate", str(model), "--class", "3")
    assert bad.returncode == 2 and "not class-conditional" in bad.stderr


def test_generate_refuses_a_translation_model(tiny_resnet_onnx: Path, cli: Cli) -> None:
    from styler.generate import ImageGenerator

    with pytest.raises(BadModelError, match="not a generation model"):
        ImageGenerator(tiny_resnet_onnx, device="cpu")
    result = cli("generate", str(tiny_resnet_onnx), "-n", "1")
    assert result.returncode == 2 and "not a generation model" in result.stderr


def test_generation_path_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nimport styler.generate, styler.cli\nprint('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "TORCH False" in out.stdout
