"""Reliability, round three, the training side: what a second hostile review
found in ``styler train``, ``--resume`` and ``styler export RUN_DIR``.

Each case runs through the real CLI on real files (docs/RELIABILITY.md lists
them), most as calls of the CLI's ``main()`` in one subprocess per test
(``batch`` of test_safety_training) with 8 GB of address space. The runs are
tiny; one FastCUT run (one generator) is copied per case (its exports,
the costly part of these tests, make one model).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_safety_training
from test_safety_training import (
    ONE,
    QUIET,
    TINY,
    Outcome,
    _ckpt,
    _copy,
    _forge,
    _set,
    _steps,
    batch,
)

pytest.importorskip("torch")
#: The training side of the reliability suite is heavier: run by pytest -m slow (README).
pytestmark = pytest.mark.slow

#: The fixture of six images in A and six in B.
data = test_safety_training.data

#: A FastCUT run: one generator, so one model to export.
FAST = ["--mode", "fastcut", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8"]
FAST += ["--size", "32", "--workers", "1"]
EVAL = ["--eval-every", "1"]
KEEP = ["--checkpoint-every", "1", "--workers", "1", "--display", "quiet"]


@pytest.fixture(scope="module")
def base_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished three-step FastCUT run, checkpoints after steps 1, 2, 3."""
    run = tmp_path_factory.mktemp("base") / "run"
    (out,) = batch(["train", *data, "-o", run, *FAST, "--steps", "3", *KEEP, "--no-export"])
    assert out.code == 0 and not out.lines, out.lines
    assert _steps(run) == [1, 2, 3]
    return run


#: Domain names of 100 bytes each (25 letters of 4 bytes): a model name of 209 bytes.
LONG_A, LONG_B = "\U00020000" * 25, "\U00020001" * 25
#: The outcomes of the shared batch: case name -> (its folder, its outcome).
Shared = dict[str, tuple[Path, Outcome]]
#: A case of the shared batch: what it needs made in its folder, and its command line.
Case = Callable[[Path, Path, tuple[Path, Path]], list[Any]]


