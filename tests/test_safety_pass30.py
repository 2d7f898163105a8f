"""Reliability, the thirtieth pass: what the thirtieth hostile review and
the twenty-ninth pass's list of what was left found. Each case runs through
the real CLI on tiny files; each fails on the code of the thirtieth pass's
start (4673fe0) for the reason its docstring gives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import interruptible
from test_safety import _lines, _metadata, _model
from test_safety_pass7 import _env, _photos, _run

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

#: Subprocess-heavy: run by `pytest -m slow`, beside the other reliability passes.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("command", "name"),
    [("export", "run.safetensors"), ("export", "run_folder"), ("import", "latest_net_G.pth")],
)
def test_a_missing_checkpoint_is_said_before_pytorch_is_imported(
    tmp_path: Path, command: str, name: str
) -> None:
    """`styler export`/`import` of a path that is not there took 2.5-3.5 s
    to say so: PyTorch was imported first. Now the one line comes at once.
    A stand-in ``torch`` on PYTHONPATH that refuses to import proves it."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    missing = tmp_path / name
    r = _run(command, str(missing), env=_env(PYTHONPATH=str(fake)))
    assert r.returncode == 2, _lines(r)
    assert _lines(r) == [f"styler: error: {missing}: no such file"]
    assert not missing.exists() and not list(tmp_path.glob("*.onnx"))


def test_a_hidden_character_beyond_the_bmp_is_escaped_unambiguously(tmp_path: Path) -> None:
    """A tag character (U+E0041, invisible) in a model's name was shown as
    ``\\ue0041``: four digits and a plain ``1``, or U+E004 then ``1``? Now
    as Python writes it, ``\\U000e0041``; a hidden character of the BMP
    keeps ``\\uXXXX`` and a plain one after it stays plain."""
    identity = [helper.make_node("Identity", ["image"], ["styled"])]
    name = "tag\U000e0041 bidi\u202e1"
    model = _model(tmp_path / "m.onnx", identity, metadata=_metadata(name=name))
    r = _run("info", str(model))
    assert r.returncode == 0, _lines(r)
    shown = r.stdout.decode()
    assert "tag\\U000e0041 bidi\\u202e1" in shown, shown
    assert "\U000e0041" not in shown and "\u202e" not in shown


def test_a_photo_of_a_hundred_megapixels_is_styled(tmp_path: Path) -> None:
    """A 100-megapixel photo (a Fujifilm GFX100 writes 11648 x 8736) was
    refused as "too large to decode safely (decompression bomb)": Pillow's
    warning at 89.5 MP was made an error, under styler's own limit of 179.
    Now it decodes (and ``--max-size`` brings it down); above Pillow's own
    threshold the refusal says the limit."""
    from PIL import Image

    photos = tmp_path / "in"
    photos.mkdir()
    Image.new("L", (11648, 8736), 128).save(photos / "gfx100.png")
    model = _model(tmp_path / "m.onnx", [helper.make_node("Identity", ["image"], ["styled"])])
    out = tmp_path / "out"
    r = _run("apply", str(photos), "-m", str(model), "-o", str(out), "--max-size", "64", "-q")
    assert r.returncode == 0, _lines(r)
    with Image.open(out / "gfx100.png") as styled:
        assert styled.size == (64, 48)
    # Beyond 2 x Pillow's MAX_IMAGE_PIXELS (a header declaring 200 MP): one line with the limit.
    Image.new("1", (14000, 14300)).save(photos / "huge.png")
    (photos / "gfx100.png").unlink()
    r = _run("apply", str(photos), "-m", str(model), "-o", str(out), "-q")
    assert r.returncode == 1, _lines(r)
    assert _lines(r) == [
        f"styler: {photos / 'huge.png'}: image too large to decode safely (over 179 megapixels)"
    ]


def test_the_style_loss_trains_on_crops_of_32_pixels(tmp_path: Path) -> None:
    """`--recipe painting --size 32` (a quick trial of the recipe) stopped
    at step 1, "the losses became NaN", advising a lower --lr or fp32,
    neither of which helps: the style loss took the standard deviation of
    Lite0's deepest map, one pixel at that size. Such a map now counts by
    its mean alone, and the run trains."""
    a, b = _photos(tmp_path / "A", 3, (40, 40)), _photos(tmp_path / "B", 3, (40, 40))
    run = tmp_path / "run"
    flags = ["--size", "32", "--load-size", "36", "--steps", "2", "--display", "plain"]
    r = _run("train", str(a), str(b), "--recipe", "painting", *flags, "--no-export", "-o", str(run))
    assert r.returncode == 0, _lines(r)
    assert list((run / "checkpoints").glob("step_*.safetensors"))
    assert not [line for line in _lines(r) if "NaN" in line]


