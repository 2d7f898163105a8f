"""Reliability, round two, the training side (``styler train``, ``--resume``,
``styler export RUN_DIR``): a checkpoint is never pruned for a damaged file,
nothing is written outside the run folder, no value read from a run folder
or given as a flag crashes a run or makes it allocate without end, and a run
that blows up says so and keeps what it saved before.

Each case runs through the real CLI on real files (docs/RELIABILITY.md lists
them). The cases that fail before training (most of them) run as calls of
the CLI's ``main()`` in one subprocess per test (:func:`batch`): one Python
start for many cases keeps the module fast.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hostile
from test_hostile import files_below, snapshot, styler

pytest.importorskip("torch")
#: The training side of the reliability suite is heavier: run by pytest -m slow (README).
pytestmark = pytest.mark.slow

TINY = ["--mode", "cyclegan", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8", "--size", "32"]
TINY += ["--workers", "1"]
QUIET = ["--no-export", "-q"]
#: One step, no export: what a case that should be refused would cost if it were not.
ONE = ["--steps", "1", "--no-export"]
#: Address space for the batch process: far less than any of the refused
#: sizes would take, so that a case that allocates fails the test.
MEMORY = 8 * 2**30
#: Runs ``main(argv)`` for each argv read from stdin, one at a time, with a
#: marker line on stderr before each; an exception that escapes is a crash.
BATCH = r"""
import json, sys, traceback
from styler.cli import main
for argv in json.load(sys.stdin):
    print("\x00case", file=sys.stderr, flush=True)
    try:
        rc = main(argv)
    except BaseException:
        traceback.print_exc()
        rc = -1
    sys.stderr.flush()
    print("\x00rc", rc, flush=True)
"""


@dataclass
class Outcome:
    args: list[str]
    code: int
    lines: list[str]

    def one_error(self, *needles: str) -> str:
        """The one line of a refusal (exit 2), which holds each of ``needles``."""
        assert self.code == 2 and len(self.lines) == 1, (self.args, self.code, self.lines)
        assert self.lines[0].startswith("styler: error: "), self.lines
        for needle in needles:
            assert needle in self.lines[0], (needle, self.lines[0])
        return self.lines[0]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def batch(
    *cases: Sequence[str | Path], cwd: Path | None = None, strict: bool = True
) -> list[Outcome]:
    """Each of ``cases`` (the arguments of a ``styler`` command line) run by
    the CLI's ``main()``, in one subprocess with bounded memory. A traceback
    fails the caller, or with ``strict`` False only the case that printed it
    (it is in that case's lines: for cases that several tests share)."""
    argvs = [[str(a) for a in case] for case in cases]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", BATCH],
        input=json.dumps(argvs).encode(),
        capture_output=True,
        env=env,
        cwd=cwd,
        preexec_fn=_limit_memory,
        timeout=600,
    )
    err = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 0, err[-3000:]
    assert not strict or "Traceback (most recent call last)" not in err, err[-3000:]
    out = result.stdout.decode().splitlines()
    codes = [int(line.split()[1]) for line in out if line.startswith("\x00rc ")]
    chunks = err.split("\x00case\n")[1:]
    assert len(chunks) == len(argvs) == len(codes), err[-3000:]
    return [
        Outcome(argv, code, chunk.splitlines())
        for argv, code, chunk in zip(argvs, codes, chunks, strict=True)
    ]


# -- the data and a run to copy -------------------------------------------------------------------


def _folder(path: Path, count: int, seed: int) -> Path:
    path.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(hostile.photo(40, 40, seed + i)).save(path / f"{path.name}{i}.png")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return _folder(root / "A", 6, 0), _folder(root / "B", 6, 50)


