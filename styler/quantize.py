"""int8 models for CPUs: onnxruntime static quantisation, calibrated on images
and checked against the fp32 model before anything is written.

Convolution weights become int8 per output channel and activations uint8 per
tensor, with ranges calibrated on real images (the user's, or any photos of
the kind the model will see). Normalisation, padding and the rest stay in
float. On CPUs with VNNI, onnxruntime's int8 convolutions are faster than its
fp32 ones; the price is a small loss of precision, measured here as the PSNR
of the int8 outputs against the fp32 outputs on the calibration images, and
the file is refused below ``min_psnr``.

Needs the ``onnx`` package (the ``train`` extra); the written model runs
with onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from styler import imageio, metrics
from styler.errors import BadModelError, ExportError, OutputError, UsageError
from styler.fsutil import atomic_write_bytes, check_new_output, remove_stale_parts
from styler.graph_passes import fast_graph, transposed_to_subpixel
from styler.log import logger
from styler.metadata import METADATA_KEY, ModelMetadata
from styler.runtime import Model, model_runs, read_model_file

#: Calibration and checking images are downscaled to this longer side.
CALIBRATION_SIDE = 512
#: Refuse an int8 model whose outputs are further than this from fp32's.
MIN_PSNR = 30.0
#: Convolutions with fewer output channels than this stay in float. An int8
#: GEMM this thin is slow in onnxruntime: the 7x7 RGB head of resnet_9blocks
#: took 0.9-1.8 s in int8 against 0.17 s in fp32 at 768x512.
MIN_INT8_CHANNELS = 16


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs advice ("consider pre-processing") to the
    root logger; users of styler quantize should see styler's lines only."""

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def thin_convolutions(model: Any) -> list[str]:
    """Names of the Conv nodes of ``model`` (an onnx ModelProto) with fewer
    than :data:`MIN_INT8_CHANNELS` output channels."""
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and len(node.input) > 1
        and node.input[1] in weights
        and weights[node.input[1]][0] < MIN_INT8_CHANNELS
    ]


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    meta: ModelMetadata
    psnr: float
    seconds: float


def _model_inputs(images: Sequence[np.ndarray], meta: ModelMetadata) -> list[np.ndarray]:
    """H x W x 3 images in [0, 1] -> padded 1 x C x H x W batches, as
    ``styler apply`` gives them to the model (tiny images padded further)."""
    from styler.apply import model_input, pad_for_model

    return [np.ascontiguousarray(pad_for_model(model_input(rgb, meta), meta)[0]) for rgb in images]


def load_calibration(
    files: Sequence[Path], side: int = CALIBRATION_SIDE, limit: int | None = None
) -> list[np.ndarray]:
    """The first ``limit`` readable images of ``files`` (unreadable ones are
    skipped with a warning), downscaled for calibration."""
    images = imageio.load_downscaled(files, side, "calibration", limit=limit)
    if len(images) < 2:
        raise UsageError("int8 calibration needs at least 2 readable images")
    return images


def quantize_int8(
    model_path: str | Path,
    output: str | Path,
    images: Sequence[np.ndarray],
    *,
    min_psnr: float = MIN_PSNR,
    overwrite: bool = False,
) -> QuantizeResult:
    """Write an int8 copy of the fp32 translation model ``model_path``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    start = time.perf_counter()
    output = Path(output)
    check_new_output(Path(model_path), output, overwrite)
    remove_stale_parts(output.parent)  # what a killed writer left
    raw = read_model_file(model_path)  # (read once: the model run is the model rewritten)
    source = Model.open(raw, device="cpu", name=model_path)
    meta = source.meta
    if meta.task != "translate" or meta.precision != "fp32":
        raise UsageError("int8 quantisation takes an fp32 translation model", model_path)
    batches = _model_inputs(images, meta)
    with model_runs(model_path):
        reference = [source.run(x) for x in batches]  # fp32 outputs, to compare int8 with
    for y in reference:
        if not np.isfinite(y).all():
            raise BadModelError(
                "the fp32 model's output holds NaN or infinite values: nothing to calibrate",
                model_path,
            )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {meta.input_name: x}

    try:  # the working files go to TMPDIR: a full or unwritable one is one line
        with tempfile.TemporaryDirectory() as tmp:
            # The graph rewrites of the exporter first (files written by older
            # versions lack them), transposed convolutions in sub-pixel form
            # (which int8 can run); then onnxruntime's static quantisation.
            fast = onnx.load_from_string(raw)
            fast_graph(fast)
            transposed_to_subpixel(fast)
            prepared = Path(tmp) / "fp32.onnx"
            onnx.save(fast, str(prepared))
            quantized = Path(tmp) / "int8.onnx"
            with _quiet_root_logger():
                quantize_static(
                    str(prepared),
                    str(quantized),
                    Reader(),
                    quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv"],
                    nodes_to_exclude=thin_convolutions(fast),
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
            model = onnx.load(str(quantized))
    except OSError as exc:
        where = exc.filename or tempfile.gettempdir()
        raise OutputError(f"cannot write a working file: {exc.strerror or exc}", where) from None
    new_meta = dataclasses.replace(meta, precision="int8", parity_error=None)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: new_meta.to_json()})
    data = model.SerializeToString()
    check = Model.open(data, device="cpu")
    lo, hi = meta.value_range
    scores = []
    for x, y in zip(batches, reference, strict=True):
        a = (y[0].transpose(1, 2, 0) - lo) / (hi - lo)
        with model_runs(model_path):
            b = (check.run(x)[0].transpose(1, 2, 0) - lo) / (hi - lo)
        scores.append(metrics.psnr(np.clip(a, 0, 1), np.clip(b, 0, 1)))
    psnr = float(np.mean([min(s, 100.0) for s in scores]))
    if not psnr >= min_psnr:
        raise ExportError(
            f"refusing to write {output}: int8 outputs are {psnr:.2f} dB from fp32 "
            f"(minimum {min_psnr:g} dB)"
        )
    new_meta = dataclasses.replace(new_meta, extra={**meta.extra, "int8_psnr_db": round(psnr, 2)})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: new_meta.to_json()})
    atomic_write_bytes(output, model.SerializeToString(), overwrite)
    seconds = time.perf_counter() - start
    logger.info("wrote %s: int8, %.1f dB PSNR against fp32 (%.1f s)", output, psnr, seconds)
    return QuantizeResult(output, new_meta, psnr, seconds)
