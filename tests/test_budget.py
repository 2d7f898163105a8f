"""Runs measured in time (--time) and recipes (--recipe)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from styler.errors import UsageError
from styler.training.budget import (
    CALIBRATION_STEPS,
    Budget,
    format_duration,
    parse_duration,
    time_lr_factor,
)

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from styler.training.loop import WatchOptions, resume, train  # noqa: E402
from styler.training.recipes import RECIPES  # noqa: E402
from styler.training.setup import make_config  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_as_people_write_them() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("1h") == 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 2.5 ") == 2.5
    for bad in ("abc", "0s", "-1h", "1x", "1h junk", "", "nan", "1e9"):
        with pytest.raises(UsageError, match="--time"):
            parse_duration(bad)
    assert [format_duration(s) for s in (3600, 5400, 90, 0)] == ["1h", "1h30m", "1m30s", "0s"]


def test_the_schedule_follows_the_share_of_the_budget_spent() -> None:
    assert time_lr_factor(0.0, 0.5) == 1.0
    assert time_lr_factor(0.49, 0.5) == 1.0
    assert time_lr_factor(0.75, 0.5) == pytest.approx(0.5)
    assert time_lr_factor(1.0, 0.5) == 0.0
    assert time_lr_factor(1.2, 0.5) == 0.0
    assert time_lr_factor(0.99, 0.0) == 1.0
    clock = Clock()
    budget = Budget(100.0, spent=40.0, decay=0.5, clock=clock)
    budget.start(0)
    clock.now = 35.0  # 75 of 100 seconds spent: half-way down the decay
    assert budget.lr_factor() == pytest.approx(0.5)
    assert not budget.over
    clock.now = 60.0
    assert budget.over and budget.lr_factor() == 0.0


def test_the_step_count_is_estimated_from_the_measured_speed_and_revised() -> None:
    clock = Clock()
    budget = Budget(1000.0, clock=clock)
    budget.start(0)
    estimates = {}
    for step in range(1, 1001):
        clock.now += 1.0 if step <= 100 else 0.5  # the machine speeds up
        got = budget.estimate(step, estimates[max(estimates)] if estimates else 10**8)
        if got is not None:
            estimates[step] = got
    first = min(estimates)
    assert first == max(CALIBRATION_STEPS, 20)  # 2% of the budget, 8 steps at least
    assert estimates[first] == 1000  # 1 s a step, 1000 s
    assert len(estimates) == 3  # then at 25% and at 50% of the budget
    later = [estimates[k] for k in sorted(estimates)[1:]]
    assert later[0] > 1000 and later[1] > later[0]  # faster steps: more of them


def _folders(base: Path) -> tuple[Path, Path]:
    rng = torch.Generator().manual_seed(0)
    a, b = base / "photos", base / "paintings"
    for folder, stem in ((a, "photo"), (b, "painting")):  # unpaired: other names
        folder.mkdir()
        for i in range(4):
            pixels = (torch.rand(40, 48, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{stem}{i}.png")
    return a, b


TINY = {"generator": "resnet_2blocks", "ngf": 8, "ndf": 8, "size": 32, "precision": "fp32"}


def _stopped_at_the_first_check_past(budget: float, records: list[dict], wall: float) -> None:
    """The budget is checked after every step and after the upkeep between
    steps: the run went on while its clock was short of the budget, and
    stopped at the first check that found it spent (after a step, or after
    the upkeep that followed it: the checkpoint written by that upkeep holds
    the clock before the check, so the run's result says). (Structural, not timed:
    a margin in seconds failed in CI when a busy machine made the last
    upkeep 0.25 s long, on dfab31c.)"""
    assert all(r["wall"] < budget for r in records[:-1])  # not stopped early...
    assert wall >= budget and wall >= records[-1]["wall"] - 1e-6  # ... and only when spent


def test_a_time_budget_stops_on_time_and_resume_keeps_what_is_left(tmp_path: Path) -> None:
    a, b = _folders(tmp_path)
    config, found = make_config(a, b, mode="fastcut", time=3.0, **TINY)
    assert config.time_budget == 3.0
    watch = WatchOptions(display="quiet", workers=1, export=False, checkpoint_every=5)
    run = tmp_path / "run"
    result = train(config, run, device="cpu", watch=watch, found=found)
    assert result.finished and not result.interrupted
    saved = json.loads((run / "config.json").read_text())
    assert saved["time_budget"] == 3.0 and saved["steps"] == result.step  # the count it ran
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    from styler.training import state

    _stopped_at_the_first_check_past(3.0, records, result.clock)
    # The rate follows the clock: the last step's rate is at most what the
    # schedule allows at the training time before it (the clock, which also
    # counts upkeep, is further on). On an idle machine that is near zero; on
    # a loaded one, whose few slow steps end before the decay, it is still
    # checked, and no step's rate is above the one before.
    from styler.training.budget import time_lr_factor

    lrs = [r["lr"] for r in records]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(lrs))
    before_last = records[-2]["time"] / 3.0 if len(records) > 1 else 0.0
    allowed = records[0]["lr"] * time_lr_factor(before_last, config.decay_share)
    assert records[-1]["lr"] <= allowed + 1e-12
    if before_last >= 0.95:  # the usual case: the rate decayed to (nearly) zero
        assert records[-1]["lr"] < 0.25 * records[0]["lr"]

    # A run stopped half-way spends only the rest of its budget when resumed
    # (a budget that two steps cannot use up, even on a loaded machine).
    config, found = make_config(a, b, mode="fastcut", time=8.0, **TINY)
    half = WatchOptions(display="quiet", workers=1, export=False, stop_at=2)
    first = train(config, tmp_path / "run2", device="cpu", watch=half, found=found)
    assert first.interrupted
    spent = state.load(first.checkpoint).header["info"]["wall"]
    again = resume(tmp_path / "run2", device="cpu", watch=watch)
    total = again.clock
    assert again.finished and spent < total
    both = [json.loads(x) for x in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in both] == list(range(1, again.step + 1))
    assert both[2]["wall"] > spent  # the resumed clock goes on from what was spent
    _stopped_at_the_first_check_past(8.0, both, total)
    with pytest.raises(UsageError, match="time budget"):
        resume(tmp_path / "run2", device="cpu", watch=watch, steps=100)


def test_recipes_write_their_settings_and_the_users_flags_win(tmp_path: Path) -> None:
    a, b = _folders(tmp_path)
    config, _ = make_config(a, b, recipe="reference")
    published = {
        "mode": "cyclegan",
        "size": 256,
        "load_size": 286,
        "batch_size": 1,
        "lr": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "gan_loss": "lsgan",
        "lambda_cycle": 10.0,
        "lambda_identity": 0.5,
        "pool_size": 50,
        "precision": "fp32",
    }
    written = config.to_dict()
    assert {k: written[k] for k in published} == published
    # 200 epochs, the learning rate decaying over the last 100.
    assert config.steps % 200 == 0 and config.decay_steps * 2 == config.steps
    assert written["generator"]["n_blocks"] == 9 and written["generator"]["ngf"] == 64
    assert written["discriminator"]["n_layers"] == 3 and written["extra"]["recipe"] == "reference"

    fast, _ = make_config(a, b, recipe="auto", size=64)  # unpaired, no mode: the default
    assert fast.extra["recipe"] == "fast" and fast.mode.name == "fastcut"
    assert fast.size == 64 and fast.time_budget == RECIPES["fast"].time  # the user's size
    steps, _ = make_config(a, b, recipe="auto", steps=10)  # a length given: the recipe's is not
    assert steps.steps == 10 and not steps.time_budget
    plain, _ = make_config(a, b, recipe="auto", mode="cyclegan")  # a mode asked for: no recipe
    assert "recipe" not in plain.extra and plain.mode.name == "cyclegan"
    # The shipped model's settings, by name: its card's command is `--recipe painting`.
    painting, _ = make_config(a, b, recipe="painting", size=64)
    shipped = painting.to_dict()
    assert painting.mode.name == "fastcut" and painting.time_budget == 3600.0
    assert shipped["generator"]["ngf"] == 16 and not shipped["generator"]["residual"]
    assert shipped["load_size"] == 512 and shipped["size"] == 64  # the user's size wins
    assert painting.mode.lambda_style == 20.0 and painting.mode.color_cells == 32
    assert shipped["lambda_color"] == 30.0 and shipped["projected"] and shipped["augment"]
    as_trained, _ = make_config(  # the flags the shipped model was trained with
        a, b, recipe="fast", residual=False, ngf=16, lambda_style=20.0, lambda_color=30.0,
        color_cells=32, load_size=512, size=64,
    )  # fmt: skip
    trained = as_trained.to_dict()
    assert trained.pop("extra") == {"recipe": "fast"}
    assert shipped.pop("extra") == {"recipe": "painting"} and trained == shipped
    # `--recipe brush` is the fast recipe with the flags its known-answer runs
    # were measured with (bench/recipes.py run fast -x color_mlp=32 ...).
    brush, _ = make_config(a, b, recipe="brush", size=64)
    measured, _ = make_config(
        a, b, recipe="fast", size=64, time=1800.0, color_mlp=32, color_disc=True,
        color_judge="projected", smooth=16, lr_paths=10.0,
    )  # fmt: skip
    assert brush.mode.generator.smooth == 16 and brush.mode.lr_paths == 10.0
    brushed, fast = brush.to_dict(), measured.to_dict()
    assert brushed.pop("extra") == {"recipe": "brush"} and fast.pop("extra") == {"recipe": "fast"}
    assert brushed == fast
    with pytest.raises(UsageError, match="--recipe"):
        make_config(a, b, recipe="nonsense")


def test_styler_train_without_a_mode_takes_the_fast_recipe_and_says_so(
    tmp_path: Path, cli: object
) -> None:
    a, b = _folders(tmp_path)
    run = tmp_path / "run"
    small = ["--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8", "--size", "32"]
    result = cli(  # type: ignore[operator]
        "train", str(a), str(b), "-o", str(run), *small, "--time", "2s", "--display", "plain"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("styler: recipe fast (the default for unpaired folders; ")
    assert "--recipe reference" in lines[0] and "FastCUT" in lines[0]
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "fastcut" and config["extra"]["recipe"] == "fast"
    assert config["time_budget"] == 2.0 and config["size"] == 32  # the user's flags win
    assert config["generator"]["residual"] and config["projected"] and config["augment"]
    (model,) = result.stdout.split()
    assert Path(model).name == "photos_to_paintings.onnx"  # one-sided: one model


def test_a_time_budget_scores_the_held_out_photos_and_keeps_the_best(tmp_path: Path) -> None:
    """Without --eval-every, a run with a time budget and held-out photos
    scores itself about ten times and at its end, and exports the best
    checkpoint (the last unless an earlier one is clearly better)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from styler.runtime import Model
    from styler.training import state
    from styler.training.scoring import clearly_better

    a, b = _folders(tmp_path)
    rng = torch.Generator().manual_seed(1)
    for i in range(4, 20):  # 20 photos: 2 held out
        pixels = (torch.rand(40, 48, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(a / f"photo{i}.png")
    config, found = make_config(a, b, mode="fastcut", time=4.0, **TINY)
    assert len(config.holdout_a) == 2
    watch = WatchOptions(display="quiet", workers=1)
    result = train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(x) for x in lines if '"eval"' in x]
    # About ten scores a run, the last at its end (a loaded machine's run of a
    # few slow steps may have room for the last one only).
    assert evals[-1]["step"] == result.step and (len(evals) >= 2 or result.step < 5)
    # The best kept before the end is the lowest score (the first of equals);
    # the end's checkpoint replaces it unless that one is clearly better
    # (judged with both scores' spreads: another earlier score may be
    # clearly better while the lowest, noisier one is not, and only the
    # lowest was kept).
    final = (evals[-1]["kid"], evals[-1]["kid_std"])
    lowest = min(evals[:-1], key=lambda e: e["kid"], default=None)
    kept_lowest = (
        lowest is not None
        and lowest["kid"] <= final[0]
        and clearly_better((lowest["kid"], lowest["kid_std"]), final)
    )
    best = state.load(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert best.step == (lowest["step"] if kept_lowest and lowest else result.step)
    meta = Model.open(result.models[0], device="cpu").meta
    assert meta.source.endswith(f"step {best.step}")
