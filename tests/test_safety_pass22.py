"""Reliability, the twenty-second pass: what a twenty-second hostile review
found. Each case runs through the real CLI on tiny files; each fails on the
code of the twenty-second pass's start (pass22, 0011434) for the reason its
docstring gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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

#: ``python WRAPPER ARGS`` runs ``styler ARGS`` (the real entry point), killed
#: by SIGKILL (the OOM killer, `docker kill`, `docker stop` after its grace
#: time) just as the finished temporary file of ``$KILL_AT`` is to be renamed
#: into place: what any kill during that atomic write leaves.
_KILLED_AT = (
    "import os, runpy, signal, sys\n"
    "name = os.environ.pop('KILL_AT')\n"
    "def killed_at(real):\n"
    "    def publish(src, dst, *a, **k):\n"
    "        ours = os.fspath(src).endswith('.part')\n"
    "        if ours and os.path.basename(os.fspath(dst)) == name:\n"
    "            os.kill(os.getpid(), signal.SIGKILL)\n"
    "        return real(src, dst, *a, **k)\n"
    "    return publish\n"
    "os.replace = killed_at(os.replace)\n"
    "os.rename = killed_at(os.rename)\n"
    "os.link = killed_at(os.link)\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def _in_a_container(tmp_path: Path, args: list[str], kill_at: str | None = None):
    """``styler ARGS`` as a container runs it: in a new PID namespace whose
    first process is a shell, so styler gets process id 2 every time (as an
    image's entry point gets 1, or the same small id, on every `docker run`).
    With ``kill_at``, killed as :data:`_KILLED_AT` says."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("cannot make a PID namespace here (needs root or user namespaces)")
    wrapper = tmp_path / "killed_at.py"
    wrapper.write_text(_KILLED_AT)
    python = [sys.executable, str(wrapper)] if kill_at else [sys.executable, "-m", "styler"]
    env = _env(KILL_AT=kill_at) if kill_at else _env()
    script = '"$@"; exit $?'  # (not the shell's last command: it forks, styler is pid 2)
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh", *python, *args],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,
    )


@pytest.mark.parametrize("kill_at", ["config.json", "step_0000000.png"])
def test_a_start_killed_in_a_container_can_start_again_in_the_next_container(
    tmp_path: Path, kill_at: str
) -> None:
    """`styler train a b -o run` run in a container (a PID namespace: styler
    gets the same process id on every start, 1 as an image's entry point, 2
    here behind a shell) killed by SIGKILL while it writes the run's
    `config.json`, or its first sample grid (`docker stop` kills after its
    grace time; the OOM killer), then the very same command in the next
    container. The kill leaves `.styler-2-<token>.part` in `run/` (or in
    `run/samples/`). Since the twenty-first pass, `fsutil.dead_writer` counts
    a temporary file as left over only when its process id is neither this
    process's nor a running one's; the next container's styler *is* process
    2, so its predecessor's file is taken for a live writer's, and
    `RunFolder.check_new` refuses for good: `run exists, is not empty and is
    not a styler run folder` (config.json case) or `run holds a run without
    checkpoints and files styler did not write there` (sample case), exit 2,
    both false (every file there is styler's), and the P21 refusal that names
    a live writer is not even given (it looks only at the run folder itself
    and leaves out this process's id). `--resume` says `no usable checkpoint`
    with no way on. The sample case is a regression of the twenty-first
    pass (before it, every temporary file of styler's there was a leftover
    and the same command started afresh); the config.json case is P21's own
    finding, fixed outside containers only. The file bears this process's id
    but is not this process's (the start has written nothing there yet): the
    same command must start afresh, exit 0, as it does outside a container
    (P12, P21), the earlier files kept aside."""
    run = tmp_path / "run"
    args = train_args(tmp_path, run, "--steps", "2", *NO_EXPORT)
    killed = _in_a_container(tmp_path, args, kill_at=kill_at)
    assert killed.returncode == 128 + 9, _lines(killed)  # (the shell reports the kill)
    parts = [p.relative_to(run) for p in run.rglob(".styler-2-*.part")]
    assert parts, sorted(str(p) for p in run.rglob("*"))
    again = _in_a_container(tmp_path, args)
    assert again.returncode == 0, _lines(again)
    assert (run / "config.json").is_file()
    assert list((run / "checkpoints").glob("step_*.safetensors")), _lines(again)


