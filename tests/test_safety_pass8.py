"""Reliability, the eighth pass: what an eighth hostile review of every
command found (paths without a name, inputs and outputs that change while a
command runs, aliases of a folder, a dataset row without a path). Each case
runs through the real CLI (or the documented Python API) on tiny files; each
fails on the code of the eighth pass's start (wt8, cf41642) for the reason
its docstring gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_safety_pass7 import QUICK, _env, _one_line, _photos, _run

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
#: They start Ray or join it (`--ray auto`): under `pytest -n 2 --dist
#: loadgroup` (README) they run in one worker, one at a time.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _image(path: Path, seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


# -- a path without a name --


@pytest.mark.parametrize(
    "args",
    [
        ["import", "."],
        ["import", "/"],
        ["import", ""],
        ["quantize", ".", "--calibration", "CAL"],
        ["quantize", "/", "--calibration", "CAL"],
    ],
    ids=["import-dot", "import-root", "import-empty", "quantize-dot", "quantize-root"],
)
def test_a_model_path_without_a_name_is_one_line(args: list[str], tmp_path: Path) -> None:
    """`import` and `quantize` make their default output name with
    `Path.with_suffix` before they look at the input: for `.`, `/` or an
    empty argument (`styler import "$UNSET"`) pathlib raises
    `ValueError: PosixPath('.') has an empty name`, a traceback with exit 1,
    where `import ..` and `quantize ..` say `is a directory` in one line,
    exit 2."""
    photos = _photos(tmp_path / "cal", 2, (16, 16))
    args = [str(photos) if a == "CAL" else a for a in args]
    result = _run(*args, cwd=tmp_path)
    line = _one_line(result, 2)
    assert line.startswith("styler: error: "), line
    assert result.stdout == b""


# -- files that change while a command runs --


def test_an_input_replaced_during_the_run_is_still_never_overwritten(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """In place with `--overwrite --format png`, `zz.jpg`'s output is
    `zz.png`, another input: refused (`would overwrite the input zz.png`).
    But inputs are told apart by (device, inode), noted when the run lists
    them. A `zz.png` saved again while the run goes on (an editor, a sync
    tool or styler itself writes a new file and renames it over the old:
    a new inode) is no longer known as an input when `zz.jpg` is planned:
    it is replaced by `zz.jpg`'s styled output, and the run exits 0. The
    user's new `zz.png` is lost."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):  # zz.jpg is planned after these
        img = Image.fromarray(np.full((16, 16, 3), i % 255, np.uint8))
        img.save(folder / f"m{i:03d}.jpg")
    _image(folder / "zz.jpg", 1)
    _image(folder / "zz.png", 2)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "styler",
            "apply",
            str(folder),
            "-m",
            str(tiny_resnet_onnx),
            "-o",
            str(folder),
            "--overwrite",
            "--format",
            "png",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the run has listed its inputs and styles m000.jpg
    assert first, proc.communicate(timeout=QUICK)
    fresh = folder / ".zz.new.png"
    saved = _image(fresh, 3)
    os.replace(fresh, folder / "zz.png")  # the user saves zz.png again, as editors do
    _, err = proc.communicate(timeout=QUICK)
    assert (folder / "zz.png").read_bytes() == saved, err.decode(errors="replace")[-1000:]


