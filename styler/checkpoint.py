"""Generator weight files, and the one reader of safetensors files.

A generator weight file is one ``.safetensors`` file whose header metadata
holds the :class:`~styler.metadata.ModelMetadata` JSON (architecture config,
name, direction, training size, ...), so the file alone is enough to rebuild
the network and export it (``styler export FILE``). It is the format for
weights made outside ``styler train``: the Python API and ``bench/`` write it
with :func:`save_generator`. ``styler train`` writes training checkpoints
instead (every network, the optimisers, the run's config:
:mod:`styler.training.state`), which ``styler export RUN_DIR`` reads.

Both are read by :func:`read_safetensors`: nothing in them is pickled,
nothing in them can run, and what their header declares (names, types,
shapes) is checked before any tensor is read (:func:`read_header`), so that
a forged header cannot make the reader allocate what it declares.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styler import strictjson
from styler.errors import BadCheckpointError, BadModelError
from styler.fsutil import atomic_write_bytes, path_kind
from styler.metadata import METADATA_KEY, ModelMetadata

#: The header key of a training checkpoint (:mod:`styler.training.state`).
TRAIN_HEADER_KEY = "styler_train"
#: Largest safetensors header read (the JSON list of tensors and the
#: metadata): a checkpoint of four networks of 256 blocks has a few MB.
MAX_HEADER_BYTES = 16 * 2**20
#: Bytes per element of the safetensors types, and whether they are floats.
DTYPES: dict[str, tuple[int, bool]] = {
    "F64": (8, True),
    "F32": (4, True),
    "F16": (2, True),
    "BF16": (2, True),
    "I64": (8, False),
    "I32": (4, False),
    "I16": (2, False),
    "I8": (1, False),
    "U8": (1, False),
    "BOOL": (1, False),
}


@dataclass(frozen=True)
class Declared:
    """A tensor as a safetensors header declares it."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def floating(self) -> bool:
        return DTYPES[self.dtype][1]

    @property
    def nbytes(self) -> int:
        return DTYPES[self.dtype][0] * math.prod(self.shape)


#: Checks the metadata and the declared tensors before any tensor is read.
HeaderCheck = Callable[[dict[str, str], dict[str, Declared]], None]


def save_generator(
    path: str | Path, state_dict: dict[str, torch.Tensor], meta: ModelMetadata
) -> Path:
    """Save generator weights with their metadata, atomically."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    data = save(tensors, metadata={METADATA_KEY: meta.to_json()})
    atomic_write_bytes(path, data)
    return path


def read_header(
    path: str | Path, what: str = "a safetensors checkpoint"
) -> tuple[dict[str, str], dict[str, Declared]]:
    """The metadata and the tensors (types and shapes) a safetensors file
    declares, read from its header alone (at most :data:`MAX_HEADER_BYTES`):
    nothing of its tensors is read or mapped. Each tensor's bytes must lie
    in the file (so a file cannot declare more than it holds)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            length = int.from_bytes(first, "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(
                    _what_it_is(first) or f"a header of {length} bytes in a file of {size}"
                )
            header = strictjson.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not text")
        declared = {
            name: _declared(name, entry, size - 8 - length) for name, entry in header.items()
        }
    except OSError as exc:
        raise BadCheckpointError(f"cannot read: {exc.strerror or exc}", path) from None
    except ValueError as exc:
        raise BadCheckpointError(f"not {what} ({exc})", path) from None
    return meta, declared


def _what_it_is(first: bytes) -> str | None:
    """What a file that is not a safetensors file looks like, from its first
    bytes, when that is plain (a config.json given for a checkpoint)."""
    if first[:1] in (b"{", b"["):
        return "it holds JSON"
    if first[:4] == b"PK\x03\x04":
        return "a zip file, as PyTorch saves a .pth"
    if first[:1] == b"\x80":
        return "a pickle, as old PyTorch versions save a .pth"
    return None


def _declared(name: str, entry: Any, room: int) -> Declared:
    """One tensor of a safetensors header, its bytes within the ``room`` the file has."""
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
        raise ValueError(f"tensor {name!r} of no known type")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r} of shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise ValueError(f"tensor {name!r} without its offsets")
    begin, end = offsets
    declared = Declared(entry["dtype"], tuple(shape))
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= room):
        raise ValueError(f"tensor {name!r} beyond the end of the file")
    if end - begin != declared.nbytes:
        raise ValueError(f"tensor {name!r} of {end - begin} bytes for its shape")
    return declared


def read_safetensors(
    path: str | Path, what: str = "a safetensors checkpoint", check: HeaderCheck | None = None
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and the tensors of a safetensors file (``what``
    names it in the error when it cannot be read). ``check`` is called with
    the metadata and the declared tensors (:func:`read_header`) before any
    tensor is read: it raises to refuse the file."""
    from safetensors import SafetensorError, safe_open

    meta, declared = read_header(path, what)
    if check is not None:
        check(meta, declared)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadCheckpointError(f"not {what} ({exc})", path) from None
    return header, tensors


def load_generator(path: str | Path) -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """Read a file written by :func:`save_generator`."""
    path = Path(path)
    found = path_kind(path, BadCheckpointError)
    if found != "file":
        raise BadCheckpointError("no such file" if found is None else "not a file", path)
    found: list[ModelMetadata] = []

    def check(header: dict[str, str], declared: dict[str, Declared]) -> None:
        found.append(_generator_meta(header, path))
        _check_generator(found[0], declared, path)

    _, tensors = read_safetensors(path, check=check)
    return found[0], tensors


def _generator_meta(header: dict[str, str], path: Path) -> ModelMetadata:
    if METADATA_KEY not in header:
        if TRAIN_HEADER_KEY in header:
            run = path.parent.parent if path.parent.name == "checkpoints" else "RUN_DIR"
            raise BadCheckpointError(
                f"a training checkpoint: export its run's models with `styler export {run}`", path
            )
        raise BadCheckpointError(
            "safetensors file without styler metadata (for a pytorch-CycleGAN-and-pix2pix "
            ".pth file use `styler import`)",
            path,
        )
    try:
        return ModelMetadata.from_json(header[METADATA_KEY])
    except BadModelError as exc:
        raise BadCheckpointError(f"bad styler metadata: {exc.reason}", path) from None


def _check_generator(meta: ModelMetadata, declared: dict[str, Declared], path: Path) -> None:
    """The declared tensors are the weights of the generator ``meta``
    describes (built on PyTorch's meta device: nothing is allocated)."""
    from styler import zoo

    with torch.device("meta"):
        own = zoo.build(meta.network, init=None).state_dict()
    for key in sorted(set(own) | set(declared)):
        want, got = own.get(key), declared.get(key)
        if want is None or got is None or tuple(want.shape) != got.shape:
            wanted = "none" if want is None else list(want.shape)
            shape = "none" if got is None else list(got.shape)
            raise BadCheckpointError(
                f"weights do not fit a {meta.architecture} generator (at {key}: "
                f"{shape}, expected {wanted})",
                path,
            )
        if got.floating != want.is_floating_point():
            raise BadCheckpointError(f"weights of the wrong type (at {key}: {got.dtype})", path)


def build_generator(
    meta: ModelMetadata, state_dict: dict[str, torch.Tensor], path: str | Path = ""
) -> torch.nn.Module:
    """Rebuild the network a checkpoint describes and load its weights strictly."""
    from styler import zoo

    net = zoo.build(meta.network, init=None)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise BadCheckpointError(
            f"weights do not fit a {meta.architecture} generator: "
            + (" ".join(first[1:3]) or first[0]),
            path,
        ) from None
    return net.eval()
