"""Training on tiny real data: every mode steps, resumes exactly, stops on
Ctrl-C, writes its run folder, and exports models that styler apply runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import interruptible
from PIL import Image

torch = pytest.importorskip("torch")

from styler import paths  # noqa: E402
from styler.errors import BadCheckpointError, DeviceError, UsageError  # noqa: E402
from styler.training import batches, state  # noqa: E402
from styler.training import data as D  # noqa: E402
from styler.training.config import TrainConfig  # noqa: E402
from styler.training.device import Hardware, choose_device, choose_precision  # noqa: E402
from styler.training.loop import WatchOptions, resume, train  # noqa: E402
from styler.training.modes import build_trainer  # noqa: E402
from styler.training.schedule import lr_factor  # noqa: E402
from styler.training.setup import make_config  # noqa: E402

Cli = Callable[..., subprocess.CompletedProcess[str]]
TINY = {"generator": "resnet_2blocks", "ngf": 8, "ndf": 8, "size": 32}
QUIET = WatchOptions(display="quiet", export=False, workers=1)


def make_folder(
    folder: Path, names: list[str], tint: tuple[float, float, float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        base = rng.random((40 + i % 5, 44 + i % 3, 3)) * np.array(tint)
        Image.fromarray((base * 255).astype(np.uint8)).save(folder / name)


@pytest.fixture
def unpaired(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "photos", tmp_path / "paintings"
    make_folder(a, [f"p{i:02d}.png" for i in range(12)], (1.0, 0.6, 0.4), 0)
    make_folder(b, [f"q{i:02d}.jpg" for i in range(11)], (0.3, 0.5, 1.0), 1)
    return a, b


@pytest.fixture
def paired(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "edges", tmp_path / "shoes"
    names = [f"x{i:02d}.png" for i in range(10)]
    make_folder(a, names, (1.0, 1.0, 1.0), 2)
    make_folder(b, names, (0.2, 0.8, 0.2), 3)
    return a, b


def weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = state.latest(run / "checkpoints")
    assert ckpt is not None
    return ckpt.tensors


# -- decisions ----------------------------------------------------------------------------


def test_paired_folders_train_pix2pix_and_unpaired_cyclegan(
    unpaired: tuple[Path, Path], paired: tuple[Path, Path]
) -> None:
    config, _ = make_config(*paired, steps=2, **TINY)
    assert config.mode.name == "pix2pix"
    assert config.gan_loss == "vanilla" and config.mode.discriminator.in_channels == 6
    config, _ = make_config(*unpaired, steps=2, **TINY)
    assert config.mode.name == "cyclegan" and config.gan_loss == "lsgan"
    assert config.domains == ("photos", "paintings")
    # The override wins over what the names say.
    config, _ = make_config(*paired, mode="cyclegan", steps=2, **TINY)
    assert config.mode.name == "cyclegan"
    with pytest.raises(UsageError, match="pix2pix needs pairs"):
        make_config(*unpaired, mode="pix2pix", steps=2, **TINY)


def test_pairing_needs_most_stems(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, [f"{i}.png" for i in range(10)], (1, 1, 1), 0)
    make_folder(b, [f"{i}.jpg" for i in range(4)] + ["z.png"], (1, 1, 1), 1)
    files_a, files_b = paths.list_images(a), paths.list_images(b)
    pairs = paths.pair_by_stem(files_a, a, files_b, b)
    assert [p[0].stem for p in pairs] == ["0", "1", "2", "3"]  # extensions may differ
    assert not D.is_paired(len(files_a), len(pairs))
    assert D.is_paired(10, 5) and not D.is_paired(0, 0)


def test_holdout_is_a_few_images_and_never_trained_on(unpaired: tuple[Path, Path]) -> None:
    config, found = make_config(*unpaired, steps=2, **TINY)
    assert len(config.holdout_a) == 1 and len(config.holdout_b) == 1
    train_a, held_a = D.split(found.sources_a, Path(config.data_a), config.holdout_a)
    assert [s.a.name for s in held_a] == list(config.holdout_a)
    assert all(s.a.name not in config.holdout_a for s in train_a) and len(train_a) == 11
    # Too small a folder spares none: samples come from training images.
    assert D.choose_holdout([f"{i}" for i in range(9)], seed=0) == []


def test_steps_from_epochs_and_the_lr_schedule(unpaired: tuple[Path, Path]) -> None:
    config, _ = make_config(*unpaired, epochs=3, **TINY)
    assert config.steps == 3 * 11 and config.decay_steps == round(33 * 0.5)
    factors = [lr_factor(s, 10, 4) for s in range(10)]
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert lr_factor(0, 5, 0) == 1.0 and lr_factor(4, 5, 5) == pytest.approx(1 / 6)


def test_device_and_precision_choices_without_a_gpu() -> None:
    none = Hardware(cuda=False, cuda_bf16=False, mps=False, cpu_bf16=False)
    ampere = Hardware(cuda=True, cuda_bf16=True, mps=False, cpu_bf16=False)
    turing = Hardware(cuda=True, cuda_bf16=False, mps=False, cpu_bf16=True)
    assert choose_device("auto", none) == "cpu" and choose_device("auto", ampere) == "cuda"
    with pytest.raises(DeviceError, match="no CUDA"):
        choose_device("cuda", none)
    with pytest.raises(DeviceError, match="no Apple GPU"):
        choose_device("mps", ampere)
    assert choose_precision("auto", "cuda", ampere) == "bf16"
    assert choose_precision("auto", "cuda", turing) == "fp16"  # AMP with a gradient scaler
    assert choose_precision("auto", "cpu", turing) == "bf16"
    assert choose_precision("auto", "cpu", none) == "fp32"
    assert choose_precision("auto", "cpu", turing, small=True) == "fp32"  # GANs on digits
    assert choose_precision("auto", "cuda", ampere, small=True) == "bf16"
    with pytest.raises(DeviceError, match="fp16 autocast is for GPUs"):
        choose_precision("fp16", "cpu", none)


def test_batches_are_a_pure_function_of_the_step(unpaired: tuple[Path, Path]) -> None:
    config, found = make_config(*unpaired, steps=4, **TINY)
    one = build_data(config, found)
    two = build_data(config, found)
    try:
        for step in (3, 0, 2):  # any order, any instance
            x, y = one.batch(step), two.batch(step)
            assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
            assert x["A"].shape == (1, 3, 32, 32) and x["A"].min() >= -1 and x["A"].max() <= 1
        assert not torch.equal(one.batch(0)["A"], one.batch(1)["A"])
    finally:
        one.close()
        two.close()


def test_batch_tensors_are_made_without_torch_threads() -> None:
    """Batches are converted in loader threads: with numpy, the same float32
    values as torch's conversion, and no OpenMP team of the thread's own
    (which would compete with the training step for the cores)."""
    import threading

    values = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1).repeat(3, axis=3)
    out = batches.to_tensor([values[0], values[1], values[2], values[3]])
    expected = torch.from_numpy(values.transpose(0, 3, 1, 2).copy()).float().div_(127.5).sub_(1.0)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, expected)
    if not Path("/proc/self/task").is_dir():
        return
    big = [np.zeros((512, 512, 3), np.uint8)] * 2  # well past torch's parallel grain

    def threads_during(convert: Callable[[], object]) -> int:
        """Threads of this process while a fresh thread that ran ``convert``
        is still alive (an OpenMP team lives as long as its thread)."""
        ran, release = threading.Event(), threading.Event()

        def work() -> None:
            convert()
            ran.set()
            release.wait()

        worker = threading.Thread(target=work)
        worker.start()
        ran.wait()
        count = len(list(Path("/proc/self/task").iterdir()))
        release.set()
        worker.join()
        return count

    alone = threads_during(lambda: None)
    assert threads_during(lambda: batches.to_tensor(big)) <= alone
    if torch.get_num_threads() > 1:  # the check can fail: a torch operation does add threads
        assert threads_during(lambda: torch.zeros(2, 3, 512, 512).div_(127.5)) > alone


def build_data(config: TrainConfig, found: D.Scan) -> batches.TrainingData:
    return D.load_data(config, workers=QUIET.workers, found=found)


def test_aligned_images_are_split_into_a_and_b(tmp_path: Path) -> None:
    folder = tmp_path / "aligned"
    folder.mkdir()
    for i in range(3):
        left = np.full((36, 40, 3), 30, np.uint8)
        right = np.full((36, 40, 3), 220, np.uint8)
        Image.fromarray(np.concatenate([left, right], axis=1)).save(folder / f"{i}.png")
    config, found = make_config(folder, None, aligned=True, steps=2, **TINY)
    assert config.mode.name == "pix2pix" and config.aligned
    data = build_data(config, found)
    try:
        batch = data.batch(0)
        assert batch["A"].max() < -0.7 and batch["B"].min() > 0.7  # dark left, light right
    finally:
        data.close()


def test_bad_files_are_reported_once_and_skipped(
    unpaired: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = unpaired
    (a / "empty.png").write_bytes(b"")
    (a / "text.jpg").write_text("not an image")
    good = (a / "p00.png").read_bytes()
    (a / "cut.png").write_bytes(good[: len(good) // 2])
    config, found = make_config(*unpaired, steps=2, **TINY)
    from styler.log import logger

    # Caught at styler's logger itself: a command run in this process before
    # (another test's) stops it propagating to the root, where caplog listens.
    direct = not logger.propagate
    if direct:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="styler"):
            data = build_data(config, found)
    finally:
        if direct:
            logger.removeHandler(caplog.handler)
    data.close()
    assert isinstance(data, batches.UnpairedData)
    messages = [r.getMessage() for r in caplog.records]
    for name, reason in (
        ("empty.png", "empty file"),
        ("text.jpg", "not an image"),
        ("cut.png", "truncated"),
    ):
        lines = [m for m in messages if f"photos/{name}" in m]
        assert len(lines) == 1 and reason in lines[0], messages
    assert len(data.store_a) + len(data.store_a.bad) == 15 - len(config.holdout_a)


# -- training steps -------------------------------------------------------------------------


@pytest.mark.parametrize("gan_loss", ["lsgan", "vanilla", "hinge", "wgangp"])
def test_every_gan_loss_trains_both_modes(
    tmp_path: Path, unpaired: tuple[Path, Path], paired: tuple[Path, Path], gan_loss: str
) -> None:
    for name, folders in (("cyclegan", unpaired), ("pix2pix", paired)):
        config, found = make_config(*folders, steps=2, gan_loss=gan_loss, **TINY)
        assert config.mode.name == name
        before = {
            k: v.clone()
            for k, v in build_trainer(config, "cpu")
            .nets["D_A" if name == "cyclegan" else "D"]
            .state_dict()
            .items()
        }
        result = train(
            config, tmp_path / f"{name}-{gan_loss}", device="cpu", watch=QUIET, found=found
        )
        assert result.finished and result.step == 2
        records = [
            json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in records] == [1, 2]
        assert all(np.isfinite(v) for r in records for v in r.values())
        after = weights(result.run_dir)
        key = "D_A" if name == "cyclegan" else "D"
        changed = [k for k, v in before.items() if not torch.equal(after[f"net.{key}.{k}"], v)]
        assert changed, "the discriminator did not learn"


def test_bf16_autocast_step_and_batch_norm_cyclegan(
    tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    config, found = make_config(
        *unpaired, steps=2, precision="bf16", norm="batch", lambda_color=2.0, **TINY
    )
    result = train(config, tmp_path / "run", device="cpu", watch=QUIET, found=found)
    assert result.finished
    record = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["cycle_A"]) and record["cycle_A"] > 0
    assert record["color_A"] > 0 and record["color_B"] > 0  # the colour loss is on


def test_color_loss_sees_regional_hue_not_texture_or_brightness() -> None:
    from styler.training.losses import color_loss

    x = torch.rand(1, 3, 32, 32) * 1.6 - 0.8
    shuffled = x[:, :, torch.randperm(32)][:, :, :, torch.randperm(32)]  # same colours, moved
    assert color_loss(x, x) == 0
    noise = torch.randn(1, 3, 32, 32) * 0.05
    assert color_loss(x + noise, x) < 0.02  # fine texture barely counts
    assert color_loss(x + 0.2, x) < 1e-6  # nor does brightness (grey has no chroma)
    red = torch.tensor([0.4, 0.0, 0.0])[None, :, None, None]
    cast = color_loss(x + red, x)  # a colour cast counts in full: |Cb| + |Cr| of red / 2
    assert cast == pytest.approx((0.168736 * 0.4 + 0.5 * 0.4) / 2, rel=1e-4)
    assert color_loss(shuffled, x) > color_loss(x + noise, x)


def test_hue_loss_lets_saturation_and_brightness_change_but_not_hue() -> None:
    """A graded photo (more saturated, brighter) or one muted by half keeps
    its hues and costs next to nothing; the same colours turned (R, G, B ->
    G, B, R) cost much more, and so do the photo greyed and colour added
    where the photo is grey (a fringe along a grey pier); the gradient is
    finite everywhere, grey outputs included."""
    from styler.training.losses import color_loss, hue_loss

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 1.6 - 0.8
    luma = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    grey = luma.expand(-1, 3, -1, -1)
    turned = x[:, [1, 2, 0]]
    cost = hue_loss(turned, x, 32)
    assert cost > 0.1
    for kept in (x, (luma + (x - luma) * 1.6) * 0.9 + 0.05, luma + (x - luma) * 0.5):
        assert hue_loss(kept, x, 32) < 0.05 * cost
    assert hue_loss(grey, x, 32) > 0.2 * cost  # greying is no way out
    muted = luma + (x - luma) * 0.5
    assert hue_loss(muted, x, 32, keep=1.0) > 10 * hue_loss(muted, x, 32)  # keep 1: only more
    assert hue_loss(luma + (x - luma) * 1.6, x, 32, keep=1.0) < 0.05 * cost
    assert color_loss(luma + (x - luma) * 1.6, x, 32) > 0.05  # the colour loss forbids grading
    assert hue_loss(x, grey, 32) > 0.5 * cost  # colour where the photo has none
    for out in (turned, grey):
        out = out.clone().requires_grad_(True)
        hue_loss(out, x, 32).backward()
        assert out.grad is not None and torch.isfinite(out.grad).all()


def test_luma_loss_keeps_regional_brightness_not_colour_or_texture() -> None:
    """A photo recoloured at the same brightness, or its texture shuffled
    inside each cell, costs nothing; a sky made brighter costs its change."""
    from styler.training.losses import luma_loss

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 1.6 - 0.8
    weights = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    luma = (x * weights).sum(1, keepdim=True)
    recoloured = luma + (x - luma)[:, [1, 2, 0]] - ((x - luma)[:, [1, 2, 0]] * weights).sum(1)
    assert luma_loss(recoloured, x, 16) < 1e-5
    cells = x.unfold(2, 4, 4).unfold(3, 4, 4)  # 16 x 16 cells of 4 x 4 pixels
    flipped = cells.flip(-1).flip(-2).permute(0, 1, 2, 4, 3, 5).reshape(1, 3, 64, 64)
    assert luma_loss(flipped, x, 16) < 1e-5
    brighter = x.clone()
    brighter[:, :, :16] += 0.4  # the top quarter
    assert abs(luma_loss(brighter, x, 16).item() - 0.1) < 1e-4
    out = brighter.requires_grad_(True)
    luma_loss(out, x, 16).backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()


def test_finer_colour_cells_see_a_hue_traded_for_a_mix_of_others(tmp_path: Path) -> None:
    """A hue swapped for a checkerboard of two others with the same mean (the
    trade a generator found at 8 cells: orange grass became green with purple
    stalks) is invisible to the colour loss at 8 cells a side and seen at 32;
    --color-cells reaches the loss through make_config and is bounded."""
    from styler.errors import UsageError
    from styler.training.losses import color_loss
    from styler.training.setup import make_config

    x = torch.full((1, 3, 128, 128), 0.0)
    x[:, 0], x[:, 1] = 0.6, 0.1  # orange
    squares = torch.kron(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), torch.ones(4, 4))
    mix = squares.repeat(16, 16)  # 4-pixel squares
    traded = x + torch.stack([mix * 0.5, -mix * 0.5, mix * 0.5])[None]  # purple and green
    assert color_loss(traded, x, cells=8) < 1e-6
    assert color_loss(traded, x, cells=32) > 0.1
    folders = []
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / name / f"{name}.png")
        folders.append(tmp_path / name)
    config, _ = make_config(*folders, mode="fastcut", size=32, steps=1, color_cells=16)
    assert config.mode.color_cells == 16
    with pytest.raises(UsageError, match="--color-cells"):
        make_config(*folders, mode="fastcut", size=32, steps=1, color_cells=64)


def test_resume_gives_exactly_the_uninterrupted_weights(
    tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    config, found = make_config(*unpaired, steps=6, pool_size=2, **TINY)
    full = train(config, tmp_path / "full", device="cpu", watch=QUIET, found=found)
    part = train(
        config,
        tmp_path / "part",
        device="cpu",
        found=found,
        watch=WatchOptions(display="quiet", export=False, workers=1, stop_at=3),
    )
    assert part.interrupted and part.step == 3 and not part.finished
    assert state.latest(tmp_path / "part" / "checkpoints").step == 3  # type: ignore[union-attr]
    again = resume(tmp_path / "part", device="cpu", watch=QUIET)
    assert again.finished and again.step == 6
    a, b = weights(full.run_dir), weights(again.run_dir)
    assert a.keys() == b.keys() and any(k.startswith("extra.pool") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_checkpoints_hold_no_pickle_and_bad_ones_are_refused(
    tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    config, found = make_config(*unpaired, steps=1, **TINY)
    result = train(config, tmp_path / "run", device="cpu", watch=QUIET, found=found)
    path = result.checkpoint
    assert path is not None and path.read_bytes()[8:9] == b"{"  # safetensors JSON header
    bad = tmp_path / "run" / "checkpoints" / state.checkpoint_name(5)
    bad.write_bytes(path.read_bytes()[:1000])  # a newer, damaged one
    with pytest.raises(BadCheckpointError, match="not a readable checkpoint"):
        state.load(bad)
    latest = state.latest(tmp_path / "run" / "checkpoints")
    assert latest is not None and latest.step == 1  # the damaged one is passed over


def test_a_run_folder_is_never_reused(tmp_path: Path, unpaired: tuple[Path, Path]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("keep me")
    config, found = make_config(*unpaired, steps=1, **TINY)
    with pytest.raises(UsageError, match="not a styler run folder: choose another --output"):
        train(config, run, device="cpu", watch=QUIET, found=found)
    assert (run / "mine.txt").read_text() == "keep me"


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_run_folder_and_models_work_with_apply(
    tmp_path: Path, unpaired: tuple[Path, Path], cli: Cli
) -> None:
    a, b = unpaired
    run = tmp_path / "run"
    result = cli(
        "train",
        str(a),
        str(b),
        "-o",
        str(run),
        "--mode",
        "cyclegan",
        "--gen",
        "resnet_2blocks",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--size",
        "32",
        "--steps",
        "4",
        "--sample-every",
        "2",
        "--precision",
        "fp32",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    models = result.stdout.split()
    assert [Path(m).name for m in models] == [
        "photos_to_paintings.onnx",
        "paintings_to_photos.onnx",
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "cyclegan" and config["steps"] == 4
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000000.png",
        "step_0000002.png",
        "step_0000004.png",
    ]
    grid = Image.open(run / "samples" / "step_0000004.png")
    assert grid.width > 3 * 32  # three columns of images
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "lr", "sec_per_step", "G_A", "D_A", "cycle_A", "idt_A"} <= records[-1].keys()
    assert records[-1]["lr"] < records[0]["lr"]  # the decay ran
    html = (run / "report.html").read_text()
    assert "samples/step_0000004.png" in html and "<svg" in html and "cycle_A" in html
    assert (run / "curves.svg").read_text().startswith("<svg")
    assert state.list_checkpoints(run / "checkpoints")[-1][0] == 4
    # The exported model styles an odd-sized image at its own size.
    photo = tmp_path / "in" / "odd.png"
    photo.parent.mkdir()
    Image.fromarray(np.zeros((37, 51, 3), np.uint8)).save(photo)
    applied = cli("apply", str(photo), "-m", models[0], "-o", str(tmp_path / "out"), "-q")
    assert applied.returncode == 0, applied.stderr
    assert Image.open(applied.stdout.strip()).size == (51, 37)
    # styler export RUN_DIR keeps the models already there unless told to
    # replace them (the replacing export: tests/test_safety_pass28.py, slow).
    before = {m: Path(m).read_bytes() for m in models}
    kept = cli("export", str(run))
    assert kept.returncode == 2 and "pass --overwrite" in kept.stderr
    assert all(Path(m).read_bytes() == data for m, data in before.items())


def test_cli_ctrl_c_saves_and_resume_finishes(tmp_path: Path, unpaired: tuple[Path, Path]) -> None:
    a, b = unpaired
    run = tmp_path / "run"
    args = [
        "train",
        str(a),
        str(b),
        "-o",
        str(run),
        "--mode",
        "cyclegan",
        "--gen",
        "resnet_2blocks",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--size",
        "32",
        "--steps",
        "100000",
        "--display",
        "plain",
        "--no-export",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "styler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 3
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Continue with: styler train --resume" in err
    ckpt = state.latest(run / "checkpoints")
    assert ckpt is not None and ckpt.step >= 3
    done = len(metrics.read_text().splitlines())
    assert done == ckpt.step  # every recorded step is in the checkpoint
    # Resume to a shorter total, just past where it stopped.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "styler",
            "train",
            "--resume",
            str(run),
            "--steps",
            str(ckpt.step + 2),
            "-q",
            "--no-export",  # (a run's closing export: test_cli_run_folder_and_models_...)
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # nothing exported, as asked
    assert state.latest(run / "checkpoints").step == ckpt.step + 2  # type: ignore[union-attr]


def test_cli_usage_errors(cli: Cli, tmp_path: Path, unpaired: tuple[Path, Path]) -> None:
    a, b = unpaired
    result = cli("train")
    assert result.returncode == 2 and "two folders" in result.stderr
    result = cli("train", str(a), str(b), "--arch", "dcgan")
    assert result.returncode == 2 and "--arch" in result.stderr
    result = cli("train", str(a), str(tmp_path / "missing"))
    assert result.returncode == 2 and "not a folder of images" in result.stderr
    result = cli("train", str(a), str(b), "--size", "30", "--gen", "resnet_2blocks")
    assert result.returncode == 2 and "multiple of 4" in result.stderr
    result = cli("train", str(a), str(b), "--device", "cuda")
    assert result.returncode == 2 and "CUDA" in result.stderr
    result = cli("train", "--resume", str(tmp_path))
    assert result.returncode == 2 and "not a styler run folder" in result.stderr


# -- several processes --------------------------------------------------------------------------


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_training_keeps_an_inherited_ignored_sigint_and_stops_on_sigterm(
    tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    """Started as a background job of a script (SIGINT ignored), a Ctrl-C
    meant for the script does not stop training; SIGTERM still saves and
    stops it."""
    a, b = unpaired
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "styler", "train", str(a), str(b), "-o", str(run)),
            *("--mode", "cyclegan", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8"),
            *("--size", "32"),
            *("--steps", "100000", "--display", "plain", "--no-export"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        preexec_fn=_ignore_sigint,
    )
    metrics = run / "metrics.jsonl"

    def steps() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and steps() < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    seen = steps()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and steps() < seen + 3:
        time.sleep(0.2)
    assert proc.poll() is None and steps() >= seen + 3  # still training
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpt = state.latest(run / "checkpoints")
    assert ckpt is not None and ckpt.step == steps()


def _free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_two_processes_with_gloo_train_in_step(tmp_path: Path, unpaired: tuple[Path, Path]) -> None:
    """torchrun with 2 CPU processes: gradients are averaged, replicas agree,
    rank 0 alone writes the run folder."""
    a, b = unpaired
    run = tmp_path / "run"
    code = (
        "import sys, torch, torch.distributed as dist\n"
        "from pathlib import Path\n"
        "from styler.training.setup import make_config\n"
        "from styler.training import loop\n"
        "cfg, found = make_config(sys.argv[1], sys.argv[2], generator='resnet_2blocks', ngf=8,"
        " ndf=8, size=32, steps=3)\n"
        "tasks = []\n"
        "real_build, real_shutdown = loop.build_trainer, loop.shutdown\n"
        "def build(*a, **k):\n"
        "    tasks.append(real_build(*a, **k)); return tasks[-1]\n"
        "def shutdown(info):\n"
        "    nets = tasks[0].nets\n"
        "    flat = torch.cat([p.detach().reshape(-1) for n in sorted(nets)"
        " for p in nets[n].parameters()])\n"
        "    other = flat.clone(); dist.broadcast(other, src=0)\n"
        "    same = bool(torch.equal(flat, other))\n"
        "    dist.barrier()\n"
        "    real_shutdown(info)\n"
        "    Path(sys.argv[3] + f'.rank{info.rank}').write_text(f'SAME {same}')\n"
        "loop.build_trainer, loop.shutdown = build, shutdown\n"
        "r = loop.train(cfg, Path(sys.argv[3]), device='cpu', found=found,"
        " watch=loop.WatchOptions(display='quiet', export=False, workers=1))\n"
        "Path(sys.argv[3] + f'.rank{tasks[0].dist.rank}').open('a').write(f' STEP {r.step}')\n"
    )
    script = tmp_path / "ddp.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(script),
            str(a),
            str(b),
            str(run),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert Path(f"{run}.rank{rank}").read_text() == "SAME True STEP 3"
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3  # written once, by rank 0


def test_eval_every_scores_keeps_the_best_and_exports_it(
    tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    a, b = unpaired
    photos = tmp_path / "held"
    make_folder(photos, [f"h{i}.png" for i in range(3)], (0.9, 0.9, 0.9), 7)
    config, found = make_config(a, b, steps=4, **TINY)
    watch = WatchOptions(display="quiet", workers=1, eval_every=2, eval_photos=str(photos))
    result = train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    evals = [json.loads(x) for x in lines if '"eval"' in x]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(
        np.isfinite(e["kid"]) and e["kid_unmodified"] == evals[0]["kid_unmodified"] for e in evals
    )
    # The last step is kept unless the best before it is clearly better
    # (a KID on three photos is noisy).
    from styler.training.scoring import clearly_better

    first, last = evals
    wins = clearly_better((first["kid"], first["kid_std"]), (last["kid"], last["kid_std"]))
    best = state.load(tmp_path / "run/checkpoints/best.safetensors")
    assert best.step == (2 if wins else 4)
    from styler.runtime import Model

    meta = Model.open(result.models[0], device="cpu").meta
    assert meta.source.endswith(f"step {best.step}")
    assert "kid" in (tmp_path / "run/report.html").read_text()


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_cli_residual_generators_and_luma_discriminators(
    cli: Cli, tmp_path: Path, unpaired: tuple[Path, Path]
) -> None:
    a, b = unpaired
    run = tmp_path / "run"
    tiny = ["--mode", "cyclegan", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8"]
    tiny += ["--size", "32"]
    result = cli(
        "train", str(a), str(b), "-o", str(run), *tiny, "--steps", "2",
        "--residual", "--disc-input", "luma", "--lambda-color", "5", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    models = result.stdout.split()
    assert len(models) == 2
    config = json.loads((run / "config.json").read_text())
    assert config["generator"]["residual"] is True and config["disc_input"] == "luma"
    assert config["discriminator"]["in_channels"] == 1
    info = cli("info", models[0], "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["network"]["residual"] is True
    assert "residual" in cli("info", models[0]).stdout
    unet, _ = make_config(a, b, generator="unet_32", residual=True, steps=1)
    assert unet.mode.generator.residual is True  # every generator can start as the identity
    refused = cli("train", str(a), str(b), *tiny, "--disc-input", "hue", "--steps", "1")
    assert refused.returncode == 2 and "--disc-input" in refused.stderr


def test_tensorboard_logging_when_asked(tmp_path: Path, unpaired: tuple[Path, Path]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, found = make_config(*unpaired, steps=2, **TINY)
    watch = WatchOptions(display="quiet", export=False, workers=1, tensorboard=True)
    train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"G_A", "D_A", "cycle_A", "lr"} <= set(scalars)
    assert [e.step for e in events.Scalars("G_A")] == [1, 2]


def test_luma_discriminators_see_brightness_only(
    tmp_path: Path, unpaired: tuple[Path, Path], paired: tuple[Path, Path]
) -> None:
    from styler.training.modes.cyclegan import to_luma

    config, found = make_config(*unpaired, steps=2, disc_input="luma", lambda_color=5.0, **TINY)
    assert config.mode.discriminator.in_channels == 1
    result = train(config, tmp_path / "run", device="cpu", watch=QUIET, found=found)
    assert result.finished
    assert weights(result.run_dir)["net.D_A.model.0.weight"].shape[1] == 1
    # A pure colour change is invisible to them; a brightness change is not.
    x = torch.rand(1, 3, 8, 8)
    swapped = x[:, [2, 1, 0]] * torch.tensor([0.114 / 0.299, 1, 0.299 / 0.114])[None, :, None, None]
    assert torch.allclose(to_luma(swapped), to_luma(x), atol=1e-6)
    assert not torch.allclose(to_luma(x * 0.5), to_luma(x))
    with pytest.raises(UsageError, match="for CycleGAN"):
        make_config(*paired, steps=2, disc_input="luma", **TINY)


@pytest.mark.parametrize(
    ("identity", "expected_calls"),
    [(0.5, ([3, 3], [2, 1, 2, 1])), (0.0, ([2, 2], [1, 1, 1, 1]))],
)
def test_cyclegan_generator_calls_batched_three_or_four_ways_agree(
    monkeypatch: pytest.MonkeyPatch, identity: float, expected_calls: tuple[list[int], ...]
) -> None:
    """The generator step's batching (three calls for small images, four for
    larger) is a speed choice only: same losses and same updated weights,
    with the identity loss and without it. The lists are G_B's batch sizes
    over two steps.

    In float64: batching changes the order of the sums inside the
    convolutions, and in float32 that rounding noise (2^-24 relative) on a
    gradient that is near zero becomes, through Adam's m / sqrt(v), an
    update of up to a whole learning rate whose sign depends on the CPU's
    kernels (8e-4 apart on an AVX2-only CPU, 1e-6 with AVX-512). In float64
    the noise (2^-53, ~1e-17 on such a gradient) is far below Adam's eps
    (1e-8), so an update it sways is under 1e-9 of the learning rate: the
    two ways agree to 1e-9 on any CPU (measured: 2e-15 on both kinds)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _batched_ways_agree(monkeypatch, identity, expected_calls)
    finally:
        torch.set_default_dtype(previous)


