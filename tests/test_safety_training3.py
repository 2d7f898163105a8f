"""Reliability, the third pass over training: what a third hostile review
found in ``styler train``, ``--resume``, ``styler eval``, ``info`` and
``styler export``.

Each case runs through the real CLI on real files (docs/RELIABILITY.md lists
them, key ST3): all of them as calls of the CLI's ``main()`` in one
subprocess (``batch`` of test_safety_training) with 8 GB of address space,
so that a case that reads what a forged file declares, or scales an image
without bound, fails. The runs are tiny CycleGANs; each case works on a copy
of one two-step run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hostile
import test_safety_training
from test_safety_training import ONE, QUIET, TINY, Outcome, _ckpt, _copy, _steps, batch
from test_safety_training2 import _metrics_steps, _warnings

pytest.importorskip("torch")
#: The training side of the reliability suite is heavier: run by pytest -m slow (README).
pytestmark = pytest.mark.slow

#: The fixture of six images in A and six in B.
data = test_safety_training.data

KEEP = ["--checkpoint-every", "1", "--keep-checkpoints", "5", "--workers", "1", "-q"]
#: A name of 300 bytes: longer than a file name may be (ENAMETOOLONG).
LONG = "x" * 300
#: The model that ships with styler (for `styler eval`).
MODEL = Path(__file__).parent.parent / "weights" / "photo2painting.onnx"


@pytest.fixture(scope="module")
def base_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step CycleGAN run, checkpoints after steps 1 and 2."""
    run = tmp_path_factory.mktemp("base") / "run"
    (out,) = batch(["train", *data, "-o", run, *TINY, "--steps", "2", *KEEP, "--no-export"])
    assert out.code == 0 and not out.lines, out.lines
    assert _steps(run) == [1, 2]
    return run


#: A case: what it needs made in its folder, and its command line.
Case = Callable[[Path, Path, tuple[Path, Path]], list[Any]]
#: The outcomes of the shared batch: case name -> (its folder, its outcome).
Shared = dict[str, tuple[Path, Outcome]]


