"""Reliability, the twenty-eighth pass: what a twenty-eighth hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-eighth pass's start (pass28, 6af9426) for the reason its
docstring gives.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _model
from test_safety_pass7 import _one_line, _photos, _run
from test_safety_pass9 import train_args

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def test_export_of_a_run_folder_refuses_the_flags_it_cannot_honour(tmp_path: Path) -> None:
    """`styler export RUN --license CC-BY-4.0 --description "..."`: a run
    folder's models are named and described from its config, and
    `--output` and `--name` given with a run folder are refused (exit 2),
    but `--license` and `--description` were dropped without a word: exit
    0, and the exported models carry no licence, which the user asked for
    and will ship believing it is there. Every flag that does not apply is
    refused the same way, naming the flags, and nothing is written."""
    run = tmp_path / "run"
    trained = _run(*train_args(tmp_path, run, "--steps", "2"), timeout=240)
    assert trained.returncode == 0, trained.stderr.decode(errors="replace")
    exported = {p.name for p in run.glob("*.onnx")}
    before = {p.name: p.stat().st_mtime_ns for p in run.glob("*.onnx")}
    for flags, named in (
        (["--license", "CC-BY-4.0"], "--license"),
        (["--description", "mine"], "--description"),
        (["--license", "MIT", "--name", "x"], "--name and --license"),
    ):
        line = _one_line(_run("export", str(run), "--overwrite", *flags), 2)
        assert line.startswith("styler: error: ") and named in line, line
        assert "not apply to a run folder" in line, line
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("*.onnx")} == before
    assert {p.name for p in run.glob("*.onnx")} == exported  # nothing new written
    # Without those flags, --overwrite re-exports the same models from the
    # latest checkpoint (moved here from the default suite's run-folder test).
    replaced = _run("export", str(run), "--overwrite", timeout=240)
    assert replaced.returncode == 0, replaced.stderr.decode(errors="replace")
    assert sorted(Path(x).name for x in replaced.stdout.decode().split()) == sorted(exported)
    assert all(before[p.name] != p.stat().st_mtime_ns for p in run.glob("*.onnx"))


def test_a_calibration_path_that_is_no_folder_says_so(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler quantize m.onnx --calibration ./no_such_folder` (a typo) said
    "int8 calibration needs at least 2 images, found 1": the missing path
    was counted as an image and its error left for decoding, which never
    came, so the user is told to add images to a folder that is not there.
    A model file given as the calibration (arguments swapped) said the
    same. The line names the real cause, and nothing is written."""
    out = tmp_path / "q.onnx"
    model = str(tiny_resnet_onnx)
    missing = tmp_path / "no_such_folder"
    line = _one_line(_run("quantize", model, "--calibration", str(missing), "-o", str(out)), 2)
    assert line == f"styler: error: --calibration {missing}: no such folder", line
    line = _one_line(_run("quantize", model, "--calibration", model, "-o", str(out)), 2)
    assert line.startswith(f"styler: error: --calibration {model}: not a folder"), line
    assert not out.exists()
    # A real folder is still taken: two photos calibrate.
    photos = _photos(tmp_path / "photos", 2, (32, 32))
    ok = _run("quantize", model, "--calibration", str(photos), "-o", str(out), "--min-psnr", "0")
    assert ok.returncode == 0, ok.stderr.decode(errors="replace")
    assert out.is_file()


def test_images_written_before_a_model_error_are_listed(tmp_path: Path) -> None:
    """A model that keeps its promise on some sizes and breaks it on others
    (here: it crops its output to 40 rows, so a 32x32 image comes back
    whole and a 64x64 one 40 rows tall). Six 32x32 photos, then one 64x64:
    the run stops with the model error, once, exit 2, as it should; but
    the six images already styled were in the encoders' queue, which only
    a Ctrl-C or SIGTERM drained: those an encoder had begun were written
    but never listed on `--json`'s stdout, the rest were dropped. Images
    styled before the model broke its promise are good: each is written
    whole and listed, and the model error comes after them."""
    photos = _photos(tmp_path / "in", 6, (32, 32))
    _photos(tmp_path / "big", 1, (64, 64))
    os.replace(tmp_path / "big" / "p0000.png", photos / "z_big.png")  # sorted last
    consts = [
        numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in (("starts", [0]), ("ends", [40]), ("axes", [2]))
    ]
    crop = helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["styled"])
    model = _model(tmp_path / "crop.onnx", [crop], initializers=consts)
    out = tmp_path / "out"
    result = _run("apply", str(photos), "-m", str(model), "-o", str(out), "--json", "-q")
    line = _one_line(result, 2)
    assert line.startswith(f"styler: error: {model}: the graph returned an output of shape"), line
    records = [json.loads(x) for x in result.stdout.decode().splitlines()]
    written = sorted(os.listdir(out))
    assert written == [f"p{i:04d}.png" for i in range(6)], written
    assert sorted(Path(r["output"]).name for r in records) == written, records
    assert all(r["status"] == "ok" for r in records), records
