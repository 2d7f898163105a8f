"""Reliability, the sixth pass: what a sixth hostile review of every command
found. Each case runs through the real CLI (or the documented Python API) on
real files; each fails on the code of the sixth pass's start (wt14,
4e4d72c) for the reason its docstring gives.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from conftest import interruptible
from test_hostile import TINY_TRAIN, styler
from test_safety import _lines, _noise_model, _png
from test_safety_pass4 import _photos
from test_safety_pass5 import _names

#: Subprocess-heavy: run by `pytest -m slow` (README), beside the other reliability passes.
pytestmark = pytest.mark.slow

QUICK = 120
#: A name that is not UTF-8 (Latin-1 "é" alone), as old disks and archives hold.
LATIN1 = b"\xe9"


def _no_traceback(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    lines = _lines(result)
    assert b"Traceback" not in result.stderr, "\n".join(lines[-12:])
    return lines


def _not_utf8(parent: Path, stem: bytes, suffix: bytes = b"") -> str:
    """A path below ``parent`` whose last name is ``stem + suffix`` as bytes
    (decoded as Python decodes file names: surrogate escapes)."""
    return os.fsdecode(os.path.join(os.fsencode(parent), stem + suffix))


# -- names that are not UTF-8 ----------------------------------------------------------------------


def test_paths_that_are_not_utf8_are_printed_by_every_command(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """`apply` writes its stdout as bytes, so a file name that is not UTF-8
    reaches a pipe as the file system has it. `generate` and `quantize` (and
    `export`, `import`, `train`) print their output paths with typer.echo:
    under a strict stdout encoding (PYTHONIOENCODING=utf-8, as many
    containers set) the file was written, then a UnicodeEncodeError
    traceback, exit 1."""
    env = {"PYTHONIOENCODING": "utf-8"}
    gen = _noise_model(tmp_path / "gen.onnx", 8)
    out = _not_utf8(tmp_path, b"gen" + LATIN1)
    result = _run_allowing_traceback("generate", str(gen), "-n", "1", "-o", out, env=env)
    _no_traceback(result)
    assert result.returncode == 0, _lines(result)
    assert result.stdout == os.fsencode(out) + b"/sample_00000.png\n"

    photos = _photos(tmp_path / "cal", 3)
    target = _not_utf8(tmp_path, b"q" + LATIN1, b".onnx")
    result = _run_allowing_traceback(
        "quantize",
        str(tiny_resnet_onnx),
        "--calibration",
        str(photos),
        "-o",
        target,
        "--min-psnr",
        "0",
        env=env,
    )
    _no_traceback(result)
    assert result.returncode == 0, _lines(result)
    assert result.stdout == os.fsencode(target) + b"\n"


def _run_allowing_traceback(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``styler ARGS`` with extra environment variables; unlike the shared
    helpers, a traceback is returned for the test to report."""
    full = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    full.update(NO_COLOR="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "styler", *args],
        capture_output=True,
        cwd=cwd,
        env=full,
        timeout=QUICK,
    )