#: ``python WRAPPER ARGS`` runs ``styler ARGS`` where the model file
#: ``$SWAP_MODEL`` is replaced by ``$SWAP_WITH`` (atomically, as `styler
#: export RUN --overwrite` or `train --resume RUN`'s final export replace a
#: run's models) right after styler first opens it.
_REPLACED_AFTER_OPEN = (
    "import os, runpy, shutil, sys\n"
    "from styler.runtime import Model\n"
    "model, other = os.environ.pop('SWAP_MODEL'), os.environ.pop('SWAP_WITH')\n"
    "real = Model.open.__func__\n"
    "def opened(cls, source, *a, **k):\n"
    "    result = real(cls, source, *a, **k)\n"
    "    if not isinstance(source, bytes) and os.fspath(source) == model:\n"
    "        shutil.copyfile(other, model + '.new')\n"
    "        os.replace(model + '.new', model)\n"
    "    return result\n"
    "Model.open = classmethod(opened)\n"
    "sys.argv = ['styler', *sys.argv[1:]]\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def test_quantize_makes_the_int8_copy_of_the_model_it_opened(tmp_path: Path) -> None:
    """`styler quantize run/a_to_b.onnx --calibration photos` while the model
    is replaced by another (`styler export run --overwrite`, or `train
    --resume run` ending and re-exporting, in another terminal: the run's
    models are replaced atomically) after quantize has opened it.
    `quantize_int8` (styler/quantize.py) reads the file twice: `Model.open`
    for the metadata and the fp32 reference outputs, then, after calibrating
    those, `onnx.load(model_path)` again for the graph it quantises. So it
    quantises the new graph under the old model's metadata and compares it
    with the old model's outputs: here (the new file a different model,
    `b_to_a.onnx`) it refuses with `refusing to write run/a_to_b.int8.onnx:
    int8 outputs are 18 dB from fp32 (minimum 30 dB)`, exit 2, blaming the
    quantisation; with a near model (the next step's export) it writes, exit
    0, an int8 copy of the new graph labelled `trained for 2 steps ... step
    2` with a PSNR measured between two different models (and with the file
    moved away instead, `run/a_to_b.onnx: cannot write a working file: No
    such file or directory`, though nothing failed to be written). The int8
    copy must be made of the model quantize opened (read once): exit 0, the
    int8 file written, as without the replacement."""
    run = tmp_path / "run"
    trained = _run(*train_args(tmp_path, run, "--steps", "2", "--precision", "fp32", "-q"))
    assert trained.returncode == 0, _lines(trained)
    calibration = _photos(tmp_path / "calibration", 4, (48, 40))
    wrapper = tmp_path / "replaced_after_open.py"
    wrapper.write_text(_REPLACED_AFTER_OPEN)
    model = str(run / "a_to_b.onnx")
    result = subprocess.run(
        [sys.executable, str(wrapper), "quantize", model, "--calibration", str(calibration)],
        capture_output=True,
        env=_env(SWAP_MODEL=model, SWAP_WITH=str(run / "b_to_a.onnx")),
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,
    )
    lines = _lines(result)
    assert b"Traceback" not in result.stderr, lines
    assert result.returncode == 0, lines
    assert (run / "a_to_b.int8.onnx").is_file(), lines


def test_export_fp16_of_a_generation_run_does_not_write_fp32_in_its_place(
    tmp_path: Path,
) -> None:
    """`styler export RUN --fp16` of a generation run (`styler train FOLDER
    --arch dcgan`, here class-conditional: one subfolder per class).
    `model_paths` (styler/training/export.py) keeps a generator's name
    without `.fp16` and `export_trainer` calls `export_generator`, which
    has no half precision, so `--fp16` is silently dropped: the command
    writes `RUN/cls_generator.onnx` in fp32 (`wrote ...: dcgan, fp32`),
    exit 0; where the run's model is there it says `RUN/cls_generator.onnx
    exists; pass --overwrite to replace it`, and `--overwrite` then replaces
    the run's fp32 model by another fp32 model (P-ST2: flags a command
    cannot honour are refused, never silently ignored). `--fp16` must be
    refused for a generation run in one line naming it (exit 2, nothing
    written), or give a half-precision model (an `.fp16.onnx` that says
    `precision fp16`)."""
    rng = np.random.default_rng(5)
    for name in ("cat", "dog"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"i{i}.png")
    run = tmp_path / "run"
    trained = _run(
        "train", str(tmp_path / "data"), "-o", str(run), "--arch", "dcgan", "--size", "16",
        "--steps", "2", *NO_EXPORT, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, _lines(trained)
    result = _run("export", str(run), "--fp16", timeout=600)
    lines = _lines(result)
    assert b"Traceback" not in result.stderr, lines
    models = sorted(run.glob("*.onnx"))
    if result.returncode == 0:
        assert models, lines
        for model in models:
            info = _run("info", "--json", str(model))
            assert info.returncode == 0, _lines(info)
            assert json.loads(info.stdout)["precision"] == "fp16", (model.name, lines)
    else:
        assert result.returncode == 2, lines
        assert len(lines) == 1 and "--fp16" in lines[0], lines
        assert models == [], models
