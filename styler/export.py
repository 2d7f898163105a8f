"""Export a generator to a self-describing ONNX file, and prove it is right.

Every export runs the written graph in onnxruntime and the torch network on
the same inputs, at two different shapes (so the dynamic batch, height and
width are exercised), and refuses to write the file if they differ by more
than the tolerance. The file is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from styler._version import __version__
from styler.errors import ExportError
from styler.fsutil import atomic_write_bytes, check_new_output, remove_stale_parts
from styler.log import logger
from styler.metadata import (
    METADATA_KEY,
    STATS_INPUT,
    STATS_OUTPUT,
    STATS_WEIGHT_INPUT,
    ModelMetadata,
)

#: Largest allowed difference between onnxruntime and torch, in output units
#: (the output range is [-1, 1]).
FP32_TOLERANCE = 1e-4
#: fp16 weights and activations against the fp32 torch network: half precision
#: has an 11-bit mantissa, so errors of a few 1e-3 accumulate over the layers.
FP16_TOLERANCE = 3e-2
#: ONNX opset the dynamo exporter targets.
OPSET = 20


@dataclass(frozen=True)
class ExportResult:
    path: Path
    meta: ModelMetadata
    parity_error: float
    seconds: float


class _Fp16(nn.Module):
    """fp32 in and out, fp16 inside: callers keep feeding float32."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


class _Fp16Stats(_Fp16):
    """:class:`_Fp16` for a :class:`GlobalStatsGenerator`."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, stats: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, own = self.net(x.half(), stats.half(), weight.half())
        return out.float(), own.float()


def _shapes(meta: ModelMetadata) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An export example and a different parity shape, both valid for the net."""
    m = meta.size_multiple
    k = max(1, math.ceil(64 / m))
    c = meta.in_channels
    return (2, c, m * (k + 1), m * k), (1, c, m * k, m * (k + 2))


def to_onnx_bytes(net: nn.Module, meta: ModelMetadata, example: torch.Tensor) -> bytes:
    """Trace ``net`` with the dynamo exporter into ONNX bytes with dynamic
    batch, height and width, and ``meta`` written into the file.

    When ``meta.norm_stats`` is set, ``net`` is a :class:`GlobalStatsGenerator`
    and the statistics inputs get defaults (zeros, weight 1: the plain
    network), so that callers who know nothing of them feed the image alone.
    """
    from onnx import numpy_helper

    dyn = torch.export.Dim.DYNAMIC
    args: tuple[torch.Tensor, ...] = (example,)
    input_names, output_names = [meta.input_name], [meta.output_name]
    dynamic: tuple[dict[int, object] | None, ...] = ({0: dyn, 2: dyn, 3: dyn},)
    defaults: list[tuple[str, np.ndarray]] = []
    if meta.norm_stats:
        stats = np.zeros((1, meta.norm_stats), np.float32)
        weight = np.array(1.0, np.float32)
        args += (torch.from_numpy(stats), torch.from_numpy(weight))
        input_names += [STATS_INPUT, STATS_WEIGHT_INPUT]
        output_names.append(STATS_OUTPUT)
        dynamic += (None, None)
        defaults = [(STATS_INPUT, stats), (STATS_WEIGHT_INPUT, weight)]
    model = _dynamo_export(net, args, input_names, output_names, dynamic)
    model.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in defaults)
    return _finish(model, meta)


def _finish(model: object, meta: ModelMetadata) -> bytes:
    """Rewrite an exported graph into faster ops (``styler.graph_passes``),
    write the metadata into it, check it, serialise it."""
    import onnx

    from styler.graph_passes import fast_graph

    assert isinstance(model, onnx.ModelProto)
    fast_graph(model)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    model.producer_name = "styler"
    model.producer_version = __version__
    model.doc_string = meta.description or meta.name
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from None
    return model.SerializeToString()


def _dynamo_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic: tuple[dict[int, object] | None, ...],
) -> Any:
    """torch.onnx.export (dynamo) with its chatter captured; the ONNX ModelProto."""
    from styler.runtime import quiet_onnxruntime

    quiet_onnxruntime()  # before the exporter's optimiser opens any session
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:
            logger.debug("exporter output:\n%s", sink.getvalue())
            raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from exc
    return program.model_proto