def test_a_model_whose_path_is_not_utf8_opens(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """Images with names that are not UTF-8 are styled, but a model under
    such a name (or in such a folder) was refused by every command that
    opens one: onnxruntime's constructor takes only a str it can encode, so
    `styler info` and `apply -m` said `not a loadable ONNX model (__init__():
    incompatible constructor arguments. ...)`, exit 2, for a good model."""
    folder = Path(_not_utf8(tmp_path, b"mod" + LATIN1))
    folder.mkdir()
    model = folder / "tiny.onnx"
    model.write_bytes(tiny_resnet_onnx.read_bytes())
    result = styler("info", str(model))
    assert result.returncode == 0, _lines(result)
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    result = styler("apply", str(photos), "-m", str(model), "-o", str(out), "-q")
    assert result.returncode == 0, _lines(result)
    assert _names(out) == {"p0.png", "p1.png"}


def test_training_with_a_folder_name_that_is_not_utf8_does_not_crash(tmp_path: Path) -> None:
    """`styler train A B` where A's name (or the run folder's) is not UTF-8:
    the run folder was made, then the first report.html failed to encode
    (`page.encode()` of the path's surrogate escape) with a
    UnicodeEncodeError traceback, exit 1, before the first step."""
    pytest.importorskip("torch")
    a = Path(_not_utf8(tmp_path, b"photos" + LATIN1))
    b = tmp_path / "paintings"
    for i in range(3):
        _png(a / f"a{i}.png", 40, 40, seed=i)
        _png(b / f"b{i}.png", 40, 40, seed=10 + i)
    run = tmp_path / "run"
    args = ["train", str(a), str(b), "-o", str(run), "--steps", "1", *TINY_TRAIN]
    result = _run_allowing_traceback(*args, "--no-export", "-q", "--workers", "1", env={})
    _no_traceback(result)
    assert result.returncode == 0, _lines(result)
    assert (run / "report.html").is_file()


# -- interruptions --------------------------------------------------------------------------------

#: Runs styler's real entry point, and sends this process SIGNAL at the moment
#: MODULE is first imported (the exporter imports parts of torch lazily,
#: mid-export, where a `kill` can land at any moment).
_SIGNAL_AT_IMPORT = """
import os, signal, sys
fired = []
def hook(event, args):
    if event == "import" and args[0] == MODULE and not fired:
        fired.append(1)
        os.kill(os.getpid(), SIGNAL)
sys.addaudithook(hook)
from styler.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_export_is_not_an_export_error(tmp_path: Path, sig: str, code: int) -> None:
    """SIGTERM (or Ctrl-C) while `styler export` (or `import`) runs the torch
    exporter: when it lands while the exporter imports torch._dynamo's
    parts, torch's own error handling fails on the half-imported module and
    wraps the stop into its TorchExportError, which styler reported as
    `torch.onnx.export failed: Failed to export the model with torch.export.
    ...`, exit 2 (a bad checkpoint), instead of stopping: exit 143 (130)."""
    torch = pytest.importorskip("torch")
    from styler import zoo
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset("resnet_2blocks", ngf=8)
    net = zoo.build(config, init="normal", gain=0.2)
    weights = tmp_path / "w.safetensors"
    save_generator(weights, net.state_dict(), ModelMetadata(network=config, name="w"))
    code_text = _SIGNAL_AT_IMPORT.replace("MODULE", repr("torch._dynamo.eval_frame")).replace(
        "SIGNAL", f"signal.{sig}"
    )
    out = tmp_path / "w.onnx"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", code_text, "export", str(weights), "-o", str(out)],
        capture_output=True,
        env=dict(env, NO_COLOR="1"),
        timeout=QUICK,
        preexec_fn=interruptible,  # SIGINT at its default, as at a terminal
    )
    lines = _no_traceback(result)
    assert result.returncode == code, lines
    assert not any("export failed" in line for line in lines), lines
    assert not out.exists() and _names(tmp_path) == {"w.safetensors"}


# -- full disks -----------------------------------------------------------------------------------


def test_quantize_on_a_full_disk_is_one_line(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """`styler quantize` writes the prepared fp32 graph into a temporary
    folder (TMPDIR) before onnxruntime quantises it: on a full disk (or a
    full TMPDIR, here a file size limit) `onnx.save` raised OSError with a
    traceback, exit 1. Every other write of styler's is one line."""
    photos = _photos(tmp_path / "cal", 3)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = ["quantize", str(tiny_resnet_onnx), "--calibration", str(photos)]
    assert tiny_resnet_onnx.stat().st_size > 200_000
    result = subprocess.run(
        [sys.executable, "-m", "styler", *args, "-o", str(tmp_path / "q.onnx")],
        capture_output=True,
        env=dict(env, NO_COLOR="1"),
        preexec_fn=limit,
        timeout=QUICK,
    )
    lines = _no_traceback(result)
    assert result.returncode in (1, 2), lines
    assert len(lines) == 1 and lines[0].startswith("styler: error: "), lines
    assert "File too large" in lines[0], lines
    assert not (tmp_path / "q.onnx").exists()


# -- apply: output paths --------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlink_among_the_outputs_does_not_fail_another_input(
    tiny_resnet_onnx: Path, tmp_path: Path, overwrite: bool
) -> None:
    """OUT/p0.png is a symbolic link to OUT/p1.png (the user's alias). The
    write of p0's output replaces (or, without --overwrite, keeps) the link
    itself, never OUT/p1.png, yet p0 claimed the link's target: p1, a
    different file, failed `another input already writes OUT/p1.png
    (IN/p0.png)`, exit 1, and was never styled."""
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    if overwrite:
        assert (
            styler("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out)).returncode
            == 0
        )
        (out / "p0.png").unlink()
    (out / "p0.png").symlink_to("p1.png")
    args = ["apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q"]
    result = styler(*args, *(["--overwrite"] if overwrite else []))
    assert result.returncode == 0, _lines(result)
    assert (out / "p1.png").is_file() and not (out / "p1.png").is_symlink()
    with Image.open(out / "p1.png") as img:
        assert img.size == (24, 16)


# -- the Python API -------------------------------------------------------------------------------


def test_the_api_keeps_alpha_of_premultiplied_images(tiny_resnet_onnx: Path) -> None:
    """README: `stylizer.apply(PIL image)`: "PIL in, PIL out, same size,
    alpha kept". A premultiplied-alpha image (mode RGBa, as compositing code
    makes) came back as opaque RGB, its darkened colours styled as if they
    were the image; mode La raised a bare ValueError (`conversion from La to
    L not supported`), not a StylerError."""
    from styler.apply import Stylizer
    from styler.errors import StylerError

    stylizer = Stylizer(tiny_resnet_onnx, device="cpu")
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = np.arange(16, dtype=np.uint8)[None, :] * 16
    image = Image.fromarray(rgba, "RGBA")
    out = stylizer.apply(image.convert("RGBa"))
    assert out.size == (16, 12)
    assert "A" in out.mode or "a" in out.mode, f"alpha dropped: {out.mode}"
    alpha = np.asarray(out.convert("RGBA").getchannel("A"))
    assert np.abs(alpha.astype(int) - rgba[..., 3]).max() <= 1
    try:
        out = stylizer.apply(image.convert("LA").convert("La"))
    except StylerError:
        pass
    else:
        assert out.size == (16, 12)


# -- info and models ------------------------------------------------------------------------------


def test_models_lists_the_cards_in_any_locale() -> None:
    """`styler models` read each card with the locale's encoding
    (`Path.read_text()`): the shipped card holds a "±", and in a locale
    whose encoding is ASCII (LC_ALL=C with Python's UTF-8 mode and locale
    coercion off) both `models` and `models --json` died with a
    UnicodeDecodeError traceback (in a Latin-1 locale, the card came out
    garbled)."""
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    for args in (["models"], ["models", "--json"]):
        result = _run_allowing_traceback(*args, env=env)
        _no_traceback(result)
        assert result.returncode == 0, _lines(result)
        assert b"photo2painting" in result.stdout


# -- environment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["OMP_PROC_BIND", "OMP_WAIT_POLICY", "OMP_STACKSIZE"])
def test_an_unreadable_openmp_variable_adds_no_library_line(
    tiny_resnet_onnx: Path, tmp_path: Path, variable: str
) -> None:
    """The fifth pass took an unreadable OMP_NUM_THREADS out of the process
    (libgomp printed its own line and a blank one when torch loaded), but
    libgomp reads more variables and complains the same way about each:
    `OMP_PROC_BIND=abc styler quantize ...` put `libgomp: Invalid value for
    environment variable OMP_PROC_BIND` and a blank line on stderr beside
    styler's own."""
    pytest.importorskip("torch")
    photos = _photos(tmp_path / "cal", 3)
    args = ["quantize", str(tiny_resnet_onnx), "--calibration", str(photos), "--min-psnr", "0"]
    result = _run_allowing_traceback(*args, "-o", str(tmp_path / "q.onnx"), env={variable: "abc"})
    lines = _no_traceback(result)
    assert all(line.startswith("styler: ") for line in lines), lines
    assert result.returncode == 0, lines
