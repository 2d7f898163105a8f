"""Hostile inputs, hostile model files, escaping names, unusable output
folders and interrupted training, through the real CLI on real files.

styler must never crash on a file, never lose or half-write an output, never
overwrite an input or write outside its output folder, never run code from a
file it was given, and always tell the truth in its exit code. The corpus of
bad files is built by ``tests/hostile.py``; docs/RELIABILITY.md lists every
case and the test that proves it.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hostile
from hostile import Case

PACKAGE = Path(__file__).parent.parent / "styler"
Preexec = Callable[[], None] | None
TINY_TRAIN = ["--mode", "cyclegan", "--gen", "resnet_2blocks", "--ngf", "8", "--ndf", "8"]
TINY_TRAIN += ["--size", "32"]
#: A pickle that runs a shell command when unpickled without weights_only.
EVIL_PICKLE = b"\x80\x04cposix\nsystem\n(V%s\ntR."
#: What this module did, reported after it (the numbers in docs/RELIABILITY.md).
TALLY = {
    "runs": 0,
    "crashes": 0,
    "corpus cases": 0,
    "outputs expected": 0,
    "outputs lost or broken": 0,
    "kills": 0,
    "kills inside a checkpoint write": 0,
}


@pytest.fixture(scope="module", autouse=True)
def report_tally() -> Iterator[None]:
    yield
    if any(TALLY.values()):
        hostile.SUMMARY.append("hostile: " + ", ".join(f"{k} {v}" for k, v in TALLY.items()))


def styler(
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    preexec: Preexec = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    """``styler ARGS`` in a subprocess, bytes in and out. Python warnings are
    left on (unlike conftest's ``cli``): a stray warning is a stray line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "styler", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        preexec_fn=preexec,
        timeout=timeout,
    )
    TALLY["runs"] += 1
    crashed = result.returncode < 0 or b"Traceback (most recent call last)" in result.stderr
    TALLY["crashes"] += crashed
    assert not crashed, result.stderr.decode(errors="replace")[-3000:]
    return result


def shown(text: str) -> str:
    """A file name as styler shows it on stderr (control characters escaped)."""
    return text.translate({c: f"\\x{c:02x}" for c in [*range(32), 127]})


