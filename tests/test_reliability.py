"""Interruptions and full disks: nothing half-written survives, reruns finish."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _folder(root: Path, count: int, size: tuple[int, int] = (160, 120)) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BICUBIC).save(root / f"p{i:02d}.png")
    return root


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_sigkill_then_rerun_leaves_only_complete_outputs(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    src = _folder(tmp_path / "in", 30)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "styler",
        "apply",
        str(src),
        "-m",
        str(tiny_resnet_onnx),
        "-o",
        str(out),
        "-q",
        "--workers",
        "1",
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # What a writer killed in the middle of a write leaves behind:
    out.mkdir(exist_ok=True)
    stale = out / f".styler-{_dead_pid()}-x1y2z3ab.part"
    stale.write_bytes(b"\x89PNG half an image")
    finished = {p.name for p in out.glob("*.png")}
    for name in finished:
        Image.open(out / name).load()  # every visible output is complete

    again = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    statuses = [json.loads(line)["status"] for line in again.stdout.splitlines()]
    assert statuses.count("skipped") == len(finished)
    assert statuses.count("ok") == 30 - len(finished)
    assert sorted(p.name for p in out.iterdir()) == [f"p{i:02d}.png" for i in range(30)]


def test_disk_full_fails_those_files_cleanly(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """With a file size limit (as on a full disk) big outputs fail one by one
    with a clear line, small ones are written, and no partial file remains."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(src / "big.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "small.png")
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "styler",
            "apply",
            str(src),
            "-m",
            str(tiny_resnet_onnx),
            "-o",
            str(out),
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["small.png"]["status"] == "ok"
    assert records["big.png"]["status"] == "failed"
    assert "cannot write" in records["big.png"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]
    assert f"{src / 'big.png'}: cannot write" in result.stderr
