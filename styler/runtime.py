"""The onnxruntime side: open a styler model, check it, choose a device, run it.

This module is in the apply half: it needs onnxruntime and numpy, never torch.
An ONNX file is data: we let onnxruntime parse it, then check that its
metadata and its inputs and outputs are what a styler generator has before
anything is run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from styler.errors import BadModelError, DeviceError, StylerError, UsageError, import_installed
from styler.fsutil import path_kind
from styler.log import logger
from styler.metadata import (
    LABEL_INPUT,
    METADATA_KEY,
    NOISE_INPUT,
    STATS_INPUT,
    STATS_OUTPUT,
    STATS_WEIGHT_INPUT,
    ModelMetadata,
)
from styler.onnxsize import check_nodes

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def choose_providers(device: str, available: Sequence[str]) -> tuple[str, list[str]]:
    """Pick onnxruntime execution providers for ``device``.

    ``auto`` takes CUDA when onnxruntime offers it, else the CPU; ``cuda`` when
    CUDA is not offered is an error, never a silent fallback. Returns the device
    taken and the provider list (CPU last, for the few ops CUDA lacks).
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    has_cuda = CUDA_PROVIDER in available
    if device == "cuda" and not has_cuda:
        raise DeviceError(
            "CUDA was asked for but onnxruntime offers no CUDAExecutionProvider "
            f"(available: {', '.join(available) or 'none'}); install styler[gpu] "
            "(onnxruntime-gpu) with a matching CUDA, or use --device cpu"
        )
    if device in ("cuda", "auto") and has_cuda:
        return "cuda", [CUDA_PROVIDER, CPU_PROVIDER]
    return "cpu", [CPU_PROVIDER]


def quiet_onnxruntime() -> Any:
    """The onnxruntime module with its process-wide log at fatal only: styler
    reports every error itself, in one line per file (onnxruntime's own log,
    written by C++ straight to the stderr descriptor, would add unprefixed
    lines, such as "Removing initializer" warnings from sessions that other
    libraries open, for example the ONNX exporter's optimiser)."""
    onnxruntime = import_installed("onnxruntime", "onnxruntime", "pip install styler")
    if onnxruntime is None:
        raise StylerError("styler needs onnxruntime: pip install onnxruntime")
    onnxruntime.set_default_logger_severity(4)
    return onnxruntime


#: Most CPU threads one session may be given (beyond any real machine; a
#: mistyped --threads 3000 would spend minutes starting threads).
MAX_THREADS = 1024


def session_options(threads: int | None = None) -> Any:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be in 1..{MAX_THREADS}, got {threads}")
    ort = quiet_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    # Without the arena, memory goes back between runs and the peak of a
    # full-width generator drops by about a third, at no cost in speed
    # (measured on the CPU: 1100 -> 760 MB at 768x512 for resnet_9blocks).
    opts.enable_cpu_mem_arena = False
    return opts


def read_metadata(session: Any, source: str | Path) -> ModelMetadata:
    """The styler metadata of an open session, checked against its graph."""
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise BadModelError(
            "an ONNX model, but not a styler model (no 'styler' metadata); export it with "
            "`styler export` or import a checkpoint with `styler import`",
            source,
        )
    try:
        meta = ModelMetadata.from_json(props[METADATA_KEY])
    except BadModelError as exc:
        raise BadModelError(exc.reason, source) from None
    check_signature(session, meta, source)
    return meta


def check_signature(session: Any, meta: ModelMetadata, source: str | Path) -> None:
    """The graph must take and give what the metadata says: for translation one
    NCHW float image in and out; for generation noise (and labels) in."""
    if meta.task == "generate":
        check_generator_signature(session, meta, source)
        return
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    for role, table, name, channels in (
        ("input", inputs, meta.input_name, meta.in_channels),
        ("output", outputs, meta.output_name, meta.out_channels),
    ):
        arg = table.get(name)
        if arg is None:
            raise BadModelError(
                f"the metadata names {role} {name!r}, the graph has {', '.join(table) or 'none'}",
                source,
            )
        if arg.type not in ("tensor(float)", "tensor(float16)"):
            raise BadModelError(f"{role} {name!r} is {arg.type}, expected a float tensor", source)
        shape = arg.shape
        if len(shape) != 4:
            raise BadModelError(f"{role} {name!r} has rank {len(shape)}, expected NCHW", source)
        if isinstance(shape[1], int) and shape[1] != channels:
            raise BadModelError(
                f"{role} {name!r} has {shape[1]} channels, the metadata says {channels}", source
            )
        if role == "input" and isinstance(shape[0], int) and shape[0] != 1:
            raise BadModelError(
                f"input {name!r} takes a fixed batch of {shape[0]} images; a styler model "
                "takes any number (or one at a time)",
                source,
            )
        if role == "input" and (isinstance(shape[2], int) or isinstance(shape[3], int)):
            raise BadModelError(
                f"input {name!r} has a fixed size ({shape[2]} x {shape[3]}); a styler model "
                "takes images of any size",
                source,
            )
    if meta.norm_stats:
        optional = {i.name: i for i in session.get_overridable_initializers()}
        stats, weight = optional.get(STATS_INPUT), optional.get(STATS_WEIGHT_INPUT)
        if (
            stats is None
            or weight is None
            or list(stats.shape) != [1, meta.norm_stats]
            or STATS_OUTPUT not in outputs
        ):
            raise BadModelError(
                f"the metadata promises {meta.norm_stats} norm statistics, the graph does not "
                f"have the optional inputs {STATS_INPUT}, {STATS_WEIGHT_INPUT} of that size "
                f"and the output {STATS_OUTPUT}",
                source,
            )
    required = [i for i in session.get_inputs() if i.name != meta.input_name]
    if required:
        raise BadModelError(
            "the graph needs inputs styler does not provide: "
            + ", ".join(i.name for i in required),
            source,
        )