def parity_error(
    onnx_bytes: bytes, net: nn.Module, inputs: list[torch.Tensor], meta: ModelMetadata
) -> float:
    """Largest absolute difference between onnxruntime and ``net`` on ``inputs``."""
    from styler.runtime import Model

    check_finite_weights(net)
    model = Model.open(onnx_bytes, device="cpu")
    worst = 0.0

    def compare(got: np.ndarray, expected: np.ndarray) -> None:
        nonlocal worst
        worst = max(worst, difference(got, expected))

    with torch.no_grad():
        for x in inputs:
            compare(model.run(x.numpy()), net(x).float().numpy())
        if meta.norm_stats:
            # The tiling path: statistics of a whole image, applied to a part of it.
            from styler.zoo.global_norm import GlobalStatsGenerator

            wrapped = GlobalStatsGenerator(net)
            x = inputs[0][:1]
            stats = model.norm_stats(x.numpy())
            compare(
                stats, wrapped(x, torch.zeros(1, meta.norm_stats), torch.tensor(1.0))[1].numpy()
            )
            multiple = meta.size_multiple  # a tile is a whole number of multiples
            part = x[:, :, : max(multiple, x.shape[2] // 2 // multiple * multiple)]
            given = torch.from_numpy(stats)
            expected = wrapped(part, given, torch.tensor(0.0))[0].numpy()
            compare(model.run(part.numpy(), stats=stats), expected)
    return worst


def difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference between onnxruntime's and torch's outputs;
    a shape mismatch, or a NaN or infinite value on either side, refuses the
    export (``max`` would pass a NaN over, and a NaN model makes black images)."""
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime gave shape {got.shape} where torch gave {expected.shape}")
    for side, values in (("onnxruntime", got), ("torch", expected)):
        if not np.isfinite(values).all():
            raise ExportError(f"the network's output in {side} holds NaN or infinite values")
    return float(np.max(np.abs(got - expected), initial=0.0))


def check_finite_weights(net: nn.Module) -> None:
    """Refuse a network with a NaN or infinite weight (a diverged or damaged
    checkpoint), naming the first such tensor."""
    for name, tensor in [*net.state_dict().items()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ExportError(f"the weights hold NaN or infinite values (in {name})")


def export_onnx(
    net: nn.Module,
    meta: ModelMetadata,
    path: str | Path,
    *,
    fp16: bool = False,
    tolerance: float | None = None,
    seed: int = 0,
    global_stats: bool = True,
    replace: bool = True,
) -> ExportResult:
    """Export ``net`` (a generator described by ``meta``) to ``path``.

    With ``fp16`` the weights and activations are half precision and the input
    and output stay float32; the parity check then compares against the fp32
    torch network with :data:`FP16_TOLERANCE`. With ``global_stats`` (the
    default), instance-norm networks get the optional statistics inputs and
    output that make tiled inference seamless (see ``styler.zoo.global_norm``).
    The graph is rewritten into faster ops with the same arithmetic (see
    ``styler.graph_passes``) before the parity check.
    """
    from styler.zoo.global_norm import GlobalStatsGenerator, stats_size

    start = time.perf_counter()
    path = Path(path)
    reference = copy.deepcopy(net).float().cpu().eval()
    n_stats = stats_size(reference) if global_stats else 0
    module: nn.Module = copy.deepcopy(reference)  # fp16 converts it in place
    if n_stats:
        module = GlobalStatsGenerator(module)
    if fp16:
        module = _Fp16Stats(module) if n_stats else _Fp16(module)
    meta = dataclasses.replace(
        meta,
        norm_stats=n_stats,
        precision="fp16" if fp16 else "fp32",
        styler_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        parity_error=None,
    )
    gen = torch.Generator().manual_seed(seed)
    example_shape, other_shape = _shapes(meta)
    lo, hi = meta.value_range
    inputs = [torch.rand(s, generator=gen) * (hi - lo) + lo for s in (example_shape, other_shape)]
    data = to_onnx_bytes(module, meta, inputs[0])
    error = parity_error(data, reference, inputs, meta)
    limit = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    if not error <= limit:
        raise ExportError(
            f"refusing to write {path}: onnxruntime and torch differ by {error:.3g} "
            f"(limit {limit:g}) on inputs {list(example_shape)} and {list(other_shape)}"
        )
    meta = dataclasses.replace(meta, parity_error=error)
    data = _replace_metadata(data, meta)
    atomic_write_bytes(path, data, replace)
    seconds = time.perf_counter() - start
    logger.info("exported %s (parity error %.2e, %.1f s)", path, error, seconds)
    return ExportResult(path, meta, error, seconds)


def _replace_metadata(data: bytes, meta: ModelMetadata) -> bytes:
    import onnx

    model = onnx.load_model_from_string(data)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    return model.SerializeToString()


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    fp16: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    description: str | None = None,
    license: str | None = None,
) -> ExportResult:
    """Export a styler generator checkpoint (.safetensors) to ONNX."""
    from styler.checkpoint import build_generator, load_generator

    checkpoint, output = Path(checkpoint), Path(output)
    check_new_output(checkpoint, output, overwrite)
    remove_stale_parts(output.parent)  # what a killed writer left
    meta, state = load_generator(checkpoint)
    changes = {"name": name, "description": description, "license": license}
    meta = dataclasses.replace(meta, **{k: v for k, v in changes.items() if v is not None})
    if not meta.source:
        meta = dataclasses.replace(meta, source=f"styler checkpoint {checkpoint.name}")
    net = build_generator(meta, state, checkpoint)
    try:
        check_finite_weights(net)
    except ExportError as exc:
        raise ExportError(exc.reason, checkpoint) from None
    return export_onnx(net, meta, output, fp16=fp16, replace=overwrite)


class _NoiseGenerator(nn.Module):
    """``forward(noise[, label])`` with the label an input only when the
    generator is class-conditional, so the graph has exactly its inputs."""

    def __init__(self, net: nn.Module, conditional: bool) -> None:
        super().__init__()
        self.net = net
        self.conditional = conditional

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(noise, label if self.conditional else None)


def export_generator(
    net: nn.Module, meta: ModelMetadata, path: str | Path, *, seed: int = 0, replace: bool = True
) -> ExportResult:
    """Export a generator from noise (``meta.task == "generate"``) to ``path``:
    inputs ``noise`` (N x latent) and, when conditional, ``label`` (N, int64);
    output ``image`` (N, C, H, W) in ``meta.value_range``. Parity-checked
    against torch at two batch sizes, written atomically."""
    from styler.metadata import LABEL_INPUT, NOISE_INPUT
    from styler.runtime import Model

    start = time.perf_counter()
    path = Path(path)
    reference = copy.deepcopy(net).float().cpu().eval()
    conditional = meta.num_classes > 0
    meta = dataclasses.replace(
        meta,
        task="generate",
        input_name=NOISE_INPUT,
        output_name="image",
        precision="fp32",
        styler_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        parity_error=None,
    )
    gen = torch.Generator().manual_seed(seed)

    def inputs(n: int) -> tuple[torch.Tensor, ...]:
        noise = torch.randn(n, meta.latent_dim, generator=gen)
        if not conditional:
            return (noise,)
        return noise, torch.randint(0, meta.num_classes, (n,), generator=gen)

    dyn = torch.export.Dim.DYNAMIC
    names = [NOISE_INPUT, LABEL_INPUT] if conditional else [NOISE_INPUT]
    module = _NoiseGenerator(copy.deepcopy(reference), conditional).eval()
    model = _dynamo_export(module, inputs(3), names, ["image"], tuple({0: dyn} for _ in names))
    data = _finish(model, meta)
    check_finite_weights(reference)
    session = Model.open(data, device="cpu")
    worst = 0.0
    with torch.no_grad():
        for n in (2, 5):
            args = inputs(n)
            expected = module(*args).numpy()
            got = session.generate(args[0].numpy(), args[1].numpy() if conditional else None)
            worst = max(worst, difference(got, expected))
    if not worst <= FP32_TOLERANCE:
        raise ExportError(
            f"refusing to write {path}: onnxruntime and torch differ by {worst:.3g} "
            f"(limit {FP32_TOLERANCE:g})"
        )
    meta = dataclasses.replace(meta, parity_error=worst)
    atomic_write_bytes(path, _replace_metadata(data, meta), replace)
    seconds = time.perf_counter() - start
    logger.info("exported %s (parity error %.2e, %.1f s)", path, worst, seconds)
    return ExportResult(path, meta, worst, seconds)
