"""One error hierarchy for the whole library.

The library raises these; the CLI turns them into a one-line message and an
exit code in one place (``styler.cli``). Messages name the file and the cause.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

#: Exit codes shared by every command.
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


class StylerError(Exception):
    """Base class of every error styler raises on purpose."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class BadImageError(StylerError):
    """An input image cannot be read, decoded or is unsafe to decode."""

    exit_code = EXIT_SOME_FAILED


class BadModelError(StylerError):
    """A file is not a usable styler ONNX model."""


class BadCheckpointError(StylerError):
    """A checkpoint cannot be read or does not hold what it should."""


class ExportError(StylerError):
    """Export failed, or its parity check refused the result."""


class DeviceError(StylerError):
    """A requested device or execution provider is not available."""


class UsageError(StylerError):
    """Arguments that do not make sense together."""


class InferenceError(StylerError):
    """The model gave no usable result for one input (NaN or infinite values)."""

    exit_code = EXIT_SOME_FAILED


class OutputError(StylerError):
    """An output cannot be written (read-only folder, disk full, ...)."""

    exit_code = EXIT_SOME_FAILED


class OutputExistsError(OutputError):
    """An output appeared while styler wrote it without ``--overwrite``: the
    file there (someone else's) is kept."""


def import_installed(module: str, package: str, install: str) -> ModuleType | None:
    """``module`` imported, or None when it is not installed. One that is
    installed but fails to import (a missing CUDA library, a numpy or
    protobuf of another version, a module that exits while it loads) is a
    :class:`StylerError` in one line naming ``package`` and ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            return None
        failure: BaseException = exc
    except (Exception, SystemExit) as exc:
        failure = exc
    raise StylerError(
        f"{package} is installed but does not import ({type(failure).__name__}: {failure}): "
        f"reinstall it, or {install} in a fresh environment"
    )
