"""Reliability, the fifth pass: what a fifth hostile review of every command
found. Each case runs through the real CLI on real files; each fails on the
code of the fifth pass's start (3d4e24a) for the reason its docstring gives.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_hostile import files_below, styler
from test_safety import _lines, _metadata, _model, _noise_model, _png
from test_safety_leftovers import stop_apply_midway
from test_safety_pass4 import _one_error, _photos

#: Subprocess-heavy: run by `pytest -m slow` (README), beside the other reliability passes.
pytestmark = pytest.mark.slow

QUICK = 120


def _run(
    *args: str, env: dict[str, str], drop: tuple[str, ...] = (), cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``styler ARGS`` with extra environment variables and without those in
    ``drop`` (the test_hostile helper takes none); a traceback or a signal
    fails the test at once."""
    gone = {"PYTHONWARNINGS", *drop}
    full = {k: v for k, v in os.environ.items() if k not in gone}
    full.update(NO_COLOR="1", **env)
    result = subprocess.run(
        [sys.executable, "-m", "styler", *args],
        capture_output=True,
        cwd=cwd,
        env=full,
        timeout=QUICK,
    )
    crashed = result.returncode < 0 or b"Traceback (most recent call last)" in result.stderr
    assert not crashed, result.stderr.decode(errors="replace")[-3000:]
    return result


def _names(root: Path) -> set[str]:
    """The names of every file below ``root``, hidden ones included."""
    return {os.fsdecode(os.path.basename(p)) for p in files_below(root)}


def _only_styler_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    lines = _lines(result)
    assert all(line.startswith("styler: ") for line in lines), lines
    return lines


# -- apply: images --------------------------------------------------------------------------------