def snapshot(root: Path, skip: Path | None = None) -> dict[bytes, tuple[int, int, int]]:
    """Every entry below ``root`` (symlinks not followed) -> (mode, size, mtime),
    folders by their mode only."""
    found: dict[bytes, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(os.fsencode(root)):
        if skip is not None:
            dirs[:] = [d for d in dirs if os.path.join(folder, d) != os.fsencode(skip)]
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISDIR(st.st_mode):  # a new entry shows as a new key
                found[os.path.join(folder, name)] = (st.st_mode, 0, 0)
            else:
                found[os.path.join(folder, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def files_below(root: Path) -> set[bytes]:
    """Every file below ``root``, hidden ones included, as bytes."""
    return {
        os.path.join(folder, name)
        for folder, _, files in os.walk(os.fsencode(root))
        for name in files
    }


@pytest.fixture(scope="module")
def drop() -> Preexec:
    """How to run styler so that file permissions hold (also for root)."""
    return hostile.no_dac_override()


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, drop: Preexec
) -> Iterator[tuple[Path, list[Case]]]:
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    cases = hostile.build_corpus(root, permissions=drop is not None)
    yield root, cases
    hostile.unlock(root)


# -- the corpus through styler apply -----------------------------------------------------------


def test_apply_over_the_hostile_corpus(
    corpus: tuple[Path, list[Case]], tiny_resnet_onnx: Path, tmp_path: Path, drop: Preexec
) -> None:
    root, cases = corpus
    out, work = tmp_path / "out", tmp_path / "cwd"
    work.mkdir()
    before = snapshot(root)
    args = ["apply", str(root), "-m", str(tiny_resnet_onnx), "-o", str(out), "--json", "-q"]
    result = styler(*args, cwd=work, preexec=drop)
    stderr = result.stderr.decode("utf-8")  # valid UTF-8 whatever the names hold
    assert result.returncode == 1, stderr  # some inputs failed

    expected = {os.fsencode(str(out / c.output)) for c in cases if c.expect == "ok" and c.output}
    TALLY["corpus cases"] += len(cases)
    TALLY["outputs expected"] += len(expected)
    found = files_below(out)  # missing outputs, and extra files such as a .part left behind
    TALLY["outputs lost or broken"] += len(expected - found) + len(found - expected)
    records = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    by_input = {os.fsencode(r["input"]): r for r in records}
    assert len(by_input) == len(records)
    reported = [c for c in cases if c.expect != "ignored"]
    assert set(by_input) == {os.fsencode(str(c.path)) for c in reported}
    for case in cases:
        key = os.fsencode(str(case.path))
        if case.expect == "ignored":
            assert not [k for k in by_input if k == key or k.startswith(key + b"/")], case
            continue
        record = by_input[key]
        if case.expect == "ok":
            assert record["status"] == "ok" and record["error"] is None, (case.name, record)
            assert case.output is not None
            target = out / case.output
            assert os.fsencode(record["output"]) == os.fsencode(str(target)), case.name
            try:
                with Image.open(target) as styled:
                    styled.load()
                    size = styled.size
            except OSError:
                TALLY["outputs lost or broken"] += target.exists()  # missing ones are counted
                raise
            assert size == case.size, case.name
        else:
            assert record["status"] == "failed", (case.name, record)
            assert case.reason and case.reason in record["error"], (case.name, record)
            assert "\n" not in record["error"]

    # stderr: exactly one line per failed file, naming it, and nothing else.
    lines = stderr.splitlines()
    failed = [c for c in cases if c.expect == "failed"]
    assert len(lines) == len(failed), stderr
    for case in failed:
        prefix = f"styler: {shown(str(case.path))}: "
        assert sum(line.startswith(prefix) for line in lines) == 1, (case.name, stderr)

    # Every good file is styled; nothing else is in OUT (no .part files).
    assert files_below(out) == expected
    # Nothing outside OUT was written: the corpus and the working folder are untouched.
    assert snapshot(root) == before
    assert list(work.iterdir()) == []

    # Run again: every finished output is kept, only the failures fail again.
    again = styler(*args, cwd=work, preexec=drop)
    assert again.returncode == 1
    statuses = [json.loads(line)["status"] for line in again.stdout.decode().splitlines()]
    assert statuses.count("skipped") == len(expected)
    assert statuses.count("failed") == len(failed) and "ok" not in statuses
    assert files_below(out) == expected


def test_a_huge_file_is_never_read_whole(tmp_path: Path) -> None:
    """64 GiB (sparse) of zeros named .png, and a valid PNG followed by 64 GiB
    of zeros: the loader reads headers first and stops where the image ends.
    Run with 4 GiB of address space, so reading either whole would fail."""
    zeros, tail = tmp_path / "zeros.png", tmp_path / "tail.png"
    with open(zeros, "wb") as f:
        f.truncate(64 << 30)
    png = hostile.encode(Image.fromarray(hostile.photo(20, 12)), "PNG")
    with open(tail, "wb") as f:
        f.write(png)
        f.truncate(len(png) + (64 << 30))
    code = (
        "import sys\n"
        "from styler.errors import BadImageError\n"
        "from styler.imageio import load_image\n"
        "try:\n"
        "    load_image(sys.argv[1])\n"
        "except BadImageError as exc:\n"
        "    print(exc.reason)\n"
        "print(load_image(sys.argv[2]).size)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run(
        [sys.executable, "-c", code, str(zeros), str(tail)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "not an image file (or a format styler does not read)",
        "(20, 12)",
    ]


@pytest.mark.parametrize("tile", [None, 16])
def test_thin_images_keep_their_size_whole_and_in_tiles(
    tiny_resnet_onnx: Path, tmp_path: Path, tile: int | None
) -> None:
    """A ResNet's reflection pads need 2 pixels after two downsamplings:
    1 x N and 3 x N images are padded further (and cropped back), also in
    tiles and in the whole-image statistics that tiles use."""
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(1, 1), (1, 9), (13, 1), (3, 50), (70, 2), (5, 5)]
    for w, h in sizes:
        Image.fromarray(hostile.photo(w, h, w * h)).save(folder / f"{w}x{h}.png")
    out = tmp_path / "out"
    extra = ["--tile", str(tile)] if tile else []
    args = ["apply", str(folder), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q", *extra]
    result = styler(*args)
    assert result.returncode == 0, result.stderr.decode()
    for w, h in sizes:
        with Image.open(out / f"{w}x{h}.png") as styled:
            assert styled.size == (w, h)
            assert np.asarray(styled).std() > 0 or w * h == 1  # styled, not blank


# -- the corpus through training data loading ----------------------------------------------------


@pytest.fixture(scope="module")
def trained(
    corpus: tuple[Path, list[Case]], tmp_path_factory: pytest.TempPathFactory, drop: Preexec
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    """One training step with the corpus as domain A (and good images as B)."""
    pytest.importorskip("torch")
    root, _ = corpus
    base = tmp_path_factory.mktemp("train")
    good = base / "paintings"
    good.mkdir()
    for i in range(6):
        Image.fromarray(hostile.photo(44, 40, 100 + i)).save(good / f"q{i}.jpg")
    run = base / "run"
    args = [
        "-v",
        "train",
        str(root),
        str(good),
        "-o",
        str(run),
        "--steps",
        "1",
        *TINY_TRAIN,
        "--no-export",
        "--display",
        "quiet",
        "--workers",
        "1",
    ]
    return styler(*args, preexec=drop, timeout=600), run


def test_training_skips_each_bad_file_once_and_trains_on_the_good_ones(
    corpus: tuple[Path, list[Case]], trained: tuple[subprocess.CompletedProcess[bytes], Path]
) -> None:
    root, cases = corpus
    result, run = trained
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 0, stderr
    for case in cases:
        name = f"{shown(str(case.path))}:"
        mentions = stderr.count(name)
        if case.expect == "ignored" or case.decodable:
            assert mentions == 0, (case.name, stderr)
        else:
            assert mentions == 1, (case.name, stderr)  # reported once, with its reason
            line = stderr[stderr.index(name) :].split("\n")[0]
            if case.reason:
                assert case.reason in line, (case.name, line)
    # Trained on every good file that was not held out for samples.
    config = json.loads((run / "config.json").read_text())
    held = set(config["holdout_a"])
    usable = [c for c in cases if c.decodable and c.path.relative_to(root).as_posix() not in held]
    refused = [
        c
        for c in cases
        if c.expect == "failed"
        and not c.decodable
        and c.stage == "decode"
        and c.path.relative_to(root).as_posix() not in held
    ]
    match = re.search(r"corpus: (\d+) usable \((\d+) skipped\)", stderr)
    assert match, stderr
    assert (int(match.group(1)), int(match.group(2))) == (len(usable), len(refused))
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 1
    assert (run / "checkpoints" / "step_0000001.safetensors").is_file()


def test_training_reports_each_bad_file_on_one_line(
    corpus: tuple[Path, list[Case]], trained: tuple[subprocess.CompletedProcess[bytes], Path]
) -> None:
    _, cases = corpus
    lines = trained[0].stderr.decode("utf-8", "backslashreplace").splitlines()
    for case in cases:
        if case.expect == "failed" and not case.decodable:
            assert sum(shown(str(case.path)) in line for line in lines) == 1, case.name


def test_training_goes_on_when_the_held_out_images_are_bad(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from styler.training import data as D
    from styler.training.loop import WatchOptions, train
    from styler.training.setup import make_config

    a, b = tmp_path / "photos", tmp_path / "paintings"
    a.mkdir()
    b.mkdir()
    names = [f"p{i:02d}.png" for i in range(10)]
    for i, name in enumerate(names):
        Image.fromarray(hostile.photo(44, 40, i)).save(a / name)
        Image.fromarray(hostile.photo(44, 40, 50 + i)).save(b / f"q{i:02d}.png")
    for name in D.choose_holdout(names, seed=0):  # the one sample image of A
        (a / name).write_bytes(b"not an image")
    config, found = make_config(
        a, b, steps=1, generator="resnet_2blocks", ngf=8, ndf=8, size=32, seed=0
    )
    watch = WatchOptions(display="quiet", export=False, workers=1)
    result = train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    assert result.step == 1


def test_resume_removes_what_a_killed_checkpoint_write_left(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from styler.training.loop import WatchOptions, resume, train
    from styler.training.setup import make_config

    a, b = _training_folders(tmp_path, 4)
    watch = WatchOptions(display="quiet", export=False, workers=1, checkpoint_every=1)
    config, found = make_config(
        a, b, steps=1, generator="resnet_2blocks", ngf=8, ndf=8, size=32, seed=0
    )
    train(config, tmp_path / "run", device="cpu", watch=watch, found=found)
    ckpts = tmp_path / "run" / "checkpoints"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = ckpts / f".styler-{dead.pid}-a1b2c3d4.part"
    stale.write_bytes(b"half a checkpoint")  # what SIGKILL mid-write leaves
    assert resume(tmp_path / "run", device="cpu", watch=watch, steps=2).step == 2
    assert not stale.exists()


# -- hostile model files ----------------------------------------------------------------------


def _identity_model(rank: int = 4, metadata: str | None = None) -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape: list[str | int] = ["n", 3, "h", "w"] if rank == 4 else ["n", 3]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["styled"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    if metadata is not None:
        helper.set_model_props(model, {"styler": metadata})
    return model.SerializeToString()


def _styler_metadata() -> str:
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    return ModelMetadata(network=generator_preset("resnet_2blocks", ngf=8), name="liar").to_json()


def _external_data_model() -> bytes:
    """A graph whose weight is 'stored' in a file outside the model's folder."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((1,), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../../../../../../etc/hostname"), ("length", "4")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    shape: list[str | int] = ["n", 3, "h", "w"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["image", "w"], ["styled"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, shape)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    helper.set_model_props(model, {"styler": _styler_metadata()})
    return model.SerializeToString()


HOSTILE_MODELS: dict[str, tuple[Callable[[Path, Path], bytes | None], str]] = {
    "truncated ONNX": (
        lambda real, _: real.read_bytes()[: real.stat().st_size // 2],
        "not a loadable ONNX model",
    ),
    "random bytes named .onnx": (
        lambda *_: bytes(random.Random(7).randbytes(4096)),
        "not a loadable ONNX model",
    ),
    "empty file": (lambda *_: b"", "empty file"),
    "a folder named .onnx": (lambda *_: None, "is a directory"),
    "ONNX graph without styler metadata": (lambda *_: _identity_model(), "not a styler model"),
    "styler metadata, rank-2 input": (
        lambda *_: _identity_model(2, _styler_metadata()),
        "has rank 2, expected NCHW",
    ),
    "styler metadata that is not JSON": (
        lambda *_: _identity_model(4, "{not json"),
        "styler metadata is not valid JSON",
    ),
    "weights in external data outside the model's folder": (
        lambda *_: _external_data_model(),
        "External data path",
    ),
    "malicious pickle named .onnx": (
        lambda _, marker: EVIL_PICKLE % f"touch {marker}".encode(),
        "not a loadable ONNX model",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_MODELS))
def test_hostile_model_files_are_refused_in_one_line(
    kind: str, tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    build, reason = HOSTILE_MODELS[kind]
    folder = tmp_path / "models"
    folder.mkdir()
    marker = tmp_path / "PWNED"
    path = folder / "model.onnx"
    data = build(tiny_resnet_onnx, marker)
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    photo = tmp_path / "photo.png"
    Image.fromarray(hostile.photo(24, 16)).save(photo)
    out = tmp_path / "out"
    for args in (
        ["apply", str(photo), "-m", str(path), "-o", str(out)],
        ["info", str(path)],
        ["info", str(path), "--json"],
    ):
        result = styler(*args)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2, (args, lines)
        assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], lines
        assert result.stdout == b""
    assert not out.exists() and not marker.exists()


def test_a_model_that_fails_when_run_fails_each_file_in_one_line(tmp_path: Path) -> None:
    """A styler model whose graph passes every check but fails on real images
    (a Reshape to a fixed 8 x 8): each file fails with one line, exit 1."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    shape: list[str | int] = ["n", 3, "h", "w"]
    target = numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "target")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "target"], ["styled"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, shape)],
        initializer=[target],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    helper.set_model_props(model, {"styler": _styler_metadata()})
    path = tmp_path / "fails.onnx"
    path.write_bytes(model.SerializeToString())
    photos = tmp_path / "in"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(hostile.photo(24, 16, i)).save(photos / f"p{i}.png")
    out = tmp_path / "out"
    result = styler("apply", str(photos), "-m", str(path), "-o", str(out), "-q")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1, lines
    assert len(lines) == 2, lines  # onnxruntime's own error log stays silent
    for i, line in enumerate(lines):
        assert line.startswith(f"styler: {photos / f'p{i}.png'}: unexpected "), line
        assert "Reshape" in line
    assert files_below(out) == set()


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_a_malicious_pickle_is_never_run_by_any_command(tmp_path: Path) -> None:
    """Every command that reads a model or checkpoint file, given a pickle
    that would run a command: refused, and the command never runs. (styler
    import is tested with the same payload in test_cli and test_importer.)"""
    pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    payload = EVIL_PICKLE % f"touch {marker}".encode()
    photo = tmp_path / "photo.png"
    Image.fromarray(hostile.photo(24, 16)).save(photo)
    for name, args in (
        ("evil.pth", ["apply", "{}", "-m", "{path}", "-o", str(tmp_path / "o")]),
        ("evil.pth", ["info", "{path}"]),
        ("evil.pth", ["import", "{path}", "-o", str(tmp_path / "m.onnx")]),
        ("evil.safetensors", ["export", "{path}", "-o", str(tmp_path / "m.onnx")]),
    ):
        path = tmp_path / name
        path.write_bytes(payload)
        argv = [a.replace("{path}", str(path)).replace("{}", str(photo)) for a in args]
        result = styler(*argv)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and str(path) in lines[0], (argv, lines)
        assert not marker.exists(), argv
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.onnx").exists()


def test_the_source_never_unpickles() -> None:
    """weights_only=True on every torch.load; no pickle, marshal, eval or exec."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):  # to the matching ')'
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[match.start() : end + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{path}: {call}")
        code = re.sub(r"#.*", "", text)
        for pattern in (
            r"^\s*(import|from)\s+(pickle|cPickle|dill|marshal|shelve)\b",
            r"(?<![\w.])(eval|exec)\(",
            r"allow_pickle\s*=\s*True",
            r"yaml\.load\(",
        ):
            offenders += [f"{path}: {m.group(0)}" for m in re.finditer(pattern, code, re.M)]
    assert offenders == []


# -- names that try to escape, special files -----------------------------------------------------


def test_paths_from_stdin_never_write_outside_the_output_folder(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "in" / "sub").mkdir(parents=True)
    png = hostile.encode(Image.fromarray(hostile.photo(20, 12)), "PNG")
    (tmp_path / "outside.png").write_bytes(png)
    for name in ("in/a.png", "in/sub/b.png", "-rf.png", "--help.png", "in/sub/.. b.png"):
        (work / name).write_bytes(png)
    os.mkfifo(work / "pipe.png")
    out = work / "out"
    listing = [
        ("../outside.png", "ok", "outside.png"),
        (str(work / "in" / "a.png"), "ok", "a.png"),  # absolute: its name only
        ("in/sub/../sub/b.png", "ok", "b.png"),  # '..' inside: its name only
        ("in/sub/b.png", "ok", "in/sub/b.png"),  # relative: the path is kept
        ("-rf.png", "ok", "-rf.png"),
        ("--help.png", "ok", "--help.png"),
        ("./in/sub/.. b.png", "ok", "in/sub/.. b.png"),
        ("in/a.png/..", "failed", "cannot read: Not a directory"),
        ("/dev/zero", "failed", "not a regular file (device)"),
        ("pipe.png", "failed", "not a regular file (named pipe)"),
        ("missing.png", "failed", "no such file"),
    ]
    before = snapshot(tmp_path, skip=out)
    stdin = b"\0".join(os.fsencode(p) for p, _, _ in listing) + b"\0"
    args = ["apply", "-0", "-", "-m", str(tiny_resnet_onnx), "-o", "out", "--json", "-q"]
    result = styler(*args, stdin=stdin, cwd=work, timeout=120)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["input"] for r in records] == [str(Path(p)) for p, _, _ in listing]
    for record, (_, status, detail) in zip(records, listing, strict=True):
        assert record["status"] == status, record
        if status == "ok":
            assert record["output"] == os.path.join("out", detail)
        else:
            assert detail in record["error"], record
    root = os.path.realpath(out)
    for record in records:
        if record["output"]:
            target = os.path.realpath(work / record["output"])
            assert os.path.commonpath([root, target]) == root
    assert snapshot(tmp_path, skip=out) == before  # nothing written outside OUT
    assert len(files_below(out)) == sum(s == "ok" for _, s, _ in listing)

    # One path per line: a NUL byte inside a name is refused for that name only.
    lines = b"in/a.png\nin/a\0.png\n"
    model = str(tiny_resnet_onnx)
    result = styler("apply", "-", "-m", model, "-o", "o3", "--json", "-q", stdin=lines, cwd=work)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["status"] for r in records] == ["ok", "failed"], result.stderr
    assert "NUL byte" in records[1]["error"] and result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "styler: in/a\\x00.png: not a valid file name (it holds a NUL byte)"
    ]

    # A leading dash on the command line after '--' is a file, not an option.
    dashed = styler(
        "apply", "-m", str(tiny_resnet_onnx), "-o", "o2", "-q", "--", "-rf.png", cwd=work
    )
    assert dashed.returncode == 0, dashed.stderr
    assert (work / "o2" / "-rf.png").is_file()


# -- output folders that cannot be written, full disks ------------------------------------------


def test_an_output_folder_that_cannot_be_made_is_one_error_before_any_work(
    tiny_resnet_onnx: Path, tmp_path: Path, drop: Preexec
) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(hostile.photo(20, 12, i)).save(photos / f"p{i}.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file")
    for out, reason in (
        (blocker / "styled", "cannot create the output folder: Not a directory"),
        (blocker, "the output folder is a file"),
    ):
        result = styler("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out))
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2, lines
        assert lines == [f"styler: error: {out}: {reason}"]
        assert result.stdout == b""
    assert blocker.read_text() == "I am a file"
    if drop is None:
        pytest.skip("cannot drop root's permission override here")
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = styler(
            "apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(locked), preexec=drop
        )
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2, lines
        assert lines == [
            f"styler: error: {locked}: cannot write in the output folder: Permission denied"
        ]
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_atomic_writes_on_a_full_disk_fail_cleanly(tmp_path: Path) -> None:
    """What checkpoints, exports and reports are written with: on a full disk
    (a file size limit) a StylerError naming the file, and no file left."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from styler.errors import OutputError\n"
        "from styler.fsutil import atomic_write_bytes\n"
        f"target = Path({str(tmp_path / 'big.bin')!r})\n"
        "atomic_write_bytes(target.with_name('small.bin'), b'x' * 1000)\n"
        "try:\n"
        "    atomic_write_bytes(target, b'x' * 100_000)\n"
        "except OutputError as exc:\n"
        "    print(exc)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path / 'big.bin'}: cannot write: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.bin"]


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_line_and_no_broken_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    a, b = _training_folders(tmp_path, 6)
    run = tmp_path / "run"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    args = ["train", str(a), str(b), "-o", str(run), "--steps", "3", *TINY_TRAIN]
    args += ["--checkpoint-every", "1", "--no-export", "-q", "--workers", "1"]
    result = styler(*args, preexec=limit, timeout=600)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1, lines
    assert len(lines) == 1 and "cannot write: File too large" in lines[0], lines
    assert not [p for p in (run / "checkpoints").iterdir()]  # no partial checkpoint


# -- training killed at random moments ---------------------------------------------------------


def _training_folders(base: Path, count: int) -> tuple[Path, Path]:
    a, b = base / "photos", base / "paintings"
    for folder, seed in ((a, 0), (b, 50)):
        folder.mkdir()
        for i in range(count):
            Image.fromarray(hostile.photo(48, 44, seed + i)).save(folder / f"x{i}.png")
    return a, b


def _steps(folder: Path) -> list[int]:
    return sorted(int(p.name[5:12]) for p in folder.glob("step_*.safetensors"))


def _wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.002)
    if proc.poll() is not None:
        _, err = proc.communicate()
        raise AssertionError(f"training ended before it could be killed: {err.decode()[-2000:]}")


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> None:
    _wait_for(proc, ready, timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    TALLY["kills"] += 1


@pytest.mark.slow
def test_training_killed_mid_checkpoint_resumes_from_the_last_whole_one(tmp_path: Path) -> None:
    """SIGKILL while a checkpoint is being written (the model is large enough
    for a write to take a while) and at random moments; after each kill every
    checkpoint file reads whole, and --resume goes on from the newest. A
    damaged newest checkpoint is passed over."""
    pytest.importorskip("torch")
    from styler.training import state

    a, b = _training_folders(tmp_path, 6)
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    model = ["--mode", "cyclegan", "--gen", "resnet_6blocks", "--ngf", "32", "--ndf", "32"]
    model += ["--size", "32"]
    watch = ["--checkpoint-every", "1", "--keep-checkpoints", "3", "--no-export", "-q"]
    watch += ["--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    first = [sys.executable, "-m", "styler", "train", str(a), str(b), "-o", str(run)]
    first += ["--steps", "400", *model, *watch]
    again = [sys.executable, "-m", "styler", "train", "--resume", str(run), *watch]
    rng = random.Random(11)
    mid_write = 0
    for round_ in range(4):
        steps_before = _steps(ckpts)
        parts_before = set(ckpts.glob(".*.part")) if ckpts.exists() else set()
        cmd = first if round_ == 0 else again
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _wait_for(proc, lambda s=steps_before: _steps(ckpts)[-1:] != s[-1:], 600)  # progress
        if round_ % 2 == 0:  # then while the next checkpoint is being written
            parts_before = set(ckpts.glob(".*.part"))
            _kill_when(proc, lambda p=parts_before: bool(set(ckpts.glob(".*.part")) - p), 600)
        else:  # then at a random moment
            time.sleep(rng.uniform(0.0, 2.0))
            _kill_when(proc, lambda: True, 1)
        left = set(ckpts.glob(".*.part")) - parts_before
        mid_write += bool(left)  # the kill landed inside a write
        TALLY["kills inside a checkpoint write"] += bool(left)
        steps = _steps(ckpts)
        assert steps, "no checkpoint survived"
        for step in steps:  # every checkpoint under its final name is whole
            assert state.load(ckpts / state.checkpoint_name(step)).step == step
    assert mid_write >= 1, "no kill landed inside a checkpoint write"

    # A damaged newest checkpoint (a disk that lied) is passed over on resume.
    steps = _steps(ckpts)
    newest = ckpts / state.checkpoint_name(steps[-1])
    newest.write_bytes(newest.read_bytes()[:4096])
    target = steps[-1] + 2
    finish = subprocess.run(
        [*again, "--steps", str(target)], capture_output=True, text=True, env=env, timeout=900
    )
    assert finish.returncode == 0, finish.stderr
    assert "passing over" in finish.stderr
    assert _steps(ckpts)[-1] == target
    assert state.load(ckpts / state.checkpoint_name(target)).step == target
