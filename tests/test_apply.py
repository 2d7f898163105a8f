"""`styler apply` end to end: the real CLI, real onnxruntime sessions, real
files that the tests make (colour modes, EXIF orientations, odd sizes, alpha)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import interruptible
from PIL import Image

from styler.apply import Stylizer

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth photo-like RGB uint8 image."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    return np.asarray(img)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder tree with images in many modes and sizes, and one corrupt file."""
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    rgb = _photo(203, 151)
    Image.fromarray(rgb).save(root / "odd.jpg", quality=92)
    Image.fromarray(_photo(64, 48, 1)).convert("L").save(root / "grey.png")
    rgba = np.dstack(
        [_photo(37, 53, 2), np.linspace(0, 255, 37 * 53).reshape(53, 37).astype(np.uint8)]
    )
    Image.fromarray(rgba, "RGBA").save(root / "nested" / "alpha.png")
    Image.fromarray(_photo(40, 30, 3)).convert("P", palette=Image.ADAPTIVE).save(
        root / "nested" / "palette.gif"
    )
    Image.fromarray(_photo(50, 41, 4)).convert("CMYK").save(root / "nested" / "deeper" / "cmyk.jpg")
    Image.fromarray(_photo(33, 17, 5)).save(
        root / "nested" / "deeper" / "small.webp", lossless=True
    )
    grey16 = (np.linspace(0, 65535, 31 * 23).reshape(23, 31)).astype(np.uint16)
    Image.fromarray(grey16).save(root / "deep16.png")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


def _outputs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_apply_folder_keeps_sizes_modes_tree_and_reports_failures(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "styled"
    result = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out))
    assert result.returncode == 1, result.stderr  # one corrupt input
    assert _outputs(out) == {
        "odd.jpg",
        "grey.png",
        "deep16.png",
        "nested/alpha.png",
        "nested/palette.png",  # GIF is written as PNG
        "nested/deeper/cmyk.jpg",
        "nested/deeper/small.webp",
    }
    # stdout: exactly one path per styled image; the failure is one line on stderr.
    printed = result.stdout.split()
    assert sorted(printed) == sorted(str(p) for p in out.rglob("*") if p.is_file())
    failures = [line for line in result.stderr.splitlines() if "broken.jpg" in line]
    assert len(failures) == 1 and "not an image" in failures[0]
    assert "6 styled" not in result.stderr and "7 styled" in result.stderr
    # Sizes are exactly the inputs'; alpha comes back untouched.
    for path in out.rglob("*"):
        if path.is_file():
            src = next(photos.rglob(path.stem + ".*"))
            assert Image.open(path).size == Image.open(src).size, path
    styled_alpha = np.asarray(Image.open(out / "nested" / "alpha.png").getchannel("A"))
    source_alpha = np.asarray(Image.open(photos / "nested" / "alpha.png").getchannel("A"))
    assert np.array_equal(styled_alpha, source_alpha)
    # The image really went through the network.
    before = np.asarray(Image.open(photos / "odd.jpg"), np.float32)
    after = np.asarray(Image.open(out / "odd.jpg"), np.float32)
    assert np.abs(before - after).mean() > 5
    assert not [p for p in out.rglob("*.part")]
    # Outputs have ordinary permissions, not a temporary file's 0600.
    assert (out / "odd.jpg").stat().st_mode & 0o044


def test_existing_outputs_are_skipped_unless_overwrite(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "styled"
    (photos / "broken.jpg").unlink()
    first = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    target = out / "odd.jpg"
    target.write_bytes(b"user's own file")
    again = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "--json")
    assert again.returncode == 0
    records = [json.loads(line) for line in again.stdout.splitlines()]
    assert {r["status"] for r in records} == {"skipped"}
    assert target.read_bytes() == b"user's own file"
    forced = cli(
        "apply",
        str(photos / "odd.jpg"),
        "-m",
        str(tiny_resnet_onnx),
        "-o",
        str(out),
        "--overwrite",
        "--json",
    )
    assert forced.returncode == 0
    (record,) = [json.loads(line) for line in forced.stdout.splitlines()]
    assert record["status"] == "ok" and record["error"] is None and record["milliseconds"] > 0
    assert Image.open(target).size == (203, 151)