def test_the_two_training_folders_must_be_different_and_apart(tmp_path: Path) -> None:
    """`styler train A A` (or A and a link to it, or `A ./A/`) paired every
    file with itself and trained an identity pix2pix for 200 epochs, exit
    0; with B inside A, B's images were in both domains. Now each is one
    line, exit 2, before PyTorch is imported."""
    a = _photos(tmp_path / "A", 2, (40, 40))
    inner = _photos(a / "B", 2, (40, 40))
    (tmp_path / "Alink").symlink_to(a)
    run = tmp_path / "run"
    fake = tmp_path / "fake"  # a torch that refuses to import: the answer comes before it
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    env = _env(PYTHONPATH=str(fake))
    same = "(the two domains must be different folders)"
    nested = "(the two domains must be separate folders)"
    cases = [
        ((a, a), f"{a}: the same folder as {a} {same}"),
        ((a, tmp_path / "Alink"), f"{tmp_path / 'Alink'}: the same folder as {a} {same}"),
        ((a, f"{tmp_path}/./A/"), f"{a}: the same folder as {a} {same}"),
        ((a, inner), f"{inner}: inside {a}, whose images would include its own {nested}"),
        ((inner, a), f"{inner}: inside {a}, whose images would include its own {nested}"),
    ]
    for (first, second), said in cases:
        r = _run("train", str(first), str(second), "--steps", "1", "-o", str(run), env=env)
        assert r.returncode == 2, _lines(r)
        assert _lines(r) == [f"styler: error: {said}"]
        assert not run.exists()


#: ``python WRAPPER N ARGS`` runs ``styler ARGS`` and sends itself N Ctrl-Cs
#: (0.5 s apart) as the run's export begins: a stop while a run finishes.
_CTRL_C_IN_EXPORT = (
    "import os, runpy, signal, sys, time\n"
    "import styler.training.upkeep as U\n"
    "times, sys.argv = int(sys.argv[1]), ['styler', *sys.argv[2:]]\n"
    "real = U.Upkeep.export\n"
    "def export(self, display):\n"
    "    for _ in range(times):\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "        time.sleep(0.5)\n"
    "    return real(self, display)\n"
    "U.Upkeep.export = export\n"
    "runpy.run_module('styler', run_name='__main__')\n"
)


def test_ctrl_c_while_a_run_finishes_says_what_it_does(tmp_path: Path) -> None:
    """The first Ctrl-C during a finished run's export was silently ignored
    (the export went on, exit 0); a second one exited 130 without a word,
    the models unwritten, nothing saying that `--resume` exports them. Now
    the first says the run is finishing and how to abort; the second says
    `styler train --resume RUN` finishes it, which it does."""
    from test_safety_pass9 import train_args

    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_CTRL_C_IN_EXPORT)
    for times, run in ((1, tmp_path / "once"), (2, tmp_path / "twice")):
        args = train_args(tmp_path / f"data{times}", run, "--steps", "2", "--display", "plain")
        r = subprocess.run(
            [sys.executable, str(wrapper), str(times), *args],
            capture_output=True,
            env=_env(),
            timeout=300,
            preexec_fn=interruptible,
        )
        said = _lines(r)
        models = sorted(p.name for p in run.glob("*.onnx"))
        finishing = [line for line in said if line.startswith("styler: finishing the run")]
        assert finishing == [
            "styler: finishing the run (its last checkpoint and models: seconds); "
            "Ctrl-C again aborts"
        ], said
        if times == 1:
            assert r.returncode == 0, said
            assert models == ["a_to_b.onnx", "b_to_a.onnx"], said
            continue
        assert r.returncode == 130, said
        assert models == [], said
        assert said[-1] == (
            f"styler: aborted: `styler train --resume {run}` goes on from its last checkpoint"
        ), said
        resumed = _run("train", "--resume", str(run), "-q", timeout=300)
        assert resumed.returncode == 0, _lines(resumed)
        assert sorted(p.name for p in run.glob("*.onnx")) == ["a_to_b.onnx", "b_to_a.onnx"]


