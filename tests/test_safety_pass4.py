"""Reliability, the fourth pass: what a fourth hostile review of every command
found. Each case runs through the real CLI on real files (docs/RELIABILITY.md
lists them, key P4); each failed on the code before its fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_hostile import files_below, styler
from test_safety import _dead_pid, _lines, _metadata, _model, _noise_model, _png

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

#: Long enough for a command that refuses at once; the old code blocked forever.
QUICK = 60


def _one_error(result: subprocess.CompletedProcess[bytes], code: int, *words: str) -> str:
    lines = _lines(result)
    assert result.returncode == code, lines
    assert len(lines) == 1 and lines[0].startswith("styler: error: "), lines
    assert all(w in lines[0] for w in words), lines
    assert b"Traceback" not in result.stderr
    return lines[0]


def _photos(folder: Path, count: int = 2) -> Path:
    for i in range(count):
        _png(folder / f"p{i}.png", seed=i)
    return folder


def test_a_model_file_that_is_a_pipe_is_refused_not_read(tmp_path: Path) -> None:
    """A named pipe given as the model: onnxruntime and torch.load would wait
    on it forever (every command hung)."""
    photos = _photos(tmp_path / "in")
    model, pth = tmp_path / "m.onnx", tmp_path / "g.pth"
    os.mkfifo(model)
    os.mkfifo(pth)
    out = tmp_path / "out"
    for args in (
        ["info", str(model)],
        ["apply", str(photos), "-m", str(model), "-o", str(out)],
        ["quantize", str(model), "--calibration", str(photos), "-o", str(tmp_path / "q.onnx")],
        ["generate", str(model), "-o", str(out)],
        ["import", str(pth), "-o", str(tmp_path / "i.onnx")],
    ):
        result = styler(*args, timeout=QUICK)
        _one_error(result, 2, "not a regular file (named pipe, device or socket)")
    assert not out.exists()


def test_a_model_that_fails_when_run_is_one_model_error(tmp_path: Path) -> None:
    """A graph that passes every check but fails on real inputs: quantize and
    generate (no image to fail alone) printed onnxruntime's traceback; a
    graph whose input has a fixed size failed each image with a cut-off line."""
    photos = _photos(tmp_path / "in")
    target = numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "target")
    reshape = helper.make_node("Reshape", ["image", "target"], ["styled"])
    fails = _model(tmp_path / "fails.onnx", [reshape], initializers=[target])
    result = styler("quantize", str(fails), "--calibration", str(photos), "-o", "x.onnx")
    _one_error(result, 2, str(fails), "the graph failed when run", "Reshape")

    generator = _noise_model(tmp_path / "g.onnx", 8, forged_latent=12)  # its MatMul fails
    result = styler("generate", str(generator), "-o", str(tmp_path / "gen"), "-n", "2")
    _one_error(result, 2, "the graph failed when run", "MatMul")
    assert files_below(tmp_path / "gen") == set()

    fixed = _fixed_size_model(tmp_path / "fixed.onnx")
    for args in (["info", str(fixed)], ["apply", str(photos), "-m", str(fixed), "-o", "o"]):
        _one_error(styler(*args, cwd=tmp_path), 2, "has a fixed size (32 x 32)")
    assert not (tmp_path / "o").exists()


def _fixed_size_model(path: Path) -> Path:
    """An Identity whose input and output are 1 x 3 x 32 x 32 only."""
    shape = [1, 3, 32, 32]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["styled"])],
        "g",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", onnx.TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    helper.set_model_props(model, {"styler": _metadata()})
    path.write_bytes(model.SerializeToString())
    return path


def test_an_output_that_is_not_a_file_is_never_replaced(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A named pipe, a device or a folder where an output goes: the atomic
    rename put a file in place of a pipe (with --overwrite: as root, of
    /dev/null too, which the message even advised); apply and generate took
    a folder there for an earlier result (skipped, exit 0, no output)."""
    photos = _photos(tmp_path / "in", 3)
    pipe = tmp_path / "pipe.onnx"
    os.mkfifo(pipe)
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    for target in (pipe, folder):
        args = ["--calibration", str(photos), "-o", str(target), "--overwrite"]
        result = styler("quantize", str(tiny_resnet_onnx), *args, "--min-psnr", "0")
        _one_error(result, 2, str(target), "exists and is not a file")
    assert pipe.is_fifo() and folder.is_dir()

    generator = _noise_model(tmp_path / "g.onnx", 8)
    args = ["-o", str(tmp_path / "gen"), "--grid", str(pipe), "--overwrite"]
    _one_error(styler("generate", str(generator), *args), 2, "exists and is not a file")
    assert not (tmp_path / "gen").exists() and pipe.is_fifo()
    (tmp_path / "gen2" / "sample_00000.png").mkdir(parents=True)
    result = styler("generate", str(generator), "-o", str(tmp_path / "gen2"), "-n", "2")
    _one_error(result, 1, "sample_00000.png", "exists and is not a file")

    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "p0.png")
    (out / "p1.png").mkdir()
    (out / "p2.png").symlink_to("/proc/self/fd/1")
    for flags in ([], ["--overwrite"]):
        result = styler("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), *flags)
        assert result.returncode == 1
        failed = [line for line in _lines(result) if "p0" in line or "p1" in line]
        assert len(failed) == 2 and all("exists and is not a file" in f for f in failed), failed
        assert f"{out / 'p2.png'} leads out of the output folder" in result.stderr.decode()
    assert (out / "p0.png").is_fifo() and (out / "p1.png").is_dir()


def test_a_part_left_by_a_killed_quantize_is_removed(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A killed quantize, export or import left its hidden 30 MB temporary
    file beside the output for good; the next one removes it (a user's own
    ``.part`` file is kept)."""
    photos = _photos(tmp_path / "in")
    out = tmp_path / "models"
    out.mkdir()
    stale = out / f".styler-{_dead_pid()}-abcdefgh.part"
    stale.write_bytes(b"half a model")
    (out / ".notes.part").write_bytes(b"mine")
    args = ["--calibration", str(photos), "-o", str(out / "q.onnx"), "--min-psnr", "0"]
    result = styler("quantize", str(tiny_resnet_onnx), *args)
    assert result.returncode == 0, _lines(result)
    assert not stale.exists() and (out / ".notes.part").exists()


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_a_part_left_by_a_killed_export_or_import_is_removed(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "models"
    out.mkdir()
    source = Path(__file__).parent / "fixtures" / "reference" / "resnet_6blocks_ngf16_instance.pth"
    for command in ("import", "export"):
        stale = out / f".styler-{_dead_pid()}-abcdefgh.part"
        stale.write_bytes(b"half a model")
        result = styler(command, str(source), "-o", str(out / f"{command}.onnx"))
        assert result.returncode == 0, _lines(result)
        assert not stale.exists()
        source = _weights(tmp_path)


def _weights(tmp_path: Path) -> Path:
    import torch

    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    meta = ModelMetadata(network=config, name="w", train_size=32)
    return save_generator(tmp_path / "w.safetensors", net.state_dict(), meta)


def test_stdout_that_cannot_be_written_is_one_line(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """stdout on a full disk (/dev/full): every command printed a traceback;
    a closed stdout (``>&-``): apply crashed before styling anything."""
    photos = _photos(tmp_path / "in")
    runs = [
        ["apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(tmp_path / "a")],
        ["info", str(tiny_resnet_onnx)],
        ["info", str(tiny_resnet_onnx), "--json"],
        ["models"],
    ]
    env = dict(os.environ, NO_COLOR="1")
    for args in runs:
        with open("/dev/full", "wb") as full:
            cmd = [sys.executable, "-m", "styler", *args]
            result = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
        lines = _lines(result)  # type: ignore[arg-type]
        assert result.returncode == 1, lines
        assert lines[-1] == "styler: error: stdout: cannot write: No space left on device", lines
        assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr

    out = tmp_path / "closed"
    cmd = [sys.executable, "-m", "styler", "apply", str(photos), "-m", str(tiny_resnet_onnx)]
    result = subprocess.run(
        [*cmd, "-o", str(out), "-q"],
        stderr=subprocess.PIPE,
        env=env,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_a_symbolic_link_loop_as_a_training_folder_is_one_line(tmp_path: Path) -> None:
    """Python 3.11's pathlib raises RuntimeError on a symlink loop: each of
    these printed a traceback."""
    pytest.importorskip("torch")
    good = _photos(tmp_path / "good", 3)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    tiny = ["-o", str(tmp_path / "run"), "--steps", "1", "--size", "32", "-q"]
    for data in ([str(loop), str(good)], [str(good), str(loop)], ["--aligned", str(loop)]):
        result = styler("train", *data, *tiny)
        _one_error(result, 2, str(loop), "Too many levels of symbolic links")
    assert not (tmp_path / "run").exists()