def test_a_multi_picture_jpeg_keeps_its_format_and_name(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """Phones and 3D cameras write JPEGs with an MPF segment (a second,
    smaller picture: depth map, HDR gain map); Pillow calls their format
    "MPO". styler decodes them (the first picture) but took MPO for a format
    it cannot keep: `camera.jpg` was written as a PNG, `camera.png`, and
    beside a `camera.png` of the user's, one of the two failed."""
    src = tmp_path / "in"
    src.mkdir()
    first = Image.fromarray(np.full((16, 24, 3), 90, np.uint8))
    second = Image.fromarray(np.full((8, 12, 3), 200, np.uint8))
    first.save(src / "camera.jpg", format="MPO", save_all=True, append_images=[second])
    assert Image.open(src / "camera.jpg").format == "MPO"
    _png(src / "camera.png", seed=1)
    out = tmp_path / "out"
    result = styler("apply", str(src), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q")
    assert result.returncode == 0, _lines(result)
    assert _names(out) == {"camera.jpg", "camera.png"}
    with Image.open(out / "camera.jpg") as img:
        assert img.format in ("JPEG", "MPO") and img.size == (24, 16)


def _png16_grey_with_transparent_colour(path: Path) -> int:
    """A 16-bit greyscale PNG whose tRNS chunk makes one grey level
    transparent (PNG's colour-key transparency); returns how many pixels."""
    grey = np.zeros((16, 24), np.uint16)
    grey[:, 12:] = 40000
    grey[4:8, 4:8] = 1234  # the transparent level
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in grey)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 24, 16, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tRNS", struct.pack(">H", 1234))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return 16


def test_a_sixteen_bit_grey_png_keeps_its_transparent_colour(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """README: alpha is kept, dropped (with a warning) only for JPEG. An
    8-bit palette or grey PNG's transparent colour becomes alpha, but a
    16-bit grey PNG's (Pillow mode I;16 with info['transparency']) was
    silently dropped: the output was opaque RGB, no warning."""
    src = tmp_path / "key.png"
    transparent = _png16_grey_with_transparent_colour(src)
    with Image.open(src) as img:
        assert img.mode == "I;16" and img.info.get("transparency") == 1234
    out = tmp_path / "out"
    result = styler("apply", str(src), "-m", str(tiny_resnet_onnx), "-o", str(out), "--json")
    assert result.returncode == 0, _lines(result)
    with Image.open(out / "key.png") as img:
        assert img.size == (24, 16)
        alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    assert int((alpha == 0).sum()) == transparent, "the transparent colour was lost"


def test_an_output_too_wide_for_jpeg_fails_in_styler_words_only(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`--format jpg` of a 70000 x 1 image (JPEG holds at most 65500 pixels a
    side): libjpeg printed its own line ("Maximum supported image dimension
    is 65500 pixels") on stderr beside styler's, whose reason was a
    misleading "cannot write: broken data stream when writing image file"."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((1, 70000, 3), 128, np.uint8)).save(src / "wide.png")
    _png(src / "ok.png")
    out = tmp_path / "out"
    result = styler(
        "apply", str(src), "-m", str(tiny_resnet_onnx), "-o", str(out), "--format", "jpg", "-q"
    )
    assert result.returncode == 1
    lines = _only_styler_lines(result)
    assert len(lines) == 1 and "wide.png" in lines[0], lines
    assert "65500" in lines[0] or "too large for JPEG" in lines[0], lines
    assert _names(out) == {"ok.jpg"}


def test_a_file_made_at_an_output_path_after_planning_is_not_replaced(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """Without --overwrite an existing output is kept, but "exists" was
    decided when the input was planned: a file that appeared at that path
    before the encode (the user's, or another styler's writing into the same
    folder) was replaced by the atomic rename, silently. Here stdin holds
    the run after planning the first path, while the file appears."""
    photo = tmp_path / "a.png"
    _png(photo)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = ["apply", "-", "-m", str(tiny_resnet_onnx), "-o", str(out), "--json", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "styler", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"{photo}\n".encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not out.is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # the first path is read and planned; styler waits for more
    mine = b"the user's own file, made while styler ran"
    (out / "a.png").write_bytes(mine)
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() must not flush it again
    stdout, stderr = proc.communicate(timeout=QUICK)
    assert b"Traceback" not in stderr
    assert (out / "a.png").read_bytes() == mine, "a file the user had was replaced"
    assert b'"status": "ok"' not in stdout


def test_a_shipped_model_name_is_found_beside_a_folder_of_that_name(tmp_path: Path) -> None:
    """`styler apply photos -m photo2painting.int8 -o photo2painting.int8`
    worked once; run again, the output folder it made in the working
    directory shadowed the shipped name: `is a directory, not an ONNX model
    file`, exit 2. A folder is never a model."""
    photos = _photos(tmp_path / "photos")
    (tmp_path / "photo2painting.int8").mkdir()
    result = styler("apply", "photos", "-m", "photo2painting.int8", "-o", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, _lines(result)
    assert _names(tmp_path / "out") == {p.name for p in photos.iterdir()}


# -- generate ------------------------------------------------------------------------------------


def test_a_grid_never_takes_the_place_of_this_runs_own_outputs(tmp_path: Path) -> None:
    """`--grid OUT/sample_00000.png --overwrite`: the grid replaced the sample
    this run had just written (and printed that path twice). `--grid OUT`
    (the output folder itself, not there yet): the check that refuses a
    folder ran before the folder was made; every image was generated, then
    `exists; pass --overwrite`, and with --overwrite `cannot write: Is a
    directory`, exit 1. Both are usage errors, before any work."""
    model = _noise_model(tmp_path / "g.onnx", 8)
    out = tmp_path / "gen"
    grid = out / "sample_00000.png"
    result = styler(
        "generate", str(model), "-n", "3", "-o", str(out), "--grid", str(grid), "--overwrite"
    )
    printed = result.stdout.decode().splitlines()
    assert len(printed) == len(set(printed)), printed
    if grid.exists():
        with Image.open(grid) as img:
            assert img.size == (4, 4), "the sample was replaced by the grid"

    folder = tmp_path / "gen2"
    result = styler(
        "generate", str(model), "-n", "3", "-o", str(folder), "--grid", str(folder), "--overwrite"
    )
    _one_error(result, 2, str(folder))
    assert not any(folder.glob("sample_*.png"))


# -- train and the torch commands: environment --------------------------------------------------


def test_a_torchrun_world_without_a_rendezvous_address_is_one_line(tmp_path: Path) -> None:
    """WORLD_SIZE=2 RANK=0 (a script that sets the world but not where to
    meet): torch's `ValueError: ... environment variable MASTER_ADDR
    expected, but not set` came out as a traceback, exit 1."""
    pytest.importorskip("torch")
    a, b = _photos(tmp_path / "a"), _photos(tmp_path / "b")
    run = tmp_path / "run"
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    args = ["train", str(a), str(b), "-o", str(run), "--mode", "cyclegan", "--steps", "1"]
    args += ["--size", "32", "--ngf", "8", "--ndf", "8", "--gen", "resnet_2blocks", "-q"]
    result = _run(*args, env=env, drop=("MASTER_ADDR", "MASTER_PORT"))
    _one_error(result, 2, "MASTER_ADDR")
    assert not run.exists()


def test_an_unreadable_omp_num_threads_adds_no_library_line(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """OMP_NUM_THREADS=abc: every command that imports torch (train, export,
    import, quantize, eval) had libgomp print `libgomp: Invalid value for
    environment variable OMP_NUM_THREADS` and a blank line on stderr
    (apply, on onnxruntime alone, was quiet)."""
    pytest.importorskip("torch")
    photos = _photos(tmp_path / "photos", 3)
    result = _run(
        "quantize",
        str(tiny_resnet_onnx),
        "--calibration",
        str(photos),
        "-o",
        str(tmp_path / "q.onnx"),
        "--min-psnr",
        "0",
        env={"OMP_NUM_THREADS": "abc"},
    )
    assert result.returncode == 0, _lines(result)
    assert result.stderr.strip(), "quantize says what it wrote"
    _only_styler_lines(result)
    assert b"\n\n" not in result.stderr


# -- what the fifth pass left as judgement calls, decided ----------------------------------------


def test_import_with_an_arch_of_another_kind_says_so(tmp_path: Path) -> None:
    """`import --arch unet_256` of a ResNet checkpoint: the reason was a
    Python message (`__init__() got an unexpected keyword argument
    'num_downs'`)."""
    pytest.importorskip("torch")
    source = Path(__file__).parent / "fixtures" / "reference" / "resnet_6blocks_ngf16_instance.pth"
    out = tmp_path / "i.onnx"
    result = styler("import", str(source), "--arch", "unet_256", "-o", str(out))
    _one_error(result, 2, "holds a resnet_6blocks generator (resnet), not a unet one")
    assert not out.exists()


def test_quantize_limit_below_two_is_a_usage_error(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """`--limit 1` was accepted, then "needs at least 2 images, found 1"
    blamed the folder (which held 3)."""
    photos = _photos(tmp_path / "in", 3)
    args = ["--calibration", str(photos), "--limit", "1", "-o", str(tmp_path / "q.onnx")]
    _one_error(styler("quantize", str(tiny_resnet_onnx), *args), 2, "--limit", "equal to 2")


@pytest.mark.parametrize("version", [0, -5])
def test_metadata_of_format_version_below_one_is_refused(tmp_path: Path, version: int) -> None:
    from onnx import helper

    node = helper.make_node("Identity", ["image"], ["styled"])
    model = _model(tmp_path / "m.onnx", [node], metadata=_metadata(format_version=version))
    _one_error(styler("info", str(model)), 2, f"format_version {version}")


def test_sighup_stops_apply_with_nothing_half_written(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """The terminal or the ssh session closed (SIGHUP) during a batch: the
    process died at once and could leave `.part` files; it now stops as on
    SIGTERM, exit 129."""
    stop_apply_midway(tiny_resnet_onnx, tmp_path, signal.SIGHUP)


def test_a_write_that_finds_its_own_bytes_there_is_done(tmp_path: Path) -> None:
    """Without --overwrite, an output that appeared meanwhile is kept; one
    holding the very bytes being written is this write done already (a Ray
    block retried after its worker died had published some outputs, which
    the retry then counted as skipped)."""
    from styler.errors import OutputExistsError
    from styler.fsutil import atomic_path, atomic_write_bytes, remove_stale_parts

    path = tmp_path / "a.png"
    atomic_write_bytes(path, b"styled")
    with atomic_path(path, replace=False) as tmp:
        tmp.write_bytes(b"styled")  # the same bytes: done, no error
    with (
        pytest.raises(OutputExistsError, match="appeared while styler wrote it"),
        atomic_path(path, replace=False) as tmp,
    ):
        tmp.write_bytes(b"other")
    assert path.read_bytes() == b"styled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert remove_stale_parts(tmp_path) == []