def test_json_records_and_exit_code_with_a_corrupt_file(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    result = cli(
        "apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(tmp_path / "o"), "--json", "-q"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"styler: {photos / 'broken.jpg'}: not an image file (or a format styler does not read)"
    ]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 8
    assert set(records[0]) == {"input", "output", "status", "error", "milliseconds", "warnings"}
    by_status = {r["input"]: r["status"] for r in records}
    assert by_status[str(photos / "broken.jpg")] == "failed"
    assert sum(s == "ok" for s in by_status.values()) == 7


def test_paths_from_stdin_newline_and_nul(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    odd = photos / "odd.jpg"
    spaced = photos / "a name with spaces.png"
    Image.open(photos / "grey.png").save(spaced)
    listing = f"{odd}\n{spaced}\n"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "styler",
            "apply",
            "-",
            "-m",
            str(tiny_resnet_onnx),
            "-o",
            str(tmp_path / "a"),
            "-q",
        ],
        input=listing.encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _outputs(tmp_path / "a") == {"odd.jpg", "a name with spaces.png"}
    found = subprocess.run(
        ["find", str(photos), "-name", "*.png", "-print0"], capture_output=True, check=True
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "styler",
            "apply",
            "-0",
            "-",
            "-m",
            str(tiny_resnet_onnx),
            "-o",
            str(tmp_path / "b"),
            "-q",
        ],
        input=found.stdout,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _outputs(tmp_path / "b") == {
        "grey.png",
        "deep16.png",
        "alpha.png",
        "a name with spaces.png",
    }


def test_dry_run_writes_nothing(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "styled"
    result = cli(
        "apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "--dry-run", "-q"
    )
    # What the headers already tell is reported: broken.jpg is not an image.
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"styler: {photos / 'broken.jpg'}: not an image file (or a format styler does not read)"
    ]
    assert not out.exists()
    assert f"{photos / 'odd.jpg'} -> {out / 'odd.jpg'}" in result.stdout.splitlines()


def test_output_inside_the_input_folder_is_not_read_back(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path
) -> None:
    (photos / "broken.jpg").unlink()
    out = photos / "styled"
    first = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    second = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "-o", str(out), "--json", "-q")
    inputs = [json.loads(line)["input"] for line in second.stdout.splitlines()]
    assert not [i for i in inputs if "/styled/" in i]
    assert not (out / "styled").exists()


def test_an_input_is_never_overwritten(cli: Cli, tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.fromarray(_photo(24, 20)).save(folder / "x.png")
    before = (folder / "x.png").read_bytes()
    result = cli(
        "apply",
        str(folder),
        "-m",
        str(tiny_resnet_onnx),
        "-o",
        str(folder),
        "--overwrite",
        "--json",
    )
    assert result.returncode == 1
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["status"] == "failed" and "overwrite the input" in record["error"]
    assert (folder / "x.png").read_bytes() == before


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(
    tiny_resnet_onnx: Path, tmp_path: Path, orientation: int
) -> None:
    """A 30x20 image stored with each EXIF orientation comes out upright."""
    stored = Image.fromarray(_photo(30, 20, orientation))
    exif = stored.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    upright_size = (20, 30) if orientation >= 5 else (30, 20)
    stylizer = Stylizer(tiny_resnet_onnx, device="cpu")
    out = stylizer.apply(Image.open(path))
    assert out.size == upright_size


def test_pil_api_keeps_size_and_alpha(tiny_resnet_onnx: Path) -> None:
    rgba = Image.fromarray(np.dstack([_photo(45, 31), np.full((31, 45), 77, np.uint8)]), "RGBA")
    out = Stylizer(tiny_resnet_onnx, device="cpu").apply(rgba)
    assert out.size == (45, 31) and out.mode == "RGBA"
    assert set(np.asarray(out.getchannel("A")).ravel().tolist()) == {77}


@pytest.fixture(scope="module")
def instance_norm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from styler import zoo
    from styler.export import export_onnx
    from styler.metadata import ModelMetadata
    from styler.netconfig import generator_preset

    torch.manual_seed(0)
    config = generator_preset("resnet_3blocks", ngf=16)
    net = zoo.build(config, gain=0.2)
    path = tmp_path_factory.mktemp("in") / "in.onnx"
    export_onnx(net, ModelMetadata(network=config, name="in"), path)
    return path


def test_tiles_match_the_whole_image(instance_norm_onnx: Path) -> None:
    """Tiled inference with whole-image norm statistics stays close to running
    the image whole; per-tile statistics (the naive way) do not."""
    rng = np.random.default_rng(0)
    img = _photo(384, 288).astype(np.float32) / 255
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)
    whole = Stylizer(instance_norm_onnx, device="cpu").apply_array(img)
    tiled_stylizer = Stylizer(instance_norm_onnx, device="cpu", tile=128)
    tiled = tiled_stylizer.apply_array(img)
    assert tiled.shape == whole.shape == img.shape
    error = np.abs(tiled - whole)
    # Measured: mean 0.0005, max 0.037 (in [0, 1] units).
    assert error.mean() < 0.002 and error.max() < 0.08
    # The same tiles normalised each by itself drift far apart.
    tiles = [tiled_stylizer.model.run(img.transpose(2, 0, 1)[None, :, :128, :128] * 2 - 1)]
    naive = (tiles[0][0].transpose(1, 2, 0) + 1) / 2
    assert np.abs(naive - whole[:128, :128]).mean() > 20 * error.mean()