def test_quantize_keeps_a_file_that_appears_at_its_output(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """Without `--overwrite`, `quantize` checks once, at its start, that
    OUTPUT does not exist, then writes it with a plain atomic rename: a file
    made at OUTPUT while it calibrates (the user's, or a second styler's)
    is replaced, exit 0. `apply` and `generate` publish without replacing
    (P5:appeared: `appeared while styler wrote it: kept`); `quantize`,
    `export` and `import` (the same `atomic_write_bytes`) do not. Made
    deterministic here by writing the file once quantize's working folder
    appears in its TMPDIR (after the check)."""
    work = tmp_path / "tmp"
    work.mkdir()
    photos = _photos(tmp_path / "cal", 4, (16, 16))
    target = tmp_path / "q.onnx"
    mine = b"the user's own model, made meanwhile"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "styler",
            "quantize",
            str(tiny_resnet_onnx),
            "--calibration",
            str(photos),
            "-o",
            str(target),
            "--min-psnr",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(TMPDIR=str(work)),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + QUICK
    while not any(p.is_dir() for p in work.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    target.write_bytes(mine)
    _, err = proc.communicate(timeout=QUICK)
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert target.read_bytes() == mine, (proc.returncode, err.decode(errors="replace"))


# -- a folder seen under two names --


def test_in_place_through_a_bind_mount_never_styles_its_own_results(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """S:in-place promises that results are never read back: run twice in
    place with `--suffix _s`, `p0_s.png` is an earlier result and no
    `p0_s_s.png` is made. The check compares real paths, which a symbolic
    link cannot hide but a bind mount does (the same folder under another
    path, as containers and NFS exports show it): with `-o` a bind mount of
    the input folder, the second run styles `p0_s.png` into `p0_s_s.png`
    (and a third into `p0_s_s_s.png`). Inputs and outputs are compared by
    (device, inode) elsewhere (`--overwrite` is refused through the mount)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    real, view = tmp_path / "real", tmp_path / "view"
    _photos(real, 2, (16, 16))
    view.mkdir()
    styler = (
        f"{sys.executable} -m styler apply {real} -m {tiny_resnet_onnx} -o {view} --suffix _s -q"
    )
    script = f"mount --bind {real} {view} || exit 99; {styler} && {styler}"
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=QUICK,
    )
    if result.returncode == 99 or b"unshare failed" in result.stderr:
        pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert sorted(os.listdir(real)) == ["p0000.png", "p0000_s.png", "p0001.png", "p0001_s.png"]


# -- the Python API --


def test_a_dataset_row_without_a_path_fails_that_row_only(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`apply_dataset` styles a Ray Dataset's `path` column; a row whose
    path is null (a missing value in a Parquet or CSV listing) is a bad
    input like a missing file: it must fail that row, in one record, and
    the others be styled. Today `Path(None)` raises `TypeError: expected
    str, bytes or os.PathLike object, not NoneType` out of the generator:
    the whole run stops, with nothing said about which row."""
    pytest.importorskip("ray")
    photos = _photos(tmp_path / "in", 2, (16, 16))
    script = (
        "import sys, ray\n"
        "from styler.apply import ApplyOptions\n"
        "from styler.distributed import apply_dataset\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,"
        " logging_level='ERROR')\n"
        "rows = [{'path': sys.argv[1]}, {'path': None}, {'path': sys.argv[2]}]\n"
        "ds = ray.data.from_items(rows)\n"
        "for r in apply_dataset(ds, sys.argv[3], ApplyOptions(output_dir=sys.argv[4])):\n"
        "    print('RESULT', r.status, flush=True)\n"
    )
    files = sorted(photos.iterdir())
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(files[0]),
            str(files[1]),
            str(tiny_resnet_onnx),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=QUICK,
        start_new_session=True,
    )
    statuses = [
        line.split()[1] for line in result.stdout.decode().splitlines() if line.startswith("RESULT")
    ]
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-1500:]
    assert statuses == ["ok", "failed", "ok"], statuses


def test_a_rerun_whose_glob_now_holds_the_output_folder_is_a_no_op(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`cd photos && styler apply * -o styled`, run twice: the second time
    the shell's `*` holds `styled/` too. The output folder is never read
    back when it lies inside a walked folder (A:inside), but given as an
    input itself it is walked, and each earlier result fails
    `another input already writes styled/p0000.png (p0000.png)`: a rerun
    with nothing to do exits 1 with one failure per image."""
    photos = _photos(tmp_path / "photos", 2, (16, 16))
    names = sorted(os.listdir(photos))
    model = str(tiny_resnet_onnx)
    first = _run("apply", *names, "-m", model, "-o", "styled", "-q", cwd=photos)
    assert first.returncode == 0, first.stderr
    again = _run(
        "apply", *sorted(os.listdir(photos)), "-m", model, "-o", "styled", "-q", cwd=photos
    )
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert again.stderr == b"", again.stderr.decode(errors="replace")
    assert sorted(os.listdir(photos / "styled")) == names


def test_export_keeps_a_file_that_appears_at_its_output(tmp_path: Path) -> None:
    """The sibling of quantize's case in `export` and `import`: both check
    OUTPUT once at their start and then write it through the exporter,
    which replaced whatever was there by then. Without --overwrite the
    exporter now publishes without replacing: a file at OUTPUT when the
    write ends is kept and the export fails in one error naming it."""
    pytest.importorskip("torch")
    import torch

    from styler import zoo
    from styler.errors import OutputExistsError
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset("resnet_2blocks", ngf=4)
    meta = ModelMetadata(network=config, name="t", license="CC0-1.0", train_size=16)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"made meanwhile")
    with pytest.raises(OutputExistsError, match=r"m\.onnx"):
        export_onnx(zoo.build(config, init="normal"), meta, target, replace=False)
    assert target.read_bytes() == b"made meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left
    export_onnx(zoo.build(config, init="normal"), meta, target)  # replace: the default
    assert target.read_bytes() != b"made meanwhile"