@pytest.fixture(scope="module")
def base_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step CycleGAN run (A and B are unpaired), checkpoints
    after steps 1 and 2."""
    run = tmp_path_factory.mktemp("base") / "run"
    args = ["train", *data, "-o", run, *TINY, "--steps", "2", "--checkpoint-every", "1"]
    result = styler(*map(str, args), *QUIET)
    assert result.returncode == 0, result.stderr.decode()
    assert _steps(run) == [1, 2]
    return run


def _steps(run: Path) -> list[int]:
    return sorted(int(p.name[5:12]) for p in (run / "checkpoints").glob("step_*.safetensors"))


def _copy(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst, symlinks=True)
    return dst


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}.safetensors"


def _one(flags: Sequence[str]) -> list[str]:
    return [] if "--epochs" in flags else ONE


def _forge(run: Path, edit: Callable[[dict[str, Any]], None], config_json: bool = True) -> Path:
    """Rewrite the header of every checkpoint of ``run`` with ``edit`` (and
    config.json as the edited header's config)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in (run / "checkpoints").glob("step_*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        header = json.loads(meta["styler_train"])
        edit(header)
        meta["styler_train"] = json.dumps(header)
        save_file(tensors, str(path), metadata=meta)
        if config_json:
            (run / "config.json").write_text(json.dumps(header["config"]))
    return run


def _metrics_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- 1. pruning never removes the only good checkpoints -------------------------------------------


def test_pruning_keeps_the_newest_good_checkpoint_and_leaves_damaged_files(
    base_run: Path, tmp_path: Path
) -> None:
    """A damaged step_9 (higher than any real step) and a folder named like
    a checkpoint are passed over, said once each, never counted and never
    removed: --keep-checkpoints 1 keeps the step the run just wrote. A run
    folder with no usable checkpoint is refused and left as it is."""
    run = _copy(base_run, tmp_path / "p1")
    damaged = _ckpt(run, 2).read_bytes()[:1000]
    _ckpt(run, 9).write_bytes(damaged)
    _ckpt(run, 11).mkdir()
    keep = ["--keep-checkpoints", "1", "--checkpoint-every", "1", "--workers", "1", *QUIET]
    result = styler("train", "--resume", str(run), "--steps", "4", *keep)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2 and all(line.startswith("styler: passing over") for line in lines)
    assert any("step_0000009" in line for line in lines), lines
    assert any("step_0000011" in line for line in lines), lines
    assert _steps(run) == [4, 9, 11]
    assert _ckpt(run, 9).read_bytes() == damaged and _ckpt(run, 11).is_dir()

    again = styler("train", "--resume", str(run), "--steps", "5", *keep)
    assert again.returncode == 0, again.stderr.decode()
    assert _steps(run) == [5, 9, 11] and _metrics_steps(run) == [1, 2, 3, 4, 5]

    # Nothing usable left: refused (exit 2, one line), nothing changed.
    _ckpt(run, 5).write_bytes(damaged)
    before = snapshot(run)
    (out,) = batch(["train", "--resume", run, "--steps", "6", "-q"])
    out.one_error(str(run), "no usable checkpoint", "nothing was changed")
    assert snapshot(run) == before


# -- 2. nothing is written outside the run folder; models are kept -------------------------------


def test_domain_names_never_name_a_file_outside_the_run_folder(
    base_run: Path, tmp_path: Path
) -> None:
    """Export file names come from the domain names in config.json and the
    checkpoints: a path there is refused when read, by export and resume.
    `styler export RUN_DIR` keeps the models already in the folder."""
    escaped = tmp_path / "escaped"
    traversal = _forge(
        _copy(base_run, tmp_path / "a" / "b" / "run"), _domains("../../../escaped/x")
    )
    absolute = _forge(_copy(base_run, tmp_path / "abs"), _domains(str(escaped / "x")))
    newline = _forge(_copy(base_run, tmp_path / "nl"), _domains("A\nB"))
    models = _copy(base_run, tmp_path / "models")
    (models / "A_to_B.onnx").write_bytes(b"the user's model")
    before = {p: snapshot(p) for p in (traversal, absolute, newline, models)}
    outcomes = batch(
        *[["export", run] for run in (traversal, absolute, newline)],
        *[["train", "--resume", run, "--steps", "3"] for run in (traversal, absolute)],
        ["export", models],
    )
    for out in outcomes[:5]:
        out.one_error("config.json", "domain name")
    outcomes[5].one_error("A_to_B.onnx exists", "--overwrite")
    assert not escaped.exists() and sorted(os.listdir(tmp_path)) == ["a", "abs", "models", "nl"]
    assert all(snapshot(p) == snap for p, snap in before.items())


def _domains(first: str) -> Callable[[dict[str, Any]], None]:
    def edit(header: dict[str, Any]) -> None:
        header["config"]["domains"] = [first, "B"]

    return edit


# -- 3. every value read from a run folder is checked ------------------------------------------


def _set(*path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(header: dict[str, Any]) -> None:
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _betas(header: dict[str, Any]) -> None:
    for groups in header["param_groups"].values():
        for group in groups:
            group["betas"] = "xx"


def test_run_folder_values_of_the_wrong_type_are_one_line_each(
    base_run: Path, tmp_path: Path
) -> None:
    """Forged headers and config.json files are refused in one line naming
    the file (exit 2) by --resume and export, and change nothing; a user's
    file in samples/ and damaged lines of metrics.jsonl are passed over."""
    header_cases = {
        "info_list": (_set("info", value=[1]), False),
        "seconds_str": (_set("info", "seconds", value="abc"), False),
        "betas_str": (_betas, False),
        "one_domain": (_set("config", "domains", value=["A"]), True),
        "seed_huge": (_set("config", "seed", value=2**70), True),
    }
    runs = {}
    for name, (edit, config_json) in header_cases.items():
        runs[name] = _forge(_copy(base_run, tmp_path / name), edit, config_json)
    runs["latin1"] = _copy(base_run, tmp_path / "latin1")
    (runs["latin1"] / "config.json").write_bytes(b"\xff\xfe{}")
    runs["deep"] = _copy(base_run, tmp_path / "deep")
    (runs["deep"] / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    user = _copy(base_run, tmp_path / "user")
    shutil.copy(user / "samples" / "step_0000000.png", user / "samples" / "step_final.png")
    with open(user / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": "abc"}\n\xff\xfe not utf-8\n')
    before = {p: snapshot(p) for p in runs.values()}
    outcomes = batch(
        *[["train", "--resume", run, "--steps", "3", *QUIET] for run in runs.values()],
        *[["export", runs[name]] for name in ("latin1", "deep", "info_list")],
        ["train", "--resume", user, "--steps", "3", *QUIET],
    )
    expected = {
        "info_list": "info is not an object",
        "seconds_str": "info seconds 'abc'",
        "betas_str": "betas is 'xx'",
        "one_domain": "domains must be two names",
        "seed_huge": "an integer of 22 digits",
        "latin1": "not UTF-8",
        "deep": "nested more than",
    }
    resumed = dict(zip(runs, outcomes, strict=False))
    for name, reason in expected.items():
        resumed[name].one_error(str(runs[name]), reason)
    for out, reason in zip(outcomes[7:10], ("not UTF-8", "nested", "info is not"), strict=True):
        out.one_error(reason)
    assert all(snapshot(p) == snap for p, snap in before.items())
    last = outcomes[-1]
    assert last.code == 0 and len(last.lines) == 1, last.lines
    assert "metrics.jsonl: dropping 2 damaged lines" in last.lines[0]
    assert (user / "samples" / "step_final.png").exists() and _metrics_steps(user) == [1, 2, 3]


# -- 4. absurd sizes and numbers ---------------------------------------------------------------


def test_absurd_flags_and_configs_are_refused_before_anything_is_allocated(
    data: tuple[Path, Path], base_run: Path, tmp_path: Path
) -> None:
    """Sizes that cannot fit, and numbers that cannot train, are refused in
    one line (exit 2) before any memory is taken (the process has 8 GB of
    address space); the same values in a forged config too."""
    a, b = data
    digits = tmp_path / "digits"
    digits.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), i * 40).save(digits / f"{i}.png")
    flags = [
        ("--size", "40000"),
        ("--load-size", "100000"),
        ("--batch-size", "100000000"),
        ("--ngf", "1000000"),
        ("--gen", "resnet_100000000blocks"),
        ("--gen", "resnet_256blocks", "--ngf", "4096"),
        ("--beta1", "5"),
        ("--beta1", "nan"),
        ("--epochs", "nan"),
        ("--epochs", "inf"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--lr", "-1"),
        ("--seed", "99999999999999999999999"),
        ("--disc", "n_layers_100"),
        ("--ngf", "0"),
    ]
    forged = {
        "size": _set("config", "size", value=40000),
        "load": _set("config", "load_size", value=100000),
        "batch": _set("config", "batch_size", value=10**7),
        "ngf": _set("config", "generator", "ngf", value=10**6),
        "blocks": _set("config", "generator", "n_blocks", value=10**8),
    }
    runs = [_forge(_copy(base_run, tmp_path / k), edit) for k, edit in forged.items()]
    outcomes = batch(
        *[
            ["train", a, b, "-o", tmp_path / f"f{i}", *TINY, *f, *_one(f)]
            for i, f in enumerate(flags)
        ],
        ["train", digits, "-o", tmp_path / "g", "--latent-dim", "1000000000000"],
        *[["train", "--resume", run, "--steps", "3"] for run in runs],
    )
    for out in outcomes:
        out.one_error()
    assert "parameters, more than 1,073,741,824" in outcomes[5].lines[0]
    assert not any((tmp_path / f"f{i}").exists() for i in range(len(flags)))


# -- 5. an output folder that cannot be made ------------------------------------------------------


def test_a_run_folder_that_cannot_be_made_is_refused_before_decoding(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    """-o below a file, or in /proc: one line, exit 2, before any image is
    decoded (the bad image in A would be reported if one were)."""
    a = shutil.copytree(data[0], tmp_path / "A")
    (a / "zz_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    file = tmp_path / "file"
    file.write_bytes(b"the user's file")
    outcomes = batch(
        ["train", a, data[1], "-o", file / "sub", *TINY],
        ["train", a, data[1], "-o", "/proc/styler-run", *TINY],
    )
    for out in outcomes:
        out.one_error("cannot create or write the run folder")
    assert file.read_bytes() == b"the user's file"
    assert files_below(tmp_path) == {os.fsencode(p) for p in (*a.iterdir(), file)}


# -- 6. a run that blows up ------------------------------------------------------------------------


def test_a_blown_up_run_stops_in_one_line_and_keeps_what_it_saved(
    data: tuple[Path, Path], base_run: Path, tmp_path: Path
) -> None:
    """--lr 1e30 gives weights of 1e30 after one step (finite, but the
    networks' outputs are NaN): the run stops before it samples, saves or
    exports them, with one line; the checkpoints saved before are kept."""
    fresh = tmp_path / "fresh"
    resumed = _forge(_copy(base_run, tmp_path / "resumed"), _set("config", "lr", value=1e30))
    good = _ckpt(resumed, 2).read_bytes()
    keep = ["--checkpoint-every", "1", "--keep-checkpoints", "1", "--workers", "1", *QUIET]
    outcomes = batch(
        ["train", *data, "-o", fresh, *TINY, "--steps", "1", "--lr", "1e30", "-q"],
        ["train", "--resume", resumed, "--steps", "4", *keep],
    )
    for out in outcomes:
        out.one_error("NaN or infinite", "lower --lr")
    assert not list(fresh.glob("*.onnx")) and _steps(fresh) == []
    assert _steps(resumed) == [1, 2] and _ckpt(resumed, 2).read_bytes() == good


# -- 7. siblings -----------------------------------------------------------------------------------


def test_watch_flags_run_folder_parts_and_thin_images(
    data: tuple[Path, Path], base_run: Path, tmp_path: Path
) -> None:
    """Flags that say how a run is kept are checked; a run folder whose
    checkpoints/ is a symlink (pruning would remove files elsewhere) is
    refused (a damaged best.safetensors is passed over: test_safety_training2);
    a basic discriminator is refused crops it cannot see; an image too long
    and thin to scale is skipped."""
    a, b = data
    elsewhere = tmp_path / "elsewhere"
    linked = _copy(base_run, tmp_path / "linked")
    shutil.move(linked / "checkpoints", elsewhere)
    (linked / "checkpoints").symlink_to(elsewhere)
    thin = shutil.copytree(a, tmp_path / "thin")
    Image.new("RGB", (240_000, 1), (90, 120, 200)).save(thin / "strip.png")
    before = snapshot(elsewhere)
    watch = [
        ("--keep-checkpoints", "0"),
        ("--keep-checkpoints", "-1"),
        ("--checkpoint-every", "-1"),
        ("--checkpoint-minutes", "nan"),
        ("--sample-every", "0"),
        ("--display", "nonsense"),
        ("--workers", "0"),
        ("--size", "16"),
    ]
    outcomes = batch(
        *[["train", a, b, "-o", tmp_path / f"w{i}", *TINY, *w, *ONE] for i, w in enumerate(watch)],
        ["train", "--resume", linked, "--steps", "3"],
        ["train", thin, b, "-o", tmp_path / "t", *TINY, "--steps", "1", *QUIET],
    )
    for flag, out in zip(watch, outcomes, strict=False):
        out.one_error(flag[0])
    outcomes[-2].one_error("checkpoints: not a folder")
    assert snapshot(elsewhere) == before
    last = outcomes[-1]
    assert last.code == 0 and len(last.lines) == 1 and "too long and thin" in last.lines[0]