def test_cuda_request_without_cuda_is_an_error(
    cli: Cli, tiny_resnet_onnx: Path, photos: Path
) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = cli("apply", str(photos), "-m", str(tiny_resnet_onnx), "--device", "cuda")
    assert result.returncode == 2
    assert "CUDA" in result.stderr and result.stdout == ""


def test_missing_default_model_is_a_clear_error(tmp_path: Path) -> None:
    from styler.errors import BadModelError
    from styler.shipped import resolve_model

    with pytest.raises(BadModelError, match="no default model"):
        resolve_model(None, folder=tmp_path)  # an install without weights
    with pytest.raises(BadModelError, match=r"shipped: none"):
        resolve_model("photo2painting", folder=tmp_path)


def test_apply_path_never_imports_torch(
    tiny_resnet_onnx: Path, photos: Path, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from styler.cli import main\n"
        f"rc = main(['apply', {str(photos)!r}, '-m', {str(tiny_resnet_onnx)!r}, "
        f"'-o', {str(tmp_path / 'o')!r}, '-q'])\n"
        "print('RC', rc, 'TORCH', 'torch' in sys.modules)\n"
    )
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "RC 1 TORCH False" in out.stdout, out.stderr


def test_ctrl_c_leaves_only_complete_outputs_and_a_rerun_finishes(
    tiny_resnet_onnx: Path, tmp_path: Path
) -> None:
    import signal

    src = tmp_path / "many"
    src.mkdir()
    # Enough images that the run is still going when the signal lands (a
    # tiny model styles 40 of them in a fraction of a second).
    total = 200
    for i in range(total):
        Image.fromarray(_photo(160, 120, i)).save(src / f"p{i:03d}.png")
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
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first finished image
    assert first.strip()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    done = sorted(p.name for p in out.iterdir())
    assert not [n for n in done if n.endswith(".part") or n.startswith(".")]
    assert 1 <= len(done) < total
    for name in done:  # every file that exists is a complete image
        Image.open(out / name).load()
    again = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    statuses = [json.loads(line)["status"] for line in again.stdout.splitlines()]
    assert statuses.count("skipped") == len(done) and statuses.count("ok") == total - len(done)


def test_format_suffix_and_max_size(cli: Cli, tiny_resnet_onnx: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_photo(300, 200)).save(folder / "wide.jpg")
    out = tmp_path / "out"
    result = cli(
        "apply",
        str(folder),
        "-m",
        str(tiny_resnet_onnx),
        "-o",
        str(out),
        "--format",
        "webp",
        "--suffix",
        "_styled",
        "--max-size",
        "150",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    target = out / "wide_styled.webp"
    assert result.stdout.split() == [str(target)]
    styled = Image.open(target)
    assert styled.format == "WEBP" and styled.size == (150, 100)
    bad = cli("apply", str(folder), "-m", str(tiny_resnet_onnx), "--format", "gif")
    assert bad.returncode == 2 and "unknown format" in bad.stderr


def test_unexpected_errors_fail_one_file_not_the_batch(
    tiny_resnet_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from styler import imageio
    from styler.apply import ApplyOptions
    from styler.paths import collect_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(_photo(32, 24)).save(folder / name)
    real = imageio.load_image

    def flaky(path: Path, max_pixels: int) -> imageio.DecodedImage:
        if Path(path).name == "b.png":
            raise RuntimeError("decoder exploded\nwith a second line")
        return real(path, max_pixels)

    monkeypatch.setattr(imageio, "load_image", flaky)
    stylizer = Stylizer(tiny_resnet_onnx, device="cpu")
    results = list(
        stylizer.apply_files(collect_jobs([folder]), ApplyOptions(output_dir=tmp_path / "o"))
    )
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].error == "unexpected RuntimeError: decoder exploded"
