"""Faithful image decoding and atomic encoding (Pillow and numpy only).

Decoding applies EXIF orientation, splits off alpha untouched, turns every
colour mode (greyscale, palette, CMYK, 16-bit, ...) into RGB floats in [0, 1],
and refuses what is unsafe or broken with one short reason. Encoding writes
the styled RGB back with the original alpha, ICC profile and EXIF, through a
temporary file that replaces the target only when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import io
import logging
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from styler.errors import BadImageError, OutputError
from styler.fsutil import atomic_path
from styler.log import logger
from styler.slowfiles import TIFF_HEADS, claimed_format
from styler.slowfiles import too_costly as slow_to_open

# Pillow logs what it finds wrong in a damaged file (e.g. a TIFF tag) to the
# "PIL" logger; unless the application set up logging, Python would print it
# on stderr as a stray second line about the file. styler reports the file in
# one line of its own. (An application's own logging still receives these.)
logging.getLogger("PIL").addHandler(logging.NullHandler())

#: Refuse images with more pixels than this (Pillow's own decompression-bomb
#: error threshold, read here, never changed).
DEFAULT_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

# Pillow inflates a PNG's compressed ICC profile or text (iCCP, zTXt, iTXt)
# to at most 1 MB and refuses the file beyond: good files with a large
# profile, or an image generator's workflow text, were refused. 16 MB each
# (Pillow's own bound on all text together, 64 MB, stays), set once here.
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 16 << 20)
ORIENTATION_TAG = 0x0112

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
_BY_EXTENSION = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_KEEP = {"JPEG", "PNG", "WEBP", "TIFF", "BMP"}
_REQUESTED = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for a model, and what is needed to write it back faithfully."""

    rgb: np.ndarray  # H x W x 3 float32 in [0, 1], EXIF orientation applied
    alpha: np.ndarray | None  # H x W, original values (uint8 or uint16)
    format: str  # Pillow format of the source ("JPEG", "PNG", ...)
    mode: str  # Pillow mode of the source
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    lossless: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        return self.rgb.shape[1], self.rgb.shape[0]


def format_from_extension(suffix: str) -> str:
    """The format an extension promises (decoding tells the truth later)."""
    return _BY_EXTENSION.get(suffix.lower(), "PNG")


def output_format(source_format: str, requested: str = "keep") -> str:
    """Pillow format to write: the source's when it can be kept, else PNG
    (a multi-picture JPEG, Pillow's MPO, is written as a JPEG)."""
    if requested != "keep":
        try:
            return _REQUESTED[requested.lower()]
        except KeyError:
            raise ValueError(f"unknown output format {requested!r}") from None
    source_format = "JPEG" if source_format == "MPO" else source_format
    return source_format if source_format in _KEEP else "PNG"


#: The longest side each output format can hold (libjpeg's limit; WebP's 14-bit sizes).
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}


def too_large_for(fmt: str, size: tuple[int, int]) -> str | None:
    """Why an image of ``size`` cannot be written as ``fmt``, or None."""
    limit = MAX_SIDE.get(fmt)
    if limit is None or max(size) <= limit:
        return None
    name = "WebP" if fmt == "WEBP" else fmt
    return (
        f"cannot write: {size[0]}x{size[1]} is too large for {name} (at most {limit} "
        "pixels a side); use --format png"
    )


def extension_for(fmt: str) -> str:
    return _EXTENSIONS.get(fmt, ".png")


#: The Pillow decoders styler uses, and no other: an image is opened only with
#: these (``Image.open(formats=...)``), so a file that claims to be anything
#: else (EPS, PDF, PostScript, whose decoders start Ghostscript from PATH, or
#: any format styler does not list) is refused before a decoder runs.
#: (JPEG's decoder also opens MPO, the multi-picture JPEG of some cameras.)
#: They are tried in this order, and TGA, which has no magic number and
#: takes many other files' first bytes for a header, comes last.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF", "PPM", "ICO", "TGA")
# Register exactly these decoders (Pillow loads the rest only on demand, and
# with an explicit ``formats`` list it never does).
for _plugin in ("Bmp", "Gif", "Ico", "Jpeg", "Png", "Ppm", "Tga", "Tiff", "WebP"):
    importlib.import_module(f"PIL.{_plugin}ImagePlugin")