def check_generator_signature(session: Any, meta: ModelMetadata, source: str | Path) -> None:
    """noise (N x latent, float) and, when conditional, labels (N, int64) in;
    one NCHW float image out; nothing else required."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = {NOISE_INPUT: ("tensor(float)", 2)}
    if meta.num_classes:
        expected[LABEL_INPUT] = ("tensor(int64)", 1)
    if set(inputs) != set(expected):
        raise BadModelError(
            f"a generation model must take {', '.join(expected)}; the graph takes "
            f"{', '.join(inputs) or 'nothing'}",
            source,
        )
    for name, (kind, rank) in expected.items():
        arg = inputs[name]
        if arg.type != kind or len(arg.shape) != rank:
            raise BadModelError(f"input {name!r} is {arg.type} of rank {len(arg.shape)}", source)
    noise_dim = inputs[NOISE_INPUT].shape[1]
    if isinstance(noise_dim, int) and noise_dim != meta.latent_dim:
        raise BadModelError(
            f"noise has {noise_dim} dimensions, the metadata says {meta.latent_dim}", source
        )
    out = outputs.get(meta.output_name)
    if out is None or len(out.shape) != 4 or out.type not in ("tensor(float)", "tensor(float16)"):
        raise BadModelError(f"the graph has no NCHW float output {meta.output_name!r}", source)


@dataclass
class Model:
    """An open styler model: its metadata and an onnxruntime session."""

    path: str
    meta: ModelMetadata
    session: Any
    device: str

    @classmethod
    def open(
        cls,
        model: str | Path | bytes,
        device: str = "auto",
        threads: int | None = None,
        name: str | Path | None = None,
    ) -> Model:
        """A session of the model at a path, or of its bytes (``name``: the
        file they were read from, for messages)."""
        ort = quiet_onnxruntime()
        if isinstance(model, bytes):
            source = str(name) if name is not None else "<in-memory model>"
            check_nodes(model, source)
        else:
            source = str(model)
            _check_model_path(Path(model))
            check_nodes(Path(model), source)
        taken, providers = choose_providers(device, ort.get_available_providers())
        options = session_options(threads)
        given: str | bytes = model if isinstance(model, bytes) else os.fspath(model)
        if isinstance(given, str) and not _utf8(given):
            given = _read_model(Path(given))  # onnxruntime takes UTF-8 paths only
        try:
            session = ort.InferenceSession(
                given,
                sess_options=options,
                providers=providers,
            )
        except Exception as exc:  # onnxruntime raises its own types for bad files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadModelError(f"not a loadable ONNX model ({reason[:300]})", source) from None
        if taken == "cuda" and CUDA_PROVIDER not in session.get_providers():
            raise DeviceError(
                "onnxruntime offers CUDA but could not start it (check the CUDA and cuDNN "
                "libraries); use --device cpu to run on the CPU",
                source,
            )
        meta = read_metadata(session, source)
        logger.debug("opened %s on %s (%s)", source, taken, ", ".join(session.get_providers()))
        return cls(source, meta, session, taken)

    @property
    def input_dtype(self) -> type:
        arg = next(i for i in self.session.get_inputs() if i.name == self.meta.input_name)
        return np.float16 if arg.type == "tensor(float16)" else np.float32

    @property
    def one_at_a_time(self) -> bool:
        """Whether the graph's input takes a batch of one only (a fixed batch
        dimension, which :func:`check_signature` allows only as 1)."""
        arg = next(i for i in self.session.get_inputs() if i.name == self.meta.input_name)
        return isinstance(arg.shape[0], int)

    def run(self, batch: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
        """Translate a batch (N, C, H, W) in the model's value range; H and W must be
        multiples of the model's size multiple. With ``stats`` (from
        :meth:`norm_stats` of a whole image), every instance norm uses those
        statistics instead of the batch items' own: the way to run tiles."""
        if len(batch) > 1 and self.one_at_a_time:
            return np.concatenate([self.run(batch[i : i + 1], stats) for i in range(len(batch))])
        feed = {self.meta.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)}
        if stats is not None:
            if not self.meta.norm_stats:
                raise BadModelError("this model takes no norm statistics", self.path)
            feed[STATS_INPUT] = np.ascontiguousarray(stats, dtype=np.float32).reshape(1, -1)
            feed[STATS_WEIGHT_INPUT] = np.array(0.0, np.float32)
        (out,) = self.session.run([self.meta.output_name], feed)
        n, _, h, w = batch.shape
        self._check_shape("output", out, (n, self.meta.out_channels, h, w), batch.shape)
        return np.asarray(out, dtype=np.float32)

    def _check_shape(
        self, what: str, got: Any, expected: tuple[int, ...], given: tuple[int, ...]
    ) -> None:
        """A graph that returns another shape than its metadata promises is a
        broken model (one error for the run, not one per image)."""
        shape = tuple(np.shape(got))
        if shape != expected:
            raise BadModelError(
                f"the graph returned an {what} of shape {_dims(shape)} for an input of "
                f"{_dims(given)}; its metadata promises {_dims(expected)}",
                self.path,
            )

    def generate(self, noise: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Images (N, C, H, W) in the model's value range from ``noise``
        (N x latent) and, for a class-conditional model, ``labels`` (N,)."""
        if self.meta.task != "generate":
            raise BadModelError("this model translates images; use styler apply", self.path)
        feed = {NOISE_INPUT: np.ascontiguousarray(noise, dtype=np.float32)}
        if self.meta.num_classes:
            if labels is None:
                raise BadModelError("this model is class-conditional: give labels", self.path)
            feed[LABEL_INPUT] = np.ascontiguousarray(labels, dtype=np.int64)
        (out,) = self.session.run([self.meta.output_name], feed)
        net = self.meta.network
        side = getattr(net, "size", 0)
        self._check_shape("image", out, (len(noise), net.out_channels, side, side), noise.shape)
        return np.asarray(out, dtype=np.float32)

    def norm_stats(self, image: np.ndarray) -> np.ndarray:
        """Instance-norm statistics of one image (1, C, H, W), packed as (1, S)."""
        if not self.meta.norm_stats:
            raise BadModelError("this model has no instance-norm statistics", self.path)
        feed = {self.meta.input_name: np.ascontiguousarray(image, dtype=self.input_dtype)}
        (stats,) = self.session.run([STATS_OUTPUT], feed)
        self._check_shape("statistics", stats, (1, self.meta.norm_stats), image.shape)
        return np.asarray(stats, dtype=np.float32)


@contextlib.contextmanager
def model_runs(path: str | Path) -> Iterator[None]:
    """Where no single input can be failed (eval, quantize, generate), a graph
    that fails when run is a model error: one line naming the model and
    onnxruntime's reason, never a traceback."""
    try:
        yield
    except StylerError:
        raise
    except Exception as exc:  # onnxruntime raises its own types
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise BadModelError(f"the graph failed when run ({text[:300]})", path) from None


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape)


