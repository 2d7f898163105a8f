"""Shipped models: what is in weights/, which one is the default, and how a
``-m`` argument (a path or a shipped model's name) becomes a file."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from styler.errors import BadModelError
from styler.fsutil import path_kind

#: The model `styler apply` uses without -m (a file in weights/ by this stem).
DEFAULT_MODEL = "photo2painting"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    #: The model card (Markdown) beside the model, if any.
    card: Path | None

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_MODEL


def weights_dir() -> Path:
    """The folder shipped models live in (``styler/weights`` once installed;
    the repository's ``weights/`` is mapped onto it)."""
    return Path(str(resources.files("styler.weights")))


def shipped_models(folder: Path | None = None) -> list[ShippedModel]:
    """The models in ``folder`` (default: the installed weights/)."""
    folder = folder or weights_dir()
    models = []
    for path in sorted(folder.glob("*.onnx")):
        card = path.with_suffix(".md")
        models.append(ShippedModel(path.stem, path, card if card.is_file() else None))
    return models


def resolve_model(model: str | Path | None, folder: Path | None = None) -> Path:
    """A model file from ``-m``: an existing path, or a shipped model's name;
    ``None`` is the default model (looked up in ``folder``, default weights/)."""
    shipped = {m.name: m for m in shipped_models(folder)}
    if model is None:
        if DEFAULT_MODEL in shipped:
            return shipped[DEFAULT_MODEL].path
        raise BadModelError(
            "no default model ships with this install of styler yet; pass one with -m MODEL.onnx"
        )
    path = Path(model)
    named = path.suffix.lower() == ".onnx" or len(path.parts) > 1
    kind = None if named else path_kind(path, BadModelError)
    if str(model) in shipped and kind in (None, "dir"):  # a folder is never a model
        return shipped[str(model)].path
    if named or kind is not None:
        return path
    names = ", ".join(sorted(shipped)) or "none"
    raise BadModelError(f"no such model file or shipped model (shipped: {names})", model)