def _batched_ways_agree(
    monkeypatch: pytest.MonkeyPatch, identity: float, expected_calls: tuple[list[int], ...]
) -> None:
    from styler.netconfig import discriminator_preset, generator_preset
    from styler.training.distributed import DistInfo
    from styler.training.modes import cyclegan

    config = TrainConfig(
        mode=cyclegan.CycleGanConfig(
            generator=generator_preset("resnet_2blocks", ngf=8),
            discriminator=discriminator_preset("basic", ndf=8, norm="instance"),
            lambda_identity=identity,
        ),
        data_a="A",
        data_b="B",
        size=32,
        load_size=32,
        steps=10,
        decay_steps=5,
        precision="fp32",
    )
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"A": torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1,
         "B": torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1}
        for _ in range(2)
    ]  # fmt: skip
    probe = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    runs = []
    for limit in (10**9, 0):  # three calls, then four
        monkeypatch.setattr(cyclegan, "BATCH_THREE_MAX", limit)
        calls: list[int] = []
        torch.manual_seed(0)
        task = cyclegan.CycleGan(config, "cpu", DistInfo())
        task.train(True)
        task.G_B.register_forward_hook(lambda m, i, o, seen=calls: seen.append(len(i[0])))
        losses = [task.train_step(b, step) for step, b in enumerate(batches)]
        calls = calls[:]  # the training steps' calls, not the probe's
        with torch.no_grad():  # what the networks compute (biases before
            outputs = [task.G_A(probe), task.G_B(probe)]  # instance norm have no say)
        runs.append((calls, losses, outputs))
    (calls3, losses3, out3), (calls4, losses4, out4) = runs
    assert (calls3, calls4) == expected_calls
    for a, b in zip(losses3, losses4, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-12), name
    for a, b in zip(out3, out4, strict=True):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
