"""Reliability, the twenty-first pass: what a twenty-first hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-first pass's start (pass21, e88a5c4) for the reason its
docstring gives.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_safety import _lines
from test_safety_pass7 import _env, _photos, _run
from test_safety_pass9 import NO_EXPORT, train_args

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _train_killed_at_config_publish(tmp_path: Path, args: list[str]):
    """``styler ARGS`` (the real entry point) killed by SIGKILL (the OOM
    killer, `kill -9`, a power cut) just as the finished temporary file of
    the run's new ``config.json`` is to be renamed into place: what any kill
    during that atomic write leaves."""
    code = (
        "import os, runpy, signal, sys\n"
        "def killed_at_config(real):\n"
        "    def publish(src, dst, *a, **k):\n"
        "        ours = os.fspath(src).endswith('.part')\n"
        "        if ours and os.path.basename(os.fspath(dst)) == 'config.json':\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return real(src, dst, *a, **k)\n"
        "    return publish\n"
        "os.replace = killed_at_config(os.replace)\n"
        "os.rename = killed_at_config(os.rename)\n"
        "os.link = killed_at_config(os.link)\n"
        "sys.argv = ['styler', *sys.argv[1:]]\n"
        "runpy.run_module('styler', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,
    )


@pytest.mark.parametrize("where", ["new-folder", "after-set-aside"])
def test_a_start_killed_while_writing_its_config_can_start_again(
    tmp_path: Path, where: str
) -> None:
    """`styler train a b -o new/run` (or `-o run` over a run without step
    checkpoints, which the start first sets aside into `run/earlier-<time>/`)
    killed by SIGKILL while the new `config.json` is written. `atomic_path`
    (styler/fsutil.py) cannot remove its temporary file on a SIGKILL, so the
    folder is left holding `.styler-<dead pid>-<token>.part` (plus, after a
    set-aside, `earlier-*/` and the emptied `checkpoints/` and `samples/`)
    and no `config.json`. `RunFolder.leftover` (styler/training/run.py)
    then asks `runfiles.only_set_aside`, which accepts only `earlier-*`
    folders and empty run subfolders and so refuses the dead writer's
    temporary file, which `first_files` (a folder with a config.json) takes
    for styler's. The very same command is refused for good: `run exists,
    is not empty and is not a styler run folder: choose another --output`,
    exit 2, and `--resume` says `is not a styler run folder (no config.json)`,
    though everything there is styler's (the P19/P20 promise: a start that
    failed leaves a folder the same command starts in). It must start
    afresh (removing the dead writer's temporary file, as a set-aside does),
    exit 0, the earlier run's files still kept aside."""
    if where == "new-folder":
        run = tmp_path / "new" / "run"
        args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    else:
        run = tmp_path / "run"
        args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
        first = _run(*args, timeout=600)
        assert first.returncode == 0, _lines(first)
        for step in (run / "checkpoints").glob("step_*"):
            step.unlink()  # a run without step checkpoints: a fresh start sets it aside
    killed = _train_killed_at_config_publish(tmp_path, args)
    assert killed.returncode == -signal.SIGKILL, _lines(killed)
    assert not (run / "config.json").exists(), _files(run)
    assert any(p.name.endswith(".part") for p in run.iterdir()), _files(run)
    again = _run(*args, timeout=600)
    assert again.returncode == 0, _lines(again)
    assert (run / "config.json").is_file(), _files(run)
    if where == "after-set-aside":
        assert len(list(run.glob("earlier-*/config.json"))) == 1, _files(run)


def test_eval_with_targets_and_a_photo_thinner_than_the_ssim_window_scores_the_rest(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`styler eval MODEL photos reference --targets targets` where one
    photo (and its ground truth, of the same size) is a 300 x 10 banner:
    thinner than SSIM's 11-pixel window. `_compare_with_target`
    (styler/evaluate.py) calls `metrics.ssim`, which raises a bare
    `ValueError: SSIM needs images of at least 11 x 11 pixels`; nothing
    catches it, so the whole command dies with a Python traceback, exit 1,
    and no score is printed for any photo (equally every photo with
    `--max-side 8`, or any 1 x 1 photo). It must say one line naming the
    file (left out of PSNR and SSIM, as a target of the wrong size is) and
    score the others: exit 0, the table with SSIM printed, no traceback."""
    photos = _photos(tmp_path / "photos", 1, (64, 64))
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (10, 300, 3), dtype=np.uint8)).save(photos / "banner.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    for photo in photos.iterdir():
        (targets / photo.name).write_bytes(photo.read_bytes())
    reference = _photos(tmp_path / "reference", 2, (64, 64))
    result = _run(
        "eval", str(tiny_resnet_onnx), str(photos), str(reference), "--targets", str(targets),
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    lines = _lines(result)
    assert b"Traceback" not in result.stderr, "\n".join(lines[-8:])
    assert result.returncode == 0, lines
    assert any("banner.png" in line for line in lines), lines
    assert b"SSIM" in result.stdout, result.stdout


def _styler_where_publishing_fails(tmp_path: Path, name: str, args: list[str]):
    """``styler ARGS`` (the real entry point) where publishing a finished
    file called ``name`` fails with ENOSPC (the disk filled up while the
    export ran: the model before it fitted, this one did not)."""
    code = (
        "import errno, os, runpy, sys\n"
        "def full_at(real):\n"
        "    def publish(src, dst, *a, **k):\n"
        f"        if os.path.basename(os.fspath(dst)) == {name!r}:\n"
        "            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))\n"
        "        return real(src, dst, *a, **k)\n"
        "    return publish\n"
        "os.link = full_at(os.link)\n"
        "os.replace = full_at(os.replace)\n"
        "sys.argv = ['styler', *sys.argv[1:]]\n"
        "runpy.run_module('styler', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,
    )


def test_an_export_of_a_run_cut_short_by_a_full_disk_says_what_it_wrote_and_can_run_again(
    tmp_path: Path,
) -> None:
    """`styler export RUN` (a CycleGAN run: two models) where the disk fills
    up after `a_to_b.onnx` is written and before `b_to_a.onnx` is. Today the
    command says only `RUN/b_to_a.onnx: cannot write: No space left on
    device`, exit 1, and nothing on stdout: `a_to_b.onnx` is in the run
    folder but no line names it (stdout lists written models only once all
    are written; the `wrote ...` lines likewise), so a script or a user
    believes nothing was exported. Once space is freed, the very same
    command is refused: `RUN/a_to_b.onnx exists; pass --overwrite to
    replace it`, exit 2 (`export_run` refuses any model of the run's names
    before exporting, though this one is its own output of the same
    checkpoint; `train --resume RUN` does re-export). Every model written
    must be named on stdout (as `apply` names each output it wrote when
    others fail), or none left behind; and the same `styler export RUN`,
    run again, must finish the export (exit 0, both models there)."""
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    trained = _run(*args, timeout=600)
    assert trained.returncode == 0, _lines(trained)
    full = _styler_where_publishing_fails(tmp_path, "b_to_a.onnx", ["export", str(run)])
    assert full.returncode == 1, _lines(full)
    assert any("No space left on device" in line for line in _lines(full)), _lines(full)
    left = sorted(p.name for p in run.glob("*.onnx"))
    listed = full.stdout.decode(errors="replace")
    assert all(name in listed for name in left), (left, listed)
    again = _run("export", str(run), timeout=600)
    assert again.returncode == 0, _lines(again)
    assert sorted(p.name for p in run.glob("*.onnx")) == ["a_to_b.onnx", "b_to_a.onnx"]


def test_a_fresh_start_leaves_a_temporary_file_that_another_process_is_writing(
    tmp_path: Path,
) -> None:
    """A sibling of the first finding, found while fixing it: `styler train
    a b -o run` over a run without step checkpoints, while another styler
    process (an `export --fp16` or a `quantize` into the run folder: the run
    lock only keeps out other `train`s) is writing its temporary file there.
    The set-aside removed every temporary file of styler's, the live
    writer's included, so that process's write failed. A temporary file
    whose writer still runs is not left over: the start is refused in one
    line naming the process, and the file is kept."""
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    first = _run(*args, timeout=600)
    assert first.returncode == 0, _lines(first)
    for step in (run / "checkpoints").glob("step_*"):
        step.unlink()  # a run without step checkpoints: a fresh start sets it aside
    # A real writer: styler's own atomic write, held open mid-write.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from styler.fsutil import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'a model being written')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(120)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(run / "x_to_y.onnx")], stdout=subprocess.PIPE, env=_env()
    ) as writer:
        try:
            assert writer.stdout is not None
            part = Path(writer.stdout.readline().decode().strip())
            time.sleep(1.5)  # older than a moment: only its writer's lock keeps it
            refused = _run(*args, timeout=600)
            assert refused.returncode == 2, _lines(refused)
            (line,) = _lines(refused)
            assert f"pid {writer.pid}" in line and "writing" in line, line
            assert part.read_bytes() == b"a model being written"
            assert (run / "config.json").is_file() and not list(run.glob("earlier-*"))
        finally:
            writer.kill()
    again = _run(*args, timeout=600)  # the writer gone: its file is a leftover
    assert again.returncode == 0, _lines(again)
    assert not part.exists() and len(list(run.glob("earlier-*/config.json"))) == 1
