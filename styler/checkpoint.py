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
nothing in them can run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from styler.errors import BadCheckpointError, BadModelError
from styler.fsutil import atomic_write_bytes, path_kind
from styler.metadata import METADATA_KEY, ModelMetadata


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


def read_safetensors(
    path: str | Path, what: str = "a safetensors checkpoint"
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and the tensors of a safetensors file (``what``
    names it in the error when it cannot be read)."""
    from safetensors import SafetensorError, safe_open

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
    header, tensors = read_safetensors(path)
    if METADATA_KEY not in header:
        raise BadCheckpointError(
            "safetensors file without styler metadata (for a pytorch-CycleGAN-and-pix2pix "
            ".pth file use `styler import`)",
            path,
        )
    try:
        meta = ModelMetadata.from_json(header[METADATA_KEY])
    except BadModelError as exc:
        raise BadCheckpointError(f"bad styler metadata: {exc.reason}", path) from None
    return meta, tensors


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