def _edit(path: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> dict[str, Any]:
    """Rewrite the checkpoint ``path`` with ``edit(header, tensors)``; the
    edited header's config."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    header = json.loads(meta["styler_train"])
    edit(header, tensors)
    meta["styler_train"] = json.dumps(header)
    save_file(tensors, str(path), metadata=meta)
    return dict(header["config"])


def _config(run: Path, key: str, value: object) -> None:
    """Set ``key`` of the config in every checkpoint of ``run`` and in config.json."""
    for step in _steps(run):
        config = _edit(_ckpt(run, step), lambda h, t: h["config"].__setitem__(key, value))
    (run / "config.json").write_text(json.dumps(config))


def _declare_huge(path: Path, name: str) -> None:
    """Rewrite the safetensors file ``path`` with one more tensor ``name``
    declaring 8 GiB of float32 (a sparse file: nothing of it is written)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta, arrays = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    header: dict[str, Any] = {"__metadata__": meta}
    body = b""
    for key, array in arrays.items():
        if key == name:
            continue
        raw = array.tobytes()
        kind = {"float32": "F32", "int64": "I64"}[str(array.dtype)]
        header[key] = {"dtype": kind, "shape": list(array.shape), "data_offsets": [0, 0]}
        header[key]["data_offsets"] = [len(body), len(body) + len(raw)]
        body += raw
    count = 2 * 2**30 // 3072 * 3072  # 8 GiB of float32, in whole 3 x 32 x 32 images
    shape = [count // 3072, 3, 32, 32] if name.startswith("extra.") else [count]
    header[name] = {
        "dtype": "F32",
        "shape": shape,
        "data_offsets": [len(body), len(body) + 4 * count],
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)
        f.truncate(8 + len(text) + len(body) + 4 * count)


# -- the cases ---------------------------------------------------------------------------------


def _long(command: str) -> Case:
    """A path of a 300-byte name where ``command`` reads one."""

    def case(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        folder.mkdir()
        long = folder / LONG
        return {
            "info": ["info", long],
            "eval": ["eval", MODEL, data[0], long],
            "output": ["train", *data, "-o", long, *TINY, *ONE],
            "data": ["train", long, data[1], "-o", folder / "run", *TINY, *ONE],
            "resume": ["train", "--resume", long],
            "export": ["export", long],
        }[command]

    return case


def _closed(command: str) -> Case:
    """A path inside a folder without permission (mode 000) where ``command``
    reads one."""

    def case(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        closed = folder / "closed"
        shutil.copytree(data[0], closed / "A")
        closed.chmod(0)
        return {
            "info": ["info", closed / "m.onnx"],
            "data": ["train", closed / "A", data[1], "-o", folder / "run", *TINY, *ONE],
            "resume": ["train", "--resume", closed / "run"],
            "export": ["export", closed / "run"],
        }[command]

    return case


#: The cases of a folder without permission.
CLOSED = {f"closed_{c}": _closed(c) for c in ("info", "data", "resume", "export")}


def _long_in_config(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    _config(_copy(base, run), "data_a", str(run / LONG))
    return ["train", "--resume", run, "--steps", "3"]


def _thin(folder: Path, data: tuple[Path, Path]) -> tuple[Path, Path]:
    """Two photos and two reference images (what a score needs at least, and
    cheap to score), each with a strip of 1 x 60000 pixels."""
    photos, reference = folder / "P", folder / "R"
    for source, target in ((data[0], photos), (data[1], reference)):
        target.mkdir(parents=True)
        for image in sorted(source.iterdir())[:2]:
            shutil.copy(image, target)
    Image.new("RGB", (1, 60000), (90, 120, 200)).save(photos / "strip.png")
    Image.new("RGB", (60000, 1), (90, 120, 200)).save(reference / "strip.png")
    return photos, reference


def _thin_eval(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    return ["eval", MODEL, *_thin(folder, data)]


def _thin_scores(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    photos, reference = _thin(folder, data)
    flags = ["--eval-every", "1", "--eval-photos", photos, "--eval-reference", reference]
    return ["train", *data, "-o", folder / "run", *TINY, *flags, *ONE, "-q"]


def _huge(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """The newest checkpoint declares an image pool of 8 GiB."""
    _declare_huge(_ckpt(_copy(base, run), 2), "extra.pool_A")
    return ["train", "--resume", run, "--steps", "2", *KEEP, "--no-export"]


def _huge_weights(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A generator weight file that declares a tensor of 8 GiB more."""
    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    config = generator_preset("resnet_2blocks", ngf=8)
    meta = ModelMetadata(network=config, name="tiny", train_size=32)
    folder.mkdir()
    path = save_generator(folder / "g.safetensors", zoo.build(config).state_dict(), meta)
    _declare_huge(path, "model.huge")
    return ["export", path, "-o", folder / "g.onnx"]


def _training_checkpoint(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    return ["export", _ckpt(base, 2), "-o", folder / "m.onnx"]


def _foreign(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A checkpoint of another run (other data folders) as step 3."""
    shutil.copy(_ckpt(_copy(base, run), 2), _ckpt(run, 3))

    def other(header: dict[str, Any], tensors: dict[str, Any]) -> None:
        header["config"]["data_a"] = "/elsewhere/A"
        header["step"] = 3  # (as its name says)

    _edit(_ckpt(run, 3), other)
    return ["train", "--resume", run, "--steps", "4", *KEEP, "--no-export"]


def _edited(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    config = json.loads((_copy(base, run) / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.5}))
    return ["train", "--resume", run, "--steps", "3", *KEEP, "--no-export"]


def _ids(header: dict[str, Any], tensors: dict[str, Any]) -> None:
    header["param_groups"]["G"][0]["params"].reverse()


def _negative_step(header: dict[str, Any], tensors: dict[str, Any]) -> None:
    tensors["opt.G.0.step"].fill_(-5)


def _negative_moment(header: dict[str, Any], tensors: dict[str, Any]) -> None:
    tensors["opt.D.1.exp_avg_sq"].view(-1)[0] = -1.0


def _optimiser(edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> Case:
    """The newest checkpoint's optimiser state forged by ``edit``."""

    def case(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        _edit(_ckpt(_copy(base, run), 2), edit)
        return ["train", "--resume", run, "--steps", "2", *KEEP, "--no-export"]

    return case


def _newline(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """Step 1's checkpoint named step_0000009.safetensors and a newline."""
    shutil.copy(_ckpt(_copy(base, run), 1), run / "checkpoints" / "step_0000009.safetensors\n")
    return ["train", "--resume", run, "--steps", "3", *KEEP, "--no-export"]


def _same_domains(command: str) -> Case:
    def case(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
        _config(_copy(base, run), "domains", ["X", "X"])
        resume = ["train", "--resume", run, "--steps", "3", *KEEP, "--no-export"]
        return ["export", run] if command == "export" else resume

    return case


def _same_folder_names(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    a = shutil.copytree(data[0], folder / "a" / "photos")
    b = shutil.copytree(data[1], folder / "b" / "photos")
    return ["train", a, b, "-o", folder / "run", *TINY, *QUIET, "--steps", "1"]


def _sample_folder(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A folder (holding a file) where step 3's sample grid goes."""
    (_copy(base, run) / "samples" / "step_0000003.png").mkdir()
    (run / "samples" / "step_0000003.png" / "notes.txt").write_text("the user's")
    return ["train", "--resume", run, "--steps", "4", *KEEP, "--no-export"]


def _time(folder: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    """A unit given twice (seconds: a run of 2 s where it is taken)."""
    return ["train", *data, "-o", folder, *TINY, "--time", "1s1s", "--no-export"]


def _empty_data(run: Path, base: Path, data: tuple[Path, Path]) -> list[Any]:
    _config(_copy(base, run), "data_a", "")
    return ["train", "--resume", run, "--steps", "3", *KEEP, "--no-export"]


CASES: dict[str, Case] = {
    **{f"long_{c}": _long(c) for c in ("info", "eval", "output", "data", "resume", "export")},
    "long_in_config": _long_in_config,
    "thin_eval": _thin_eval,
    "thin_scores": _thin_scores,
    "huge": _huge,
    "huge_weights": _huge_weights,
    "training_checkpoint": _training_checkpoint,
    "foreign": _foreign,
    "edited": _edited,
    "ids": _optimiser(_ids),
    "negative_step": _optimiser(_negative_step),
    "negative_moment": _optimiser(_negative_moment),
    "newline": _newline,
    "same_domains": _same_domains("resume"),
    "same_domains_export": _same_domains("export"),
    "same_folder_names": _same_folder_names,
    "sample_folder": _sample_folder,
    "time": _time,
    "empty_data": _empty_data,
}


@pytest.fixture(scope="module")
def shared(
    data: tuple[Path, Path], base_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    """The cases of :data:`CASES`, each in a folder of its own, run in one
    process: name -> (its folder, its outcome). The process runs without the
    capabilities that let root bypass file permissions (as any user runs),
    and then the cases of :data:`CLOSED` too."""
    root = tmp_path_factory.mktemp("shared")
    drop = hostile.no_dac_override()
    cases = {**CASES, **(CLOSED if drop is not None else {})}
    folders = {name: root / name for name in cases}
    argvs = [case(folders[name], base_run, data) for name, case in cases.items()]
    memory = test_safety_training._limit_memory

    def as_user() -> None:
        memory()
        if drop is not None:
            drop()

    test_safety_training._limit_memory = as_user  # (what batch runs the process with)
    try:
        outcomes = batch(*argvs, strict=False)
    finally:
        test_safety_training._limit_memory = memory
        for name in set(cases) & set(CLOSED):
            (folders[name] / "closed").chmod(stat.S_IRWXU)
    yield {name: (folders[name], out) for name, out in zip(cases, outcomes, strict=True)}


# -- 1. paths that cannot be checked -----------------------------------------------------------


def test_a_path_that_cannot_be_checked_is_one_line(shared: Shared) -> None:
    """A name too long for the file system, in info, eval, train (-o, a data
    folder, --resume, a config's data folder) and export: one line naming
    it and the OS's reason, exit 2. A folder without permission (as a user,
    or as root without the capabilities that bypass it) likewise."""
    for name in (*(f"long_{c}" for c in ("info", "eval", "output", "data")), "long_resume"):
        shared[name][1].one_error(LONG, "cannot read: File name too long")
    shared["long_export"][1].one_error(LONG, "cannot read: File name too long")
    run, out = shared["long_in_config"]
    out.one_error(str(run / LONG), "cannot read: File name too long")
    for name, (folder, out) in shared.items():
        if name.startswith("closed_"):  # (where file permissions can hold)
            out.one_error(str(folder / "closed"), "cannot read: Permission denied")


# -- 2. images too long and thin to score ----------------------------------------------------


def test_an_image_too_long_and_thin_to_score_is_skipped(shared: Shared) -> None:
    """`styler eval` with a 1 x 60000 photo and a 60000 x 1 reference image
    skips each in one line and scores the others; so do a run's scores."""
    for name in ("thin_eval", "thin_scores"):
        folder, out = shared[name]
        assert out.code == 0, out.lines
        thin = [line for line in out.lines if "too long and thin to score" in line]
        assert len(thin) == 2, out.lines
        assert str(folder / "R" / "strip.png") in thin[0] and "strip.png" in thin[1], thin
    metrics = (shared["thin_scores"][0] / "run" / "metrics.jsonl").read_text().splitlines()
    assert any("kid" in json.loads(line) for line in metrics), metrics


# -- 3, 6. forged checkpoints: a huge tensor, optimiser state -----------------------------------


def test_a_forged_checkpoint_is_checked_before_its_tensors_are_read(
    base_run: Path, shared: Shared
) -> None:
    """A checkpoint whose header declares an 8 GiB image pool is passed over
    (said once, before reading any of it: the process has 8 GB of address
    space), and the run resumes from the step before; a generator weight
    file declaring an 8 GiB tensor is refused by export. Optimiser state
    over other parameters, a negative step or a negative second moment is
    passed over the same way. A training checkpoint given to export points
    at `styler export RUN_DIR`."""
    run, out = shared["huge"]
    assert out.code == 0, out.lines
    _warnings(
        out.lines,
        "step_0000002.safetensors: extra training state of 2,147,4",
        "step_0000002.safetensors as step_0000002.safetensors.kept; saving step 2",  # (pass 42)
    )
    assert "numbers, more than the config's 307,200" in out.lines[0], out.lines
    assert _steps(run) == [1, 2] and _metrics_steps(run) == [1, 2]
    shared["huge_weights"][1].one_error("g.safetensors", "weights do not fit", "model.huge")
    expected = {
        "ids": "optimiser G does not fit (its parameters are not this optimiser's)",
        "negative_step": "optimiser G does not fit (its state 0.step is out of range)",
        "negative_moment": "optimiser D does not fit (its state 1.exp_avg_sq is out of range)",
    }
    for name, needle in expected.items():
        run, out = shared[name]
        assert out.code == 0, out.lines
        kept = "step_0000002.safetensors as step_0000002.safetensors.kept"  # (pass 42)
        _warnings(out.lines, f"step_0000002.safetensors: {needle}", kept)
        assert _steps(run) == [1, 2] and _metrics_steps(run) == [1, 2]
    shared["training_checkpoint"][1].one_error(
        "a training checkpoint", f"styler export {base_run}`"
    )


# -- 4, 5, 7. another run's checkpoint; an edited config.json; a name with a newline ----------


def test_a_checkpoint_of_another_run_or_an_edited_config_is_never_adopted(
    base_run: Path, shared: Shared
) -> None:
    """Another run's checkpoint in checkpoints/ is passed over (said once)
    and kept: the run resumes from its own newest, never replaces it, and
    config.json keeps the run's data folders. A config.json edited by hand
    is refused in one line naming the field and both values; nothing
    changes. A checkpoint named with a trailing newline is not a checkpoint:
    the run resumes from its newest (step 2 is not written again)."""
    run, out = shared["foreign"]
    assert out.code == 0, out.lines
    _warnings(
        out.lines,
        "step_0000003.safetensors: saved by another run: its config differs from config.json "
        "(in data_a)",
        "not saving step 3: ",
    )
    assert _steps(run) == [1, 2, 3, 4] and _metrics_steps(run) == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["data_a"] != "/elsewhere/A"
    from safetensors import safe_open

    with safe_open(str(_ckpt(run, 3)), framework="pt") as f:
        assert json.loads(f.metadata()["styler_train"])["config"]["data_a"] == "/elsewhere/A"
    run, out = shared["edited"]
    out.one_error(str(run / "config.json"), "lr (0.5 here, 0.0002 in step_0000002.safetensors)")
    assert _steps(run) == [1, 2] and json.loads((run / "config.json").read_text())["lr"] == 0.5
    run, out = shared["newline"]
    assert out.code == 0 and not out.lines, out.lines
    assert _steps(run) == [1, 2, 3] and _metrics_steps(run) == [1, 2, 3]
    assert _ckpt(run, 2).read_bytes() == _ckpt(base_run, 2).read_bytes()
    newline = run / "checkpoints" / "step_0000009.safetensors\n"
    assert newline.read_bytes() == _ckpt(base_run, 1).read_bytes()


# -- 8, 9 and the rest: two equal domain names; a folder where a sample goes; --time ----------


def test_equal_domains_sample_folders_and_odd_values(shared: Shared) -> None:
    """A config naming two equal domains is refused by resume and export (its
    second model would replace the first); folders of the same name give
    photos_A and photos_B. A folder where a sample grid goes is said and
    passed over: the run goes on and keeps the step. --time 1s1s and an
    empty data folder in a config are refused."""
    for name in ("same_domains", "same_domains_export"):
        run, out = shared[name]
        out.one_error(str(run / "config.json"), "the two domain names must differ")
        assert not list(run.glob("*.onnx"))
    folder, out = shared["same_folder_names"]
    assert out.code == 0 and not out.lines, out.lines
    domains = json.loads((folder / "run" / "config.json").read_text())["domains"]
    assert domains == ["photos_A", "photos_B"]
    run, out = shared["sample_folder"]
    assert out.code == 0, out.lines
    _warnings(out.lines, "skipping the sample grid of step 3: ")
    assert _steps(run) == [1, 2, 3, 4] and _metrics_steps(run) == [1, 2, 3, 4]
    assert (run / "samples" / "step_0000003.png" / "notes.txt").read_text() == "the user's"
    folder, out = shared["time"]
    out.one_error("--time '1s1s'")
    assert not os.path.lexists(folder)
    run, out = shared["empty_data"]
    out.one_error(str(run / "config.json"), "data_a must name a folder")