def test_a_broken_onnx_or_pytorch_install_is_one_line(tmp_path: Path) -> None:
    """An onnx package that is installed but fails to import (a numpy or
    protobuf mismatch) passed quantize's check, which only looked for it,
    and ended in a traceback; so did a PyTorch that fails to load with
    anything but ImportError (an OSError for a missing CUDA library) in
    train, export, import and eval (pass 31). Now one line, exit 2."""
    broken = tmp_path / "broken"
    for package, error in (
        ("onnx", "AttributeError('_ARRAY_API not found')"),
        ("torch", "OSError('libcudnn.so.9: cannot open shared object file')"),
    ):
        (broken / package).mkdir(parents=True)
        (broken / package / "__init__.py").write_text(f"raise {error}\n")
    env = _env(PYTHONPATH=str(broken))
    model = _model(tmp_path / "m.onnx", [helper.make_node("Identity", ["image"], ["styled"])])
    cal = _photos(tmp_path / "cal", 2, (32, 32))
    out = tmp_path / "q.onnx"
    r = _run("quantize", str(model), "--calibration", str(cal), "-o", str(out), env=env)
    assert r.returncode == 2, _lines(r)
    assert _lines(r) == [
        "styler: error: the onnx package is installed but does not import (AttributeError: "
        "_ARRAY_API not found): reinstall it, or pip install 'styler[train]' in a fresh environment"
    ]
    assert not out.exists()
    other = _photos(tmp_path / "other", 2, (32, 32))
    torch_broken = (
        "styler: error: PyTorch is installed but does not import (OSError: libcudnn.so.9: cannot "
        "open shared object file): reinstall it, or pip install 'styler[train]' in a fresh "
        "environment"
    )
    for args in (
        ["train", str(cal), str(other), "-o", str(tmp_path / "run"), "--steps", "1"],
        ["eval", str(model), str(cal), str(other)],
    ):
        r = _run(*args, env=env)
        assert r.returncode == 2 and _lines(r) == [torch_broken], (args, _lines(r))
    assert not (tmp_path / "run").exists()


def test_images_held_in_memory_are_bounded_by_pixels_not_only_by_count(tmp_path: Path) -> None:
    """apply decoded max(2 x batch size, 2 x workers) images ahead and kept
    as many styled ones waiting for their encodes, whatever their size:
    16 photos of 24 megapixels peaked at 6.1 GB with --batch-size 8 (3.6
    at 1), where large images never batch together anyway. Now what is
    decoded ahead, and what waits to be written, is bounded by pixels too
    (a 50-megapixel budget; 3.0 GB at either batch size on those photos).
    Here the budget is three images' worth: at most three are decoded ahead
    and three wait, where 16 were read ahead before."""
    from styler.apply import ApplyOptions, Stylizer, _Pipeline
    from styler.paths import collect_jobs

    photos = _photos(tmp_path / "in", 20, (64, 64))
    model = _model(tmp_path / "m.onnx", [helper.make_node("Identity", ["image"], ["styled"])])
    options = ApplyOptions(output_dir=tmp_path / "out", batch_size=8, workers=4)
    pipeline = _Pipeline(Stylizer(model, device="cpu"), options)
    pipeline.processor.hold_pixels = 3 * 64 * 64
    started, done, most = 0, 0, 0
    real_start = pipeline.processor._start

    def start(item):  # type: ignore[no-untyped-def]
        nonlocal started, most
        started += 1
        most = max(most, started - done)
        return real_start(item)

    pipeline.processor._start = start  # type: ignore[method-assign]
    try:
        for result in pipeline.run(collect_jobs([photos], output_dir=options.output_dir)):
            assert result.status == "ok", result
            done += 1
    finally:
        pipeline.close()
    assert done == 20 and len(list((tmp_path / "out").iterdir())) == 20
    assert most <= 3 + 3 + 1, most


def test_messages_name_the_real_cause(tmp_path: Path) -> None:
    """Wording of the thirtieth pass: a runtime's message cut at 200
    characters lost its cause (onnxruntime ends with it); a model given to
    import or export without -o was refused as "the output is the input";
    a config.json given to export was "a header of 7596553470662937211
    bytes"."""
    import numpy as np
    from onnx import numpy_helper

    photos = _photos(tmp_path / "in", 1, (32, 32))
    shape = numpy_helper.from_array(np.array([-1, 3, 40, 48], np.int64), "shape")
    reshape = helper.make_node("Reshape", ["image", "shape"], ["styled"])
    model = _model(tmp_path / "m.onnx", [reshape], initializers=[shape])
    r = _run("apply", str(photos), "-m", str(model), "-o", str(tmp_path / "out"), "-q")
    assert r.returncode == 1, _lines(r)
    (line,) = _lines(r)
    assert line.startswith(f"styler: {photos / 'p0000.png'}: unexpected Fail: [ONNXRuntimeError]")
    assert " ... " in line and line.endswith("requested shape:{-1,3,40,48}"), line
    for command in ("import", "export"):
        r = _run(command, str(model))
        assert r.returncode == 2 and _lines(r) == [
            f"styler: error: {model}: an ONNX model, not a checkpoint "
            "(styler info describes it, styler apply -m runs it)"
        ], _lines(r)
    config = tmp_path / "config.json"
    config.write_text('{"mode": "cyclegan"}\n')
    r = _run("export", str(config), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and _lines(r) == [
        f"styler: error: {config}: not a safetensors checkpoint (it holds JSON)"
    ], _lines(r)