_UNSUPPORTED = "not an image file (or a format styler does not read)"


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding a pixel."""

    format: str  # Pillow format ("JPEG", "PNG", ...)
    size: tuple[int, int]  # (width, height) as stored (before EXIF orientation)


def probe(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """The format and size of ``path`` from its header, with every check
    :func:`load_image` makes before decoding (regular file, a supported
    format, size limits, not animated), or :class:`BadImageError` saying why."""
    with _opened(Path(path), max_pixels) as img:
        return ImageHeader(img.format or "PNG", img.size)


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``path`` completely, or raise :class:`BadImageError` saying why.

    Only regular files are read (a named pipe would block forever, a device
    such as /dev/zero never ends), only with the decoders in
    :data:`SUPPORTED_FORMATS`, and the file is streamed to the decoder: its
    header is checked against ``max_pixels`` before any pixel is read."""
    with _opened(Path(path), max_pixels, scans=True) as img:
        img.load()
        return decode_pil(img, source_format=img.format or "PNG")


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int, scans: bool = False) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (header read, nothing decoded), with every
    error inside the block turned into one :class:`BadImageError`. Headers
    made to be slow to read (with ``scans``, a JPEG's scans too) are refused
    first (:mod:`styler.slowfiles`)."""
    if os.path.isdir(path):  # (False where the path cannot be checked: os.open says why)
        raise BadImageError("is a directory, not an image", path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BadImageError("no such file", path) from None
    except PermissionError:
        raise BadImageError("permission denied", path) from None
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}", path) from None
    except ValueError:  # a NUL byte in the name (from a list of paths)
        raise BadImageError("not a valid file name (it holds a NUL byte)", path) from None
    with open(fd, "rb") as f:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            raise BadImageError(f"not a regular file ({kind})", path)
        try:
            head = f.read(16)
            f.seek(0)
        except OSError as exc:
            raise BadImageError(f"cannot read: {exc.strerror or exc}", path) from None
        if not head:
            raise BadImageError("empty file", path)
        _check_headers(head, f, path, whole=scans)
        if head[:4] in TIFF_HEADS:
            _quiet_libtiff()
        with _decoder_errors(head, path):
            img = Image.open(f, formats=SUPPORTED_FORMATS)
            _check_size(img, max_pixels, path)
            # Only the first page of a TIFF (or MPO) is read: never count
            # its pages (Pillow walks a chain of 200,000 in minutes).
            frames = 1 if img.format in ("TIFF", "MPO") else getattr(img, "n_frames", 1)
            if frames > 1:
                raise BadImageError(f"animated image ({frames} frames) is not supported", path)
            yield img


def _check_headers(head: bytes, f: BinaryIO, path: Path, whole: bool) -> None:
    """Refuse a file whose headers would take Pillow minutes and gigabytes
    to read, or (``whole``) a JPEG whose scans would take minutes to decode
    (:mod:`styler.slowfiles`), then rewind."""
    try:
        reason = slow_to_open(head, f, whole)
    except (ValueError, OverflowError):  # an offset no file has: the decoder says what is wrong
        reason = None
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}", path) from None
    try:
        f.seek(0)
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}", path) from None
    if reason:
        raise BadImageError(reason, path)


@functools.cache
def _quiet_libtiff() -> None:
    """libtiff, inside Pillow's TIFF decoder, prints its errors and warnings
    on stderr itself ("JPEGLib: Quantization table 0x00 was not defined."),
    around styler's own line for the file. Its process-wide handlers are set
    to none, once (Pillow reads its errors from return codes, not from
    them). Where the symbols cannot be reached through Pillow's extension
    (Windows), the messages stay."""
    try:
        from PIL import _imaging

        lib = ctypes.CDLL(_imaging.__file__)  # dlsym searches its libtiff too
        for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            setter = getattr(lib, name)
            setter.restype = ctypes.c_void_p
            setter.argtypes = [ctypes.c_void_p]
            setter(None)
    except (OSError, AttributeError, ImportError):
        logger.debug("libtiff's messages could not be silenced")


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


@contextlib.contextmanager
def _decoder_errors(head: bytes, path: Path) -> Iterator[None]:
    """Pillow's errors inside the block as one :class:`BadImageError` each;
    its warnings about damaged files it can still read stay quiet (the
    file's one line of news is styler's). Pillow's decompression-bomb
    warning (above half of its error threshold, 89.5 megapixels: a 100 MP
    camera's photos) is quiet too: ``max_pixels`` decides, from the header,
    up to the threshold where Pillow itself refuses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            yield
    except BadImageError as exc:
        if exc.path is None:  # raised by decode_pil, which knows no path
            raise BadImageError(exc.reason, path) from None
        raise
    except Image.DecompressionBombError:
        raise BadImageError(
            f"image too large to decode safely (over {DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels)",
            path,
        ) from None
    except UnidentifiedImageError:
        raise BadImageError(_unidentified(head), path) from None
    # struct.error and IndexError: a damaged GIF's frame header, or palette.
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        MemoryError,
        TypeError,
        struct.error,
        IndexError,
    ) as exc:
        raise BadImageError(_decode_reason(exc, head), path) from None


def _check_size(img: Image.Image, max_pixels: int, path: Path) -> None:
    w, h = img.size
    if w < 1 or h < 1:
        raise BadImageError(f"image has no pixels ({w} x {h})", path)
    if w * h > max_pixels:
        raise BadImageError(
            f"image too large to decode safely ({w} x {h} = {w * h / 1e6:.0f} megapixels, "
            f"limit {max_pixels / 1e6:.0f})",
            path,
        )


def _unidentified(head: bytes) -> str:
    """Why no decoder opened a file: it claims no format styler reads, or
    it claims one and its header is damaged (or of a kind the decoder does
    not support: Pillow tells the two apart only by its silence)."""
    kind = claimed_format(head)
    if kind is None:
        return _UNSUPPORTED
    if head[:2] == b"PF":
        return "a colour PFM (floating-point RGB), which styler's decoder does not read"
    example = "; it does not read floating-point colour, for one" if kind == "TIFF" else ""
    return f"damaged or unsupported {kind} data (the decoder cannot open it{example})"


def _decode_reason(exc: BaseException, data: bytes) -> str:
    text = str(exc).lower()
    kind = claimed_format(data) or "image"
    if (
        "truncated" in text
        or "broken data stream" in text
        or "could not create decoder" in text  # libwebp's only word on a cut file
        or isinstance(exc, EOFError)
    ):
        return f"truncated or corrupt {kind} data"
    if "crc" in text or "corrupt" in text:
        return f"corrupt {kind} data"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "decoder error" in text:  # Pillow's only word from libtiff and others
        return f"corrupt or unsupported {kind} data ({first[:160]})"
    return f"cannot decode {kind}: {first[:160]}"


def decode_pil(img: Image.Image, source_format: str | None = None) -> DecodedImage:
    """Turn an opened Pillow image into a :class:`DecodedImage` (a colour
    mode Pillow cannot convert is a :class:`BadImageError`)."""
    try:
        return _decode_pil(img, source_format)
    except ValueError as exc:
        raise BadImageError(f"colour mode {img.mode} is not supported ({exc})") from None


def _decode_pil(img: Image.Image, source_format: str | None) -> DecodedImage:
    fmt = source_format or img.format or "PNG"
    fmt = "JPEG" if fmt == "MPO" else fmt  # a multi-picture JPEG: its first picture
    mode = img.mode
    icc = img.info.get("icc_profile") or None
    lossless = fmt == "WEBP" and _webp_is_lossless(img)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBa", "La"):  # premultiplied alpha (PIL images given to the API)
        img = img.convert("RGBA" if img.mode == "RGBa" else "LA")
        mode = img.mode
    exif = _exif_without_orientation(img)
    alpha: np.ndarray | None = None
    bit_depth = 8
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        bit_depth = 16
        scale = 65535.0 if mode != "I" or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / scale, 0, 1).astype(np.float32)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        key = img.info.get("transparency")
        if isinstance(key, int) and not isinstance(key, bool):  # PNG's colour key
            alpha = np.where(arr == key, 0, 255).astype(np.uint8)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            # Refused, not guessed at: NaN is often "no data", and any value
            # put in its place would be styled as if it were a real pixel.
            raise BadImageError(
                f"a floating-point image with {bad} NaN or infinite "
                f"value{'s' if bad > 1 else ''}: styler needs finite pixels"
            )
        top = float(arr.max(initial=1.0))
        grey = np.clip(arr / (255.0 if top > 1.0 else 1.0), 0, 1)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        if mode == "CMYK":
            img, icc = _cmyk_to_rgb(img, icc), None
        elif mode in ("LAB", "HSV", "YCbCr"):
            img, icc = img.convert("RGB"), (icc if mode == "YCbCr" else None)
        if "A" in img.mode or "transparency" in img.info:
            # RGBa (premultiplied) converts to straight alpha here.
            rgba = img.convert("RGBA")
            source = img if img.mode in ("RGBA", "LA", "PA") else rgba
            alpha = np.asarray(source.getchannel("A")).copy()
            rgb8 = np.asarray(rgba.convert("RGB"))
        else:
            rgb8 = np.asarray(img.convert("RGB"))
        rgb = rgb8.astype(np.float32) / 255.0
    if icc is not None and mode in ("L", "LA", "I;16", "I;16B", "I", "1", "F"):
        icc = None  # a greyscale profile cannot describe an RGB output
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=alpha,
        format=fmt,
        mode=mode,
        bit_depth=bit_depth,
        icc_profile=icc,
        exif=exif,
        lossless=lossless,
    )


