"""Fuzzing the image loader: mutated bytes of small valid PNG, JPEG, WebP, GIF,
TIFF and BMP files (bit flips, overwritten bytes, truncations, insertions,
deletions) go through ``styler.imageio.load_image``, which must return a
sound image or raise styler's own ``BadImageError``, never anything else,
and never hang.

The default run tries a modest number of examples; ``pytest -m slow`` many
more. Set ``STYLER_FUZZ_EXAMPLES`` to choose the number.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import hostile

from styler.errors import BadImageError, StylerError
from styler.imageio import DecodedImage, load_image

SAMPLES = hostile.good_samples()
EXTENSIONS = {
    "png": ".png",
    "png-rgba": ".png",
    "jpeg": ".jpg",
    "webp": ".webp",
    "webp-lossless": ".webp",
    "gif": ".gif",
    "tiff": ".tif",
    "bmp": ".bmp",
}
#: Small images only: a mutated header may declare a large size, and the
#: loader's own limit (tested elsewhere) is what keeps that from being decoded.
MAX_PIXELS = 4_000_000
#: A hard stop for one example (hypothesis' deadline only reports afterwards).
HANG_SECONDS = 20
DEFAULT_EXAMPLES = int(os.environ.get("STYLER_FUZZ_EXAMPLES", "500"))
SLOW_EXAMPLES = int(os.environ.get("STYLER_FUZZ_EXAMPLES", "20000"))

#: Every example run, reported after the module (see report_tally).
TALLY = {"examples": 0, "images": 0, "refused": 0, "other": 0}

EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=8,
)


class Hang(Exception):
    pass


@contextmanager
def hard_limit(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Hang(f"load_image took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def report_tally() -> Iterator[None]:
    """After the module: how many examples ran (for docs/RELIABILITY.md)."""
    yield
    if TALLY["examples"]:
        hostile.SUMMARY.append(
            f"fuzz: {TALLY['examples']} examples, {TALLY['images']} decoded, "
            f"{TALLY['refused']} refused with BadImageError, {TALLY['other']} anything else"
        )


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="styler-fuzz-") as folder:
        yield Path(folder)


def check_one(folder: Path, kind: str, edits: list[tuple[str, int, int]]) -> None:
    try:
        _check_one(folder, kind, edits)
    except BaseException:
        TALLY["other"] += 1  # a foreign exception, a hang, or an unsound image
        raise


def _check_one(folder: Path, kind: str, edits: list[tuple[str, int, int]]) -> None:
    data = hostile.mutate(SAMPLES[kind], edits)
    path = folder / f"fuzzed{EXTENSIONS[kind]}"
    path.write_bytes(data)
    TALLY["examples"] += 1
    try:
        with hard_limit(HANG_SECONDS):
            image = load_image(path, max_pixels=MAX_PIXELS)
    except BadImageError as exc:
        assert isinstance(exc, StylerError)
        message = str(exc)
        assert message.startswith(f"{path}: ") and exc.reason, message
        assert "\n" not in message, message
        TALLY["refused"] += 1
        return
    assert isinstance(image, DecodedImage)
    h, w = image.rgb.shape[:2]
    assert image.rgb.shape == (h, w, 3) and image.rgb.dtype == np.float32 and h * w >= 1
    assert np.isfinite(image.rgb).all()
    assert image.rgb.min() >= 0.0 and image.rgb.max() <= 1.0
    if image.alpha is not None:
        assert image.alpha.shape == (h, w)
    TALLY["images"] += 1


def test_samples_are_valid_before_mutation(scratch: Path) -> None:
    for kind in SAMPLES:
        check_one(scratch, kind, [])
    assert TALLY["images"] >= len(SAMPLES)


def test_a_gif_whose_frame_header_is_cut_short_is_refused(scratch: Path) -> None:
    """Found by the slow fuzz run (Pillow raised struct.error): one line,
    BadImageError."""
    check_one(scratch, "gif", [("set", 11684, 44)])


@settings(
    max_examples=DEFAULT_EXAMPLES,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(kind=st.sampled_from(sorted(SAMPLES)), edits=EDITS)
def test_mutated_images_decode_or_raise_bad_image_error(
    scratch: Path, kind: str, edits: list[tuple[str, int, int]]
) -> None:
    check_one(scratch, kind, edits)


@pytest.mark.slow
@settings(
    max_examples=SLOW_EXAMPLES,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(kind=st.sampled_from(sorted(SAMPLES)), edits=EDITS)
def test_many_mutated_images_decode_or_raise_bad_image_error(
    scratch: Path, kind: str, edits: list[tuple[str, int, int]]
) -> None:
    check_one(scratch, kind, edits)
