"""Image-quality numbers in pure numpy (no torch: the apply half may import this).

- :func:`kid` and :func:`fid` compare two *sets* of feature vectors (rows):
  how far the distribution of a model's outputs is from the distribution of
  the reference style. KID (Binkowski et al. 2018) is an unbiased estimate of
  the squared MMD with the polynomial kernel ``(x.y / d + 1)^3``, averaged
  over random subsets as torchmetrics and clean-fid do; unlike FID it has no
  bias that depends on the number of samples, which matters with the few
  hundred crops a folder of paintings gives. FID (Heusel et al. 2017) is the
  Fréchet distance between the Gaussians fitted to both sets.
- :func:`psnr` and :func:`ssim` compare two *images* (float, values in
  [0, 1]) when ground truth exists (paired data).
"""

from __future__ import annotations

import numpy as np

#: Above this many kernel entries (for all three kernel matrices together),
#: KID computes each subset's kernels on their own instead of indexing into the
#: kernels of the whole sets (2**25 float64 entries = 256 MiB).
KERNEL_CACHE_ENTRIES = 2**25

#: SSIM constants of Wang et al. 2004.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# -- sets of features -----------------------------------------------------------


def _as_features(x: np.ndarray, name: str, minimum: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {x.shape}")
    if len(x) < minimum:
        raise ValueError(f"{name} needs at least {minimum} samples, got {len(x)}")
    return x


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The KID kernel ``(a.b / d + 1)^3`` between every row of ``a`` and of ``b``."""
    k = a @ b.T
    k /= a.shape[1]
    k += 1.0
    return k**3


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 from the three kernel matrices of two m-sample sets:
    the diagonals of ``kxx`` and ``kyy`` (a sample with itself) are left out."""
    m = kxx.shape[0]
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kid(
    x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance between feature sets ``x`` (n x d) and ``y``
    (m x d): the mean and standard deviation (population std, as torchmetrics)
    of the unbiased MMD^2 over ``subsets`` random subsets of
    ``min(subset_size, n, m)`` rows of each set, drawn without replacement with
    a generator seeded by ``seed`` (so the same inputs give the same numbers).

    Near 0 for samples of one distribution (it can be slightly negative: the
    estimate is unbiased); larger the further apart the distributions are.
    """
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} and {y.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    n, m = len(x), len(y)
    size = min(subset_size, n, m)
    if size < 2:
        raise ValueError(f"subset size must be at least 2, got {size}")
    if size == n == m:
        # Every subset is the whole of both sets, in another order: one value.
        value = _mmd2_unbiased(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))
        return value, 0.0
    rng = np.random.default_rng(seed)
    cached = n * n + m * m + n * m <= KERNEL_CACHE_ENTRIES
    if cached:
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    scores = np.empty(subsets)
    for i in range(subsets):
        ix = rng.choice(n, size, replace=False)
        iy = rng.choice(m, size, replace=False)
        if cached:
            scores[i] = _mmd2_unbiased(
                kxx[np.ix_(ix, ix)], kyy[np.ix_(iy, iy)], kxy[np.ix_(ix, iy)]
            )
        else:
            a, b = x[ix], y[iy]
            scores[i] = _mmd2_unbiased(_poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b))
    return float(scores.mean()), float(scores.std())


def _nonnegative(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise set to 0: those below
    the rank tolerance ``max * n * eps`` (as ``numpy.linalg.matrix_rank``).
    Their square roots would otherwise add up to a visible error when the
    matrix is singular (fewer samples than dimensions)."""
    tolerance = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(w.dtype).eps
    return np.where(w > tolerance, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(_nonnegative(w))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``trace(sqrtm(s1 @ s2))`` for covariance matrices, without a general
    (non-symmetric) matrix square root: ``s1 @ s2`` has the eigenvalues of the
    symmetric PSD matrix ``sqrt(s1) @ s2 @ sqrt(s1)``, whose eigenvalues
    ``eigvalsh`` finds stably even when both are singular (fewer samples than
    dimensions)."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    m = (m + m.T) / 2.0
    return float(np.sqrt(_nonnegative(np.linalg.eigvalsh(m))).sum())


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``x`` and ``y``:
    ``|mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr(sqrt(S_x S_y))`` with sample
    covariances. Biased upwards for small sets; use it beside :func:`kid`."""
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    (n1, d), n2 = x.shape, len(y)
    if y.shape[1] != d:
        raise ValueError(f"feature sizes differ: {d} and {y.shape[1]}")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    a, b = x - mean_x, y - mean_y
    if n1 * n2 * min(n1, n2) < d**3:
        # Fewer samples than dimensions: S_x S_y = A'A B'B / ((n1-1)(n2-1)) has
        # the nonzero eigenvalues of (A B')(A B')', so the trace of its root is
        # the sum of the singular values of A B' (n1 x n2, small, stable).
        cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    else:
        cross = trace_sqrt_product(a.T @ a / (n1 - 1), b.T @ b / (n2 - 1))
    diff = mean_x - mean_y
    value = diff @ diff + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2.0 * cross
    # Mathematically >= 0; rounding can leave a tiny negative for identical sets.
    return max(float(value), 0.0)


# -- pairs of images -----------------------------------------------------------


def _as_image_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images with values in [0, 1]:
    ``10 log10(1 / MSE)``; ``inf`` when they are identical."""
    a, b = _as_image_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian of ``size`` taps (centre at ``size // 2``)."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(t**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of a 2-D array by ``w`` along both axes
    (no padding: the output is smaller by ``len(w) - 1`` in each direction, as
    in Wang et al.'s reference code and scikit-image's cropped mean). A sum of
    shifted slices: memory stays at a few copies of the image."""
    k = len(w)
    h, width = x.shape[0] - k + 1, x.shape[1] - k + 1
    rows = sum(w[i] * x[i : i + h] for i in range(k))
    return sum(w[i] * rows[:, i : i + width] for i in range(k))


def _ssim_channel(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    c1 = (SSIM_K1 * 1.0) ** 2  # data range 1
    c2 = (SSIM_K2 * 1.0) ** 2
    mu_a = _filter_valid(a, w)
    mu_b = _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two images with values in
    [0, 1]: Gaussian window of 11 taps with sigma 1.5, K1 0.01, K2 0.03, data
    range 1, the mean SSIM map of each channel, averaged over channels.
    1 for identical images. Both sides must be at least 11 pixels."""
    a, b = _as_image_pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    w = gaussian_window()
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c], w) for c in range(a.shape[2])]))
