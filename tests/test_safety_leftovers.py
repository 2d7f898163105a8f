"""Reliability: what the fourth hostile pass noticed and left, fixed before
the fifth. Each case runs through the real CLI on real files (key L in
docs/RELIABILITY.md) and failed on the code before its fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_hostile import styler
from test_safety import _lines, _png
from test_safety_pass4 import _one_error, _photos


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["apply", "in", "--nope"], ["No such option: --nope", "styler apply --help"]),
        (["apply"], ["Missing argument", "styler apply --help"]),
        (["generate", "m.onnx", "-n", "many"], ["'-n' / '--count'", "styler generate --help"]),
        (["quantize", "m.onnx"], ["Missing option '--calibration'"]),
        (["colour"], ["No such command 'colour'", "styler --help"]),
    ],
)
def test_an_option_the_parser_refuses_is_one_line(args: list[str], words: list[str]) -> None:
    """click's display of a usage error took three lines (usage, a hint, then
    the error); every other styler error is one."""
    _one_error(styler(*args, timeout=60), 2, *words)


def stop_apply_midway(model: Path, tmp_path: Path, sig: signal.Signals) -> list[Path]:
    """Send ``sig`` to `styler apply` once its first output is written; check
    that it stopped as on Ctrl-C (exit 128 + sig, the "stopped" line, no
    traceback, no temporary file, every output whole and every printed path
    one of them) and return the outputs."""
    photos = tmp_path / "in"
    for i in range(60):
        _png(photos / f"p{i:02d}.png", 384, 384, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "styler", "apply", str(photos), "-m", str(model)]
    proc = subprocess.Popen(
        [*cmd, "-o", str(out), "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, NO_COLOR="1"),
        # As a terminal would start it: under `nohup` (a CI runner) SIGHUP is
        # inherited ignored, and styler rightly leaves an ignored signal so.
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("p*.png"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    lines = stderr.decode().splitlines()
    assert proc.returncode == 128 + sig, lines
    assert lines[-1] == f"styler: stopped ({sig.name}); nothing half-written is left", lines
    assert b"Traceback" not in stderr
    written = sorted(out.iterdir())
    assert not [p for p in written if p.name.endswith(".part")], written
    assert 0 < len(written) < 60, f"{sig.name} came after the batch: give it more work"
    from PIL import Image

    for path in written:
        with Image.open(path) as image:
            assert image.size == (384, 384) and np.asarray(image).shape == (384, 384, 3)
    assert {Path(p) for p in stdout.decode().split()} <= set(written)
    return written


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_sigterm_stops_apply_with_nothing_half_written(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """``kill`` (SIGTERM) during a batch: the process died at once, exit -15,
    leaving hidden ``.part`` files beside the outputs. Now it stops as Ctrl-C
    does: outputs written so far are whole, no temporary file is left, and
    the exit code is the shell's for SIGTERM (143)."""
    stop_apply_midway(tiny_resnet_onnx, tmp_path, signal.SIGTERM)


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_a_calibration_folder_that_cannot_be_read_says_why(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """``quantize --calibration LOOP`` said only "needs at least 2 readable
    images", not which folder nor what was wrong with it."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    out = tmp_path / "q.onnx"
    result = styler("quantize", str(tiny_resnet_onnx), "--calibration", str(loop), "-o", str(out))
    _one_error(result, 2, f"--calibration {loop}", "Too many levels of symbolic links")
    empty = tmp_path / "empty"
    _photos(empty, 1)
    result = styler("quantize", str(tiny_resnet_onnx), "--calibration", str(empty), "-o", str(out))
    _one_error(result, 2, f"--calibration {empty}", "at least 2 images, found 1")
    assert not out.exists()


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
@pytest.mark.parametrize(
    ("env", "name"),
    [({"WORLD_SIZE": "abc"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK")],
)
def test_a_torchrun_variable_that_is_not_a_number_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    pytest.importorskip("torch")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    a, b = _photos(tmp_path / "a"), _photos(tmp_path / "b")
    run = tmp_path / "run"
    result = styler("train", str(a), str(b), "-o", str(run), "--steps", "1", "--size", "32", "-q")
    _one_error(result, 2, f"environment variable {name}={env[name]!r}")
    assert not run.exists()


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_steps_edited_in_config_json_are_used_and_said(tmp_path: Path) -> None:
    """A resume after config.json's ``steps`` was edited by hand replaced the
    edit with the checkpoints' length without a word; it is now taken as
    ``--steps`` would be, and said."""
    pytest.importorskip("torch")
    a, b = _photos(tmp_path / "a", 3), _photos(tmp_path / "b", 3)
    run = tmp_path / "run"
    tiny = ["--size", "32", "--ngf", "8", "--ndf", "8", "--mode", "fastcut", "-q"]
    result = styler("train", str(a), str(b), "-o", str(run), "--steps", "2", *tiny)
    assert result.returncode == 0, _lines(result)
    config = json.loads((run / "config.json").read_text())
    config["steps"] = 4
    (run / "config.json").write_text(json.dumps(config))
    result = styler("train", "--resume", str(run), "-q")
    assert result.returncode == 0, _lines(result)
    assert any("asks for 4 steps, the run's checkpoints 2" in line for line in _lines(result))
    assert json.loads((run / "config.json").read_text())["steps"] == 4
    records = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line).get("step", 0) for line in records]
    assert max(steps) == 4