@pytest.fixture(scope="module")
def shared(
    data: tuple[Path, Path], base_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    """The cases of :data:`CASES`, each in a folder of its own (most a copy
    of the base run with one thing wrong), run in one process (one start of
    Python and torch for all): name -> (its folder, its outcome)."""
    root = tmp_path_factory.mktemp("shared")
    # A 9 GB sparse file reads at memory speed from tmpfs (elsewhere its
    # holes are zero-filled page by page: seconds a GB).
    shm = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else root
    folders = {name: (root, shm)[name == "huge_metrics"] / name for name in CASES}
    try:
        argvs = [case(folders[name], base_run, data) for name, case in CASES.items()]
        fd = os.open(folders["locked"], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running styler train holds it
        try:
            outcomes = batch(*argvs, cwd=folders["long_domains"], strict=False)
        finally:
            os.close(fd)
        yield {name: (folders[name], out) for name, out in zip(CASES, outcomes, strict=True)}
    finally:
        if shm != root:
            shutil.rmtree(shm, ignore_errors=True)


def _resume(steps: int, *more: str) -> list[Any]:
    return ["--steps", str(steps), *KEEP, *more]


def _renamed(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A copy of step 1 named step_9."""
    shutil.copy(_ckpt(_copy(base, run), 1), _ckpt(run, 9))
    return ["train", "--resume", run, *_resume(5, "--keep-checkpoints", "2", "--no-export")]


def _poisoned(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A NaN in the newest checkpoint (its header valid)."""
    _poison(_copy(base, run), 3)
    return ["train", "--resume", run, *_resume(4, "--keep-checkpoints", "2", "--no-export")]


def _damaged_best(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A damaged best.safetensors, and long domain names."""
    _forge(_copy(base, run), _set("config", "domains", value=[LONG_A, LONG_B]))
    (run / "checkpoints" / "best.safetensors").write_bytes(_ckpt(run, 2).read_bytes()[:1000])
    return ["train", "--resume", run, *_resume(4)]


def _foreign_best(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """The best of another run (its lr differs), and a NaN in the newest checkpoint."""
    other = _forge(_copy(base, run.parent / "other"), _set("config", "lr", value=1e-3), False)
    shutil.copy(_ckpt(other, 1), _copy(base, run) / "checkpoints" / "best.safetensors")
    _poison(run, 3)
    return ["export", run]


def _huge_metrics(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A 9 GB metrics.jsonl (sparse: the records, then a 9 GB line), a
    temporary file a killed writer left in samples/, and a user's file
    named alike."""
    os.truncate(_copy(base, run) / "metrics.jsonl", 9 * 2**30)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / "samples" / f".styler-{dead.pid}-a1b2c3d4.part").write_bytes(b"half a png")
    (run / "samples" / ".notes.2024.part").write_bytes(b"the user's")
    return ["train", "--resume", run, *_resume(4, "--no-export")]


def _long_domains(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """Folders named '-' + 40 four-byte letters and 40 others; no -o (the
    batch runs in this folder)."""
    a = shutil.copytree(data[0], folder / ("-" + "\U00020000" * 40))
    b = shutil.copytree(data[1], folder / ("\U00020001" * 40))
    return ["train", a, b, *TINY, "--steps", "1", *QUIET]


def _longer_domains(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A config naming a domain of 124 bytes."""
    _forge(_copy(base, run), _set("config", "domains", value=["\U00020000" * 31, "B"]))
    return ["train", "--resume", run, "--steps", "4"]


def _resume_flags(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    flags = ["--lr", "5", "--beta1", "7", "--size", "99999", "--ngf", "0"]
    return ["train", "--resume", _copy(base, run), *flags, "--mode", "pix2pix", "--epochs", "3"]


def _eval_flag(flag: str, every: bool = True) -> Case:
    def case(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        value = data[0] if not every else run.parent / "nonexistent"
        return ["train", *data, "-o", run, *TINY, *(EVAL if every else []), flag, value, *ONE]

    return case


def _locked(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    return ["train", "--resume", _copy(base, run), "--steps", "4", "-q"]


def _inside_data(first: bool) -> Case:
    """`styler train cA cB -o cA/run`, and its resume; cB holds another run
    folder (used or not) and a folder of images that is not one."""

    def case(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        ca, cb = folder.parent / "cA", folder.parent / "cB"
        verbose = ["-v", "train"]
        if not first:
            return [*verbose, "--resume", ca / "run", "--steps", "2", *KEEP, "--no-export"]
        shutil.copytree(data[0], ca)
        shutil.copytree(data[1], cb)
        shutil.copytree(data[0], cb / "images")  # not a run folder: used
        (cb / "oldrun" / "checkpoints").mkdir(parents=True)
        (cb / "oldrun" / "config.json").write_text("{}")
        shutil.copy(ca / "A0.png", cb / "oldrun" / "sample.png")
        return [*verbose, ca, cb, "-o", ca / "run", *TINY, "--steps", "1", *KEEP, "--no-export"]

    return case


CASES: dict[str, Case] = {
    "renamed": _renamed,
    "poisoned": _poisoned,
    "damaged_best": _damaged_best,
    "foreign_best": _foreign_best,
    "huge_metrics": _huge_metrics,
    "long_domains": _long_domains,
    "longer_domains": _longer_domains,
    "resume_flags": _resume_flags,
    "eval_photos": _eval_flag("--eval-photos"),
    "eval_reference": _eval_flag("--eval-reference"),
    "eval_photos_alone": _eval_flag("--eval-photos", every=False),
    "locked": _locked,
    # Last: -v leaves the log verbose.
    "inside_data": _inside_data(first=True),
    "inside_data_resumed": _inside_data(first=False),
}


def _contents(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _metrics_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _warnings(lines: list[str], *needles: str) -> None:
    """``lines`` are one warning each holding one of ``needles``, in order."""
    assert len(lines) == len(needles), lines
    for line, needle in zip(lines, needles, strict=True):
        assert line.startswith("styler: ") and needle in line, (needle, line)


def _poison(run: Path, step: int) -> None:
    """Put a NaN into a generator weight of the checkpoint of ``step`` (its
    header stays valid)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = _ckpt(run, step)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    name = next(k for k in tensors if k.startswith("net.G.") and k.endswith("weight"))
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata=meta)


# -- N2. a projected discriminator; a run that failed before its first checkpoint ------------


def test_projected_discriminators_and_a_run_folder_left_by_a_failed_start(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    """CycleGAN trains with --disc projected; pix2pix refuses it in one line
    (its discriminator sees 6-channel pairs). A run that stopped before its
    first checkpoint leaves a folder of styler's files only: the same
    command then starts afresh there (said in one line)."""
    a, b = data
    pairs_a, pairs_b = shutil.copytree(a, tmp_path / "PA"), shutil.copytree(a, tmp_path / "PB")
    failed, projected, p2p = tmp_path / "failed", tmp_path / "projected", tmp_path / "p2p"
    luma = ["--disc", "projected", "--disc-input", "luma"]
    pix2pix = ["--mode", "pix2pix", "--gen", "unet_32", "--ngf", "8", "--ndf", "8", "--size", "32"]
    outcomes = batch(
        ["train", a, b, "-o", failed, *TINY, "--steps", "1", "--lr", "1e30", *QUIET],
        ["train", "--resume", failed],
        ["train", a, b, "-o", failed, *TINY, "--steps", "1", *QUIET],
        ["train", a, b, "-o", projected, *TINY, "--disc", "projected", "--steps", "1", *QUIET],
        ["train", a, b, "-o", tmp_path / "luma", *TINY, *luma, "--steps", "1", *QUIET],
        ["train", pairs_a, pairs_b, "-o", p2p, *pix2pix, "--disc", "projected", *ONE],
    )
    outcomes[0].one_error("NaN or infinite")
    outcomes[1].one_error("no usable checkpoint", "the same `styler train` starts afresh")
    again = outcomes[2]
    assert again.code == 0, again.lines
    _warnings(again.lines, "held a run without checkpoints: its files are kept in")
    assert _steps(failed) == [1] and _metrics_steps(failed) == [1]
    assert sorted(os.listdir(failed / "samples")) == ["step_0000000.png", "step_0000001.png"]
    for out, run in zip(outcomes[3:5], (projected, tmp_path / "luma"), strict=True):
        assert out.code == 0 and not out.lines, out.lines
        assert _steps(run) == [1]
    outcomes[5].one_error("--disc projected is not for pix2pix")
    assert not p2p.exists()


# -- N3. a checkpoint's name against its header; NaN weights ----------------------------------


def test_a_checkpoint_named_for_another_step_or_holding_nan_is_passed_over(
    base_run: Path, shared: Shared
) -> None:
    """A copy of step 1 named step_9 is passed over (said once), never
    counted, never pruned: the run resumes from step 3, not 1. A newest
    checkpoint whose header is valid but whose weights hold a NaN is passed
    over to the one before it."""
    renamed, out = shared["renamed"]
    assert out.code == 0, out.lines
    _warnings(out.lines, "step_0000009.safetensors: named step 9 but saved after step 1")
    assert _steps(renamed) == [4, 5, 9] and _metrics_steps(renamed) == [1, 2, 3, 4, 5]
    assert _ckpt(renamed, 9).read_bytes() == _ckpt(base_run, 1).read_bytes()
    poisoned, out = shared["poisoned"]
    assert out.code == 0, out.lines
    _warnings(
        out.lines,
        "step_0000003.safetensors: holds NaN or infinite values",
        "step_0000003.safetensors as step_0000003.safetensors.kept; saving step 3",  # (pass 42)
    )
    assert _steps(poisoned) == [3, 4] and _metrics_steps(poisoned) == [1, 2, 3, 4]


# -- N4. a damaged or foreign best.safetensors -------------------------------------------------


def test_a_damaged_or_foreign_best_checkpoint_is_passed_over(
    shared: Shared,
) -> None:
    """A damaged best.safetensors (the run has no --eval-every) is passed
    over with one warning, and the run exports its last step (a model name
    of 209 bytes). `styler export RUN_DIR` passes over a best of another
    config and a newest checkpoint holding a NaN, and exports the step before."""
    onnx = pytest.importorskip("onnx")
    damaged, out = shared["damaged_best"]
    assert out.code == 0, out.lines
    _warnings(out.lines, "best.safetensors: not a readable checkpoint")
    assert "exporting the latest checkpoint" in out.lines[0]
    foreign, out = shared["foreign_best"]
    assert out.code == 0, out.lines
    _warnings(
        [line for line in out.lines if "passing over" in line],
        "step_0000003.safetensors: holds NaN",
        "best.safetensors: not of this run",
    )
    for run, step, name in ((damaged, 4, f"{LONG_A}_to_{LONG_B}"), (foreign, 2, "A_to_B")):
        assert [p.name for p in run.glob("*.onnx")] == [f"{name}.onnx"]
        meta = {p.key: p.value for p in onnx.load(str(run / f"{name}.onnx")).metadata_props}
        assert f"step {step}" in json.loads(meta["styler"])["source"]


# -- N5. a run folder inside a data folder -----------------------------------------------------


def test_a_run_folder_inside_a_data_folder_is_never_trained_on(
    shared: Shared,
) -> None:
    """`styler train cA cB -o cA/run`: the run's sample grids are not images
    of cA, on the first run nor on resume (6 usable each time); another run
    folder inside a data folder is left out too, each said once by each
    command (the recipe's first look at the folders is quiet)."""
    folder, first = shared["inside_data"]
    _, again = shared["inside_data_resumed"]
    for out in (first, again):
        assert out.code == 0, out.lines
        usable = [line for line in out.lines if "usable" in line]
        assert len(usable) == 2 and "cA: 6 usable" in usable[0], usable
        assert "cB: 11 usable" in usable[1], usable  # 6 + 6 in cB/images, one held out
    said = [[line for line in out.lines if "leaving out" in line] for out in (first, again)]
    old, own = str(folder.parent / "cB" / "oldrun"), str(folder.parent / "cA" / "run")
    assert len(said[0]) == 1 and old in said[0][0], said  # (the run's own is not yet one)
    assert len(said[1]) == 2 and own in said[1][0] and old in said[1][1], said


# -- N7, N8. domain names: bytes, and a leading '-' -------------------------------------------


def test_domain_names_fit_a_file_name_and_never_start_with_a_dash(
    shared: Shared,
) -> None:
    """Folders named '-' + 40 four-byte letters and 40 others: the domain
    names are cut to 100 bytes and lose the '-', and the default run folder
    is made (a model of names this long is exported in the test of N4). A
    config naming a domain of more than 120 bytes is refused in one line."""
    folder, out = shared["long_domains"]
    assert out.code == 0, out.lines
    run = folder / "runs" / f"{LONG_A}_to_{LONG_B}"
    assert json.loads((run / "config.json").read_text())["domains"] == [LONG_A, LONG_B]
    assert _steps(run) == [1]
    shared["longer_domains"][1].one_error("config.json", "domain name", "120 bytes")


# -- N9, N10. metrics.jsonl of any size; temporary files of killed writers --------------------


def test_metrics_are_streamed_and_stale_temporary_files_removed(
    shared: Shared,
) -> None:
    """A metrics.jsonl of 9 GB (more than the process may map) is read a
    line at a time on resume: its one damaged line is dropped, said once.
    Temporary files that killed writers left in samples/ are removed; a
    user's file named alike is kept."""
    run, out = shared["huge_metrics"]
    assert out.code == 0, out.lines
    _warnings(out.lines, "metrics.jsonl: dropping 1 damaged line (line 4: longer than")
    assert _metrics_steps(run) == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "samples").glob(".*")) == [".notes.2024.part"]


def test_report_curves_read_a_bounded_thinned_set_of_records(tmp_path: Path) -> None:
    from styler.training.metricslog import read_metrics

    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step in range(1, 100_001):
            f.write(json.dumps({"step": step, "G": 1.0}) + "\n")
            if step % 1000 == 0:
                f.write(json.dumps({"step": step, "eval": True, "kid": 0.1}) + "\n")
    records = read_metrics(path, most=500)
    steps = [r["step"] for r in records if "G" in r]
    assert 250 <= len(steps) <= 501 and steps[0] == 1 and steps[-1] == 100_000
    assert steps == sorted(steps) and len({b - a for a, b in itertools.pairwise(steps[:-1])}) == 1
    assert len([r for r in records if "kid" in r]) == 100


# -- N11. flags a resume would ignore; evaluation inputs ---------------------------------------


def test_flags_that_would_change_a_resumed_run_and_bad_eval_inputs_are_refused(
    base_run: Path, shared: Shared
) -> None:
    """--resume with flags of the run's config is refused in one line naming
    them (and changes nothing); --eval-photos or --eval-reference that are
    not folders of images are refused before the run folder is made, and
    so are they without --eval-every; a run folder another styler works in
    is refused."""
    run, out = shared["resume_flags"]
    out.one_error("--beta1, --epochs, --lr, --mode, --ngf, --size")
    assert _contents(run) == _contents(base_run)
    for name, needle in (("eval_photos", "--eval-photos"), ("eval_reference", "--eval-reference")):
        folder, out = shared[name]
        out.one_error(needle, "nonexistent", "not a folder of images")
        assert not folder.exists()
    folder, out = shared["eval_photos_alone"]
    out.one_error("--eval-every")
    assert not folder.exists()
    locked, out = shared["locked"]
    out.one_error(str(locked), "in use by another styler train")
    assert _steps(locked) == [1, 2, 3]
