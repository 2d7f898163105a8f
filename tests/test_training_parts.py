"""The parts of a training run on their own, without a training loop: the
config and its JSON (old run folders included), the run folder, when
checkpoints are due, the best checkpoint, the export, and the CLI's
defaults, which must be the configs'."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from styler.errors import BadCheckpointError, UsageError  # noqa: E402
from styler.netconfig import discriminator_preset, generator_preset  # noqa: E402
from styler.training import state  # noqa: E402
from styler.training.checkpointing import (  # noqa: E402
    MIN_CHECKPOINT_SECONDS,
    BestKeeper,
    Checkpointer,
)
from styler.training.config import TrainConfig  # noqa: E402
from styler.training.modes import MODES, build_trainer  # noqa: E402
from styler.training.modes.cut import CutConfig, FastCutConfig  # noqa: E402
from styler.training.modes.cyclegan import CycleGanConfig  # noqa: E402
from styler.training.modes.gan import GanConfig  # noqa: E402
from styler.training.modes.pix2pix import Pix2PixConfig  # noqa: E402
from styler.training.run import RunFolder  # noqa: E402
from styler.training.upkeep import KEEP_CHECKPOINTS  # noqa: E402

OLD = Path(__file__).parent / "fixtures" / "config_v1"
TRAINING = Path(__file__).parent.parent / "styler" / "training"


def tiny_cyclegan(**changes: object) -> TrainConfig:
    mode = CycleGanConfig(
        generator=generator_preset("resnet_2blocks", ngf=4),
        discriminator=discriminator_preset("n_layers_2", ndf=4, norm="instance"),
    )  # (the basic discriminator needs crops of 24 px)
    config = TrainConfig(
        mode=mode, data_a="A", data_b="B", size=16, load_size=16, steps=10, decay_steps=5
    )
    return dataclasses.replace(config, **changes)


# -- the config -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cyclegan", "pix2pix", "gan"])
def test_config_json_written_before_modes_had_their_own_configs_still_reads(name: str) -> None:
    """config.json files of styler before this layout held every mode's
    fields; each mode reads its own and passes over the others', and writes
    the same values back."""
    old = json.loads((OLD / f"{name}.json").read_text())
    config = TrainConfig.from_json(json.dumps(old), "config.json")
    assert config.mode.name == name and type(config.mode) is MODES[name].config
    new = json.loads(json.dumps(config.to_dict()))
    # Network fields added since (a U-Net's ``residual``, a ResNet's ``color_mlp``,
    # ``detail`` and ``smooth``) are written at their defaults.
    for net in ("generator", "discriminator"):
        if net in old:
            added = set(new[net]) - set(old[net])
            assert added <= {"residual", "color_mlp", "detail", "smooth"} and not any(
                new[net][k] for k in added
            )
            new[net] = {k: v for k, v in new[net].items() if k not in added}
    # So are the shared fields added since (DiffAugment, the time budget).
    added = set(new) - set(old)
    assert added <= {"augment", "augment_color", "time_budget"}
    assert not any(new[k] for k in added)
    new = {k: v for k, v in new.items() if k not in added}
    assert new == {k: v for k, v in old.items() if k in new}
    dropped = set(old) - set(new)
    assert dropped <= {"lambda_l1", "classes", "lambda_cycle", "lambda_identity"} | {
        "lambda_color",
        "disc_input",
        "pool_size",
    }
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(BadCheckpointError, match="unknown fields wobble"):
        TrainConfig.from_dict({**old, "wobble": 1})
    with pytest.raises(BadCheckpointError, match="unknown mode"):
        TrainConfig.from_dict({**old, "mode": "styleganxl"})


def test_a_config_whose_networks_do_not_fit_its_mode_is_refused() -> None:
    gan = json.loads((OLD / "gan.json").read_text())
    cyclegan = json.loads((OLD / "cyclegan.json").read_text())
    with pytest.raises(BadCheckpointError, match="generator from noise"):
        TrainConfig.from_dict({**gan, "generator": cyclegan["generator"]})
    with pytest.raises(BadCheckpointError, match="image-to-image generator"):
        TrainConfig.from_dict({**cyclegan, "discriminator": gan["discriminator"]})


def test_each_mode_has_its_own_fields_and_defaults() -> None:
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    for mode in MODES.values():
        own = {f.name for f in dataclasses.fields(mode.config)}
        assert not own & shared, mode  # one flat JSON object holds both
        assert set(mode.config.overrides) <= shared
    assert CycleGanConfig.lambda_cycle == 10.0 and CycleGanConfig.pool_size == 50
    assert Pix2PixConfig.lambda_l1 == 100.0 and Pix2PixConfig.overrides["gan_loss"] == "vanilla"
    assert GanConfig.overrides == {"batch_size": 64, "flip": False, "gan_loss": "vanilla"}
    with pytest.raises(UsageError, match="--pool-size"):
        tiny_cyclegan(mode=dataclasses.replace(tiny_cyclegan().mode, pool_size=-1))
    with pytest.raises(UsageError, match="--lr must be positive"):
        tiny_cyclegan(lr=0.0)


def test_flags_a_mode_does_not_take_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    from styler.training.setup import make_config

    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), i * 40).save(folder / f"{i}.png")
    with pytest.raises(UsageError, match="--lambda-cycle is for CycleGAN, not GAN"):
        make_config(folder, lambda_cycle=5.0)
    config, _ = make_config(folder, lambda_cycle=None, steps=1)  # None: not given
    assert config.mode.name == "gan"


def test_train_help_shows_the_configs_defaults() -> None:
    """The CLI's options default to 'not given'; what their help says is the
    default must be what the configs then use."""
    import typer
    from typer.core import TyperGroup

    from styler.cli import app
    from styler.netconfig import PatchDiscriminatorConfig, ResnetGeneratorConfig
    from styler.training.loop import WatchOptions

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    command = group.commands["train"]
    helps = {p.name: p.help or "" for p in command.params}
    expected = {
        "lr": TrainConfig.lr,
        "beta1": TrainConfig.beta1,
        "seed": TrainConfig.seed,
        "gan_loss": TrainConfig.gan_loss,
        "lambda_cycle": CycleGanConfig.lambda_cycle,
        "lambda_identity": CycleGanConfig.lambda_identity,
        "lambda_color": CycleGanConfig.lambda_color,
        "disc_input": CycleGanConfig.disc_input,
        "pool_size": CycleGanConfig.pool_size,
        "lambda_l1": Pix2PixConfig.lambda_l1,
        "ngf": ResnetGeneratorConfig.ngf,
        "ndf": PatchDiscriminatorConfig.ndf,
        "upsample": ResnetGeneratorConfig.upsample,
        "checkpoint_minutes": WatchOptions.checkpoint_minutes,
        "keep_checkpoints": KEEP_CHECKPOINTS,
        "display": WatchOptions.display,
        "lambda_nce": CutConfig.lambda_nce,
        "lambda_content": CutConfig.lambda_content,
        "lambda_style": CutConfig.lambda_style,
        "lambda_hue": CutConfig.lambda_hue,
        "ema": CutConfig.ema,
    }
    for name, value in expected.items():
        shown = re.search(r"\[default: ([^;\]]+)", helps[name])
        assert shown is not None and shown.group(1) == str(value), (name, helps[name])
    for param in command.params:
        assert param.default in (None, False, "auto"), param.name  # no second default
    assert "vanilla for pix2pix" in helps["gan_loss"]
    assert f"fastcut: {FastCutConfig.lambda_nce}" in helps["lambda_nce"]
    assert Pix2PixConfig.overrides["gan_loss"] == GanConfig.overrides["gan_loss"] == "vanilla"


def test_a_run_folder_with_the_old_config_shape_resumes(tmp_path: Path) -> None:
    """A run begun before each mode had its own config (config.json and the
    checkpoint's header hold every mode's fields) resumes and finishes."""
    import numpy as np
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    from styler.training.loop import WatchOptions, resume, train
    from styler.training.setup import make_config

    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(4):
            pixels = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / f"{folder}{i}.png")
    tiny = {"generator": "resnet_2blocks", "ngf": 4, "ndf": 4, "size": 32}
    config, found = make_config(tmp_path / "a", tmp_path / "b", steps=3, **tiny)
    run = RunFolder(tmp_path / "run")
    quiet = WatchOptions(display="quiet", export=False, workers=1)
    train(config, run.root, device="cpu", watch=dataclasses.replace(quiet, stop_at=2), found=found)
    others = {"lambda_l1": 100.0, "classes": []}  # what the old format added for CycleGAN
    run.config.write_text(json.dumps({**json.loads(run.config.read_text()), **others}))
    ckpt = state.list_checkpoints(run.checkpoints)[-1][1]
    with safe_open(str(ckpt), framework="pt") as f:
        header = json.loads(f.metadata()[state.HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    header["config"].update(others)
    save_file(tensors, str(ckpt), metadata={state.HEADER_KEY: json.dumps(header)})
    result = resume(run.root, device="cpu", watch=quiet)
    assert result.finished and result.step == 3
    assert run.read_config() == config


# -- the run folder ---------------------------------------------------------------------


def test_run_folder(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    config = tiny_cyclegan()
    run.create(config)
    run.unlock()
    assert run.read_config() == config
    run.check_new()  # no checkpoint yet: a new run may start afresh here
    (run.samples / "mine.png").write_bytes(b"the user's")
    with pytest.raises(UsageError, match="choose another --output"):  # no checkpoint to resume
        run.check_new()
    before = run.config.stat().st_mtime_ns
    run.update_config(config)  # unchanged: not rewritten
    assert run.config.stat().st_mtime_ns == before
    longer = dataclasses.replace(config, steps=20)
    run.update_config(longer)
    assert run.read_config() == longer
    run.metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + "{cut")
    run.truncate_metrics(3)
    assert [json.loads(x)["step"] for x in run.metrics.read_text().splitlines()] == [1, 2, 3]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run.checkpoints / f".styler-{dead.pid}-a1b2c3d4.part"
    stale.write_bytes(b"half")  # what a kill mid-write leaves
    run.remove_stale()
    assert not stale.exists()
    with pytest.raises(UsageError, match="not a styler run folder"):
        RunFolder(tmp_path).read_config()


# -- checkpoints ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_checkpoints_are_due_by_steps_and_by_time(tmp_path: Path) -> None:
    clock = Clock()
    # Every 5 steps, but (not asked for by step count) at least a minute apart.
    every = Checkpointer(tmp_path, every=5, minutes=10, clock=clock)
    assert not every.due(5)  # too soon after the start
    clock.now += MIN_CHECKPOINT_SECONDS
    assert every.due(5) and not every.due(6)
    clock.now += 10 * 60 + 1  # ten minutes: due whatever the step
    assert every.due(7)
    # --checkpoint-every: every 5 steps, however fast.
    asked = Checkpointer(tmp_path, every=5, by_steps=True, clock=clock)
    assert asked.due(5) and asked.due(10) and not asked.due(11)


def test_checkpointer_saves_keeps_the_newest_and_writes_the_last_once(tmp_path: Path) -> None:
    clock = Clock()
    trainer = build_trainer(tiny_cyclegan(), "cpu")
    keeper = Checkpointer(tmp_path, every=1, by_steps=True, keep=2, clock=clock)
    for step in (1, 2, 3):
        keeper.save(trainer, step, {"seconds": float(step)})
        clock.now += 1
    assert [s for s, _ in state.list_checkpoints(tmp_path)] == [2, 3]
    assert keeper.last == clock.now - 1 and keeper.saved == 3
    assert keeper.save_last(trainer, 3, {}) == keeper.path  # step 3 is saved already
    assert state.load(keeper.save_last(trainer, 4, {"seconds": 4.0})).step == 4
    loaded = state.load(tmp_path / state.checkpoint_name(4))
    assert loaded.header["info"] == {"seconds": 4.0} and loaded.config == trainer.config


def test_best_keeper_keeps_the_lowest_score_across_a_resume(tmp_path: Path) -> None:
    trainer = build_trainer(tiny_cyclegan(), "cpu")
    path = tmp_path / "best.safetensors"
    best = BestKeeper(path)
    assert best.best == float("inf")
    assert best.offer(trainer, 2, {"seconds": 1.0, "kid": 0.5, "kid_std": 0.1})
    assert not best.offer(trainer, 4, {"seconds": 2.0, "kid": 0.7, "kid_std": 0.1})
    assert not best.offer(trainer, 5, {"seconds": 2.0, "kid": float("nan"), "kid_std": 0.1})
    assert best.offer(trainer, 6, {"seconds": 3.0, "kid": 0.25, "kid_std": 0.1})
    again = BestKeeper(path)  # a resumed run knows what to beat, and its spread
    assert (again.best, again.best_std) == (0.25, 0.1) and state.load(path).step == 6
    # keep() saves whatever the score.
    assert again.keep(trainer, 8, {"seconds": 4.0, "kid": 0.3, "kid_std": 0.05})
    assert (again.best, again.best_std) == (0.3, 0.05) and state.load(path).step == 8
    path.write_bytes(b"damaged")
    assert BestKeeper(path).best == float("inf")


def test_a_best_checkpoint_of_another_run_is_not_what_the_run_must_beat(tmp_path: Path) -> None:
    """A best.safetensors copied in from another run (another config) with a
    low score kept this run's better checkpoints from being saved as best;
    the export then passed over it and the run's best was lost."""
    import dataclasses

    trainer = build_trainer(tiny_cyclegan(), "cpu")
    other = dataclasses.replace(trainer.config, lr=trainer.config.lr / 2)
    path = tmp_path / "best.safetensors"
    BestKeeper(path).offer(trainer, 2, {"seconds": 1.0, "kid": 0.01, "kid_std": 0.0})
    assert BestKeeper(path, trainer.config).best == 0.01  # its own run's: kept
    foreign = BestKeeper(path, other)
    assert foreign.best == float("inf")
    assert foreign.offer(trainer, 4, {"seconds": 2.0, "kid": 0.5, "kid_std": 0.1})
    assert state.load(path).step == 4