def _cmyk_to_rgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB") or img.convert("RGB")
        except Exception:  # a damaged profile: fall back to the plain conversion
            pass
    return img.convert("RGB")


def _webp_is_lossless(img: Image.Image) -> bool:
    fp = getattr(img, "fp", None)
    try:
        if fp is not None:
            pos = fp.tell()
            fp.seek(12)
            chunk = fp.read(4)
            fp.seek(pos)
            return chunk == b"VP8L"
    except (OSError, ValueError):
        pass
    return False


def _exif_without_orientation(img: Image.Image) -> bytes | None:
    try:
        exif = img.getexif()
    except Exception:
        return None
    if not exif:
        return None
    if ORIENTATION_TAG in exif:
        del exif[ORIENTATION_TAG]  # the pixels are upright now
    try:
        return exif.tobytes()
    except Exception:
        return None


def limited(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` scaled down so its longest side is at most ``max_side``."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return size
    scale = max_side / max(w, h)
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def limit_size(image: DecodedImage, max_side: int) -> DecodedImage:
    """Downscale (area-averaging) so the longest side is at most ``max_side``."""
    size = limited(image.size, max_side)
    if size == image.size:
        return image
    channels = [
        np.asarray(Image.fromarray(image.rgb[:, :, c], mode="F").resize(size, Image.BOX))
        for c in range(3)
    ]
    alpha = None
    if image.alpha is not None:
        alpha = np.asarray(Image.fromarray(image.alpha).resize(size, Image.BOX))
    return replace(image, rgb=np.stack(channels, axis=2).astype(np.float32), alpha=alpha)


def load_downscaled(
    files: Sequence[Path],
    max_side: int,
    what: str,
    check: Callable[[np.ndarray, Path], None] | None = None,
    limit: int | None = None,
) -> list[np.ndarray]:
    """The RGB arrays of the readable ``files`` (the first ``limit`` of them),
    downscaled to ``max_side``; the others, and those ``check`` refuses (a
    :class:`BadImageError`), are skipped with a warning (``what`` says what
    they were for)."""
    images: list[np.ndarray] = []
    for path in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            rgb = limit_size(load_image(path), max_side).rgb
            if check is not None:
                check(rgb, path)
            images.append(rgb)
        except BadImageError as exc:
            logger.warning("%s: skipping %s", what, exc)
    return images


def to_pil(rgb: np.ndarray, like: DecodedImage) -> Image.Image:
    """The styled RGB as a Pillow image, with ``like``'s alpha re-attached."""
    scaled = np.clip(rgb, 0.0, 1.0)
    scaled *= 255.0
    scaled += 0.5
    rgb8 = scaled.astype(np.uint8)
    del scaled
    out = Image.fromarray(rgb8, "RGB")
    if like.alpha is not None:
        alpha = like.alpha
        if alpha.dtype != np.uint8:
            alpha = (alpha.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        out.putalpha(Image.fromarray(alpha, "L"))
    if like.icc_profile:
        out.info["icc_profile"] = like.icc_profile
    return out


#: Most EXIF bytes a JPEG holds: one APP1 segment (65,535 bytes with its
#: length field) less the "Exif\0\0" header.
JPEG_MAX_EXIF = 65_533 - 6


def exif_too_long(like: DecodedImage, fmt: str) -> bool:
    """Whether ``like``'s EXIF cannot go into a ``fmt`` file (it is then left
    out: a PNG's or WebP's EXIF may be larger than a JPEG's segment)."""
    return fmt == "JPEG" and like.exif is not None and len(like.exif) > JPEG_MAX_EXIF


def save_image(
    path: str | Path,
    rgb: np.ndarray,
    like: DecodedImage,
    fmt: str,
    quality: int = 95,
    replace: bool = True,
) -> None:
    """Write ``rgb`` (H x W x 3 in [0, 1]) to ``path`` in ``fmt``, atomically
    (without ``replace``, a file that appeared at ``path`` meanwhile is kept:
    :class:`~styler.errors.OutputExistsError`).

    Alpha is re-attached exactly where the format can hold it (PNG, WebP,
    TIFF) and dropped for JPEG and BMP. The ICC profile and EXIF (orientation
    reset) are kept where the format supports them. Outputs are 8-bit: a
    style network's output carries no 16-bit precision.
    """
    path = Path(path)
    too_large = too_large_for(fmt, (rgb.shape[1], rgb.shape[0]))
    if too_large is not None:
        raise OutputError(too_large, path)
    img = to_pil(rgb, like)
    if fmt not in _ALPHA_FORMATS and img.mode == "RGBA":
        img = img.convert("RGB")
    params: dict[str, object] = {}
    if like.icc_profile and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        params["icc_profile"] = like.icc_profile
    if like.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF") and not exif_too_long(like, fmt):
        params["exif"] = like.exif
    if fmt == "JPEG":
        params.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=quality, method=4, lossless=like.lossless)
        if like.alpha is not None:
            params["exact"] = True
    elif fmt == "PNG":
        params.update(compress_level=6)
    elif fmt == "TIFF":
        params.update(compression="tiff_deflate")
    try:
        with atomic_path(path, replace) as tmp, open(tmp, "wb") as f:
            img.save(f, format=fmt, **params)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path) from None
    except (ValueError, KeyError) as exc:
        raise OutputError(f"cannot encode {fmt}: {exc}", path) from None