def _utf8(text: str) -> bool:
    """Whether ``text`` (a path as Python decodes it) is valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: The largest file protobuf can parse as one model (2 GiB).
MAX_MODEL_BYTES = 2**31


def _check_model_path(path: Path) -> None:
    """Refuse what is not a model file before onnxruntime reads it."""
    found = path_kind(path, BadModelError)
    if found is None:
        raise BadModelError("no such model file", path)
    if found == "dir":
        raise BadModelError("is a directory, not an ONNX model file", path)
    if found == "other":  # a named pipe would block onnxruntime's read forever
        raise BadModelError("not a regular file (named pipe, device or socket)", path)
    if found == "file" and path.stat().st_size == 0:
        raise BadModelError("empty file, not an ONNX model", path)


def read_model_file(path: str | Path) -> bytes:
    """The bytes of the model file at ``path``, read once: for a command
    that both runs a model and rewrites its graph (one file, one model,
    whatever replaces the file meanwhile)."""
    path = Path(path)
    _check_model_path(path)
    return _read_model(path)


def _read_model(path: Path) -> bytes:
    """The bytes of the model at ``path``, for a name onnxruntime cannot take
    (not UTF-8, as Linux allows; styler's models hold their weights inside,
    never in external data files)."""
    try:
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise BadModelError("larger than 2 GiB: too large for an ONNX model", path)
        return path.read_bytes()
    except OSError as exc:
        raise BadModelError(f"cannot read: {exc.strerror or exc}", path) from None
    except MemoryError:
        raise BadModelError("not enough memory to read it", path) from None