def test_an_earlier_best_replaces_the_last_only_when_clearly_better() -> None:
    from styler.training.scoring import CLEARLY, clearly_better

    assert CLEARLY == 2.0
    # The difference against twice the combined spread, hypot(0.03, 0.04) = 0.05.
    assert clearly_better((0.10, 0.03), (0.2001, 0.04))
    assert not clearly_better((0.10, 0.03), (0.1999, 0.04))
    assert not clearly_better((0.30, 0.0), (0.20, 0.0))  # worse is never better
    assert clearly_better((0.10, 0.0), (0.11, 0.0))  # exact scores: any gain counts
    assert not clearly_better((float("inf"), 0.0), (0.5, 0.1))  # no best yet


# -- the export ---------------------------------------------------------------------------


def test_export_writes_each_generator_with_its_metadata(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from styler.runtime import Model
    from styler.training.export import export_trainer

    mode = Pix2PixConfig(
        generator=generator_preset("unet_32", ngf=4, norm="batch", dropout=True),
        discriminator=discriminator_preset("basic", in_channels=6, ndf=4, norm="batch"),
    )
    config = TrainConfig(
        mode=mode, data_a="edges", data_b="shoes", domains=("edges", "shoes"), size=32
    )
    trainer = build_trainer(config, "cpu")
    trainer.train(False)
    results = export_trainer(trainer, config, tmp_path / "run", 7)
    assert [r.path.name for r in results] == ["edges_to_shoes.onnx"]
    meta = Model.open(results[0].path, device="cpu").meta
    assert meta.direction == "AtoB" and meta.domains == ("edges", "shoes")
    assert meta.source == "styler train run run, step 7" and meta.train_size == 32
    assert meta.description.startswith("pix2pix generator edges -> shoes")


# -- size --------------------------------------------------------------------------------


def test_training_functions_and_modules_stay_short() -> None:
    """A newcomer reads styler/training/ in an hour: no function over about
    60 lines, no module over about 400."""
    for path in sorted(TRAINING.rglob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) <= 400, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} has {length} lines"
