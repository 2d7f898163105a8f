"""The ``styler`` command: a thin layer over the Python API, one module per
command (``apply``, ``train``, ``convert`` for import/export, ``info`` for
info/models). Each command parses its arguments, calls the library and
prints; errors become one line and an exit code in :func:`main`. Heavy
modules (torch, onnxruntime, numpy) are imported inside the commands so that
``styler --help`` starts instantly."""

from __future__ import annotations

from styler.cli import apply, convert, evaluate, generate, info, train  # noqa: F401  (registers the commands)
from styler.cli.app import app, main

__all__ = ["app", "main"]
