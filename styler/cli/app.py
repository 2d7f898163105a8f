"""The ``styler`` Typer app, the options several commands share, and
:func:`main`: the one place where styler's errors become a line on stderr and
an exit code (usage errors and bad models 2, failed inputs 1)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

try:  # the option parser's errors (typer vendors click since 0.20)
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - an older typer, on click
    from click.exceptions import ClickException  # type: ignore[no-redef]

from styler._version import __version__
from styler.errors import EXIT_SOME_FAILED, EXIT_USAGE, StylerError, import_installed
from styler.log import logger

app = typer.Typer(
    name="styler",
    help="Batch image style transfer: train models, apply them to whole folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"styler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
) -> None:
    """Batch image style transfer: train models, apply them to whole folders."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    _setup_logging(level)
    _drop_unreadable_thread_count()


#: What OpenMP accepts in OMP_NUM_THREADS: positive counts, one per nesting level.
_OMP_THREADS = re.compile(r"\s*[1-9][0-9]*(\s*,\s*[1-9][0-9]*)*\s*")


def _drop_unreadable_thread_count() -> None:
    """An OMP_NUM_THREADS that OpenMP cannot read makes libgomp print its own
    lines on stderr when torch loads: it is taken out of this process's
    environment (the default count is used) and said once, in styler's words."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value is not None and not _OMP_THREADS.fullmatch(value):
        del os.environ["OMP_NUM_THREADS"]
        logger.warning("ignoring OMP_NUM_THREADS=%r: not a positive whole number", value)


#: Characters no message shows as they are: ASCII controls and DEL (a newline
#: in a file name, an escape sequence in a model's metadata) ...
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]}
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
#: ... and, beyond ASCII, C1 controls (0x9b starts an escape sequence on
#: some terminals), line and paragraph separators, and format characters
#: (bidirectional overrides that reorder what follows, zero-width ones).
#: Lone surrogates (a file name that is not UTF-8, as Python decodes it) are
#: shown as ``\udcXX``, as Python's stderr would, and can be printed anywhere.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(match: re.Match[str]) -> str:
    c = match.group(0)
    if unicodedata.category(c) not in _HIDDEN_CATEGORIES:
        return c
    code = ord(c)
    # Python's own escapes: \U and eight digits beyond the BMP, so that a
    # character is never read as four digits and a plain one after them.
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: Longest line shown (a file name is at most 4096 bytes; a model's metadata
#: may hold anything): the rest is cut, and the cut said.
MAX_LINE = 8192


def one_line(text: str) -> str:
    """``text`` as exactly one line of plain text, whatever the file names
    and model metadata in it hold: controls and invisible format characters
    are shown as escapes, so nothing read from a file can forge a line or
    send the terminal an escape sequence; at most :data:`MAX_LINE` characters."""
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... ({len(text) - MAX_LINE} more characters)"
    return _NOT_ASCII.sub(_escape, text.translate(_CONTROL))


def print_line(line: str, stdout: TextIO | None = None) -> None:
    """One line on stdout, written as bytes: file names exactly as the file
    system has them (as ``find`` prints them), never an encoding error. On a
    terminal (not a pipe), control characters are escaped, as ``ls`` does."""
    stdout = stdout or sys.stdout
    if stdout.isatty():
        line = one_line(line)
    data = os.fsencode(line) + b"\n"
    buffer = getattr(stdout, "buffer", None)
    if buffer is None:  # a text-only stream (some test runners)
        typer.echo(data.decode("utf-8", "replace"), nl=False, file=stdout)
        return
    stdout.flush()
    buffer.write(data)
    buffer.flush()


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("styler: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


#: How to install what training and conversion need.
TRAIN_EXTRA = "pip install 'styler[train]'"


def need_train_extra() -> None:
    if not import_torch():
        raise StylerError(f"this command needs PyTorch: {TRAIN_EXTRA}")


def need_onnx() -> None:
    """The onnx package (of the train extra), checked before any work by
    the commands that write ONNX graphs: ``quantize`` (without PyTorch),
    ``export``, ``import`` and a ``train`` that exports at its end."""
    if import_installed("onnx", "the onnx package", TRAIN_EXTRA) is None:
        raise StylerError(f"this command needs the onnx package: {TRAIN_EXTRA}")


def import_torch() -> bool:
    """Import torch (whether it is installed) with the process's stderr
    caught meanwhile: what its native libraries print there as they load
    (libgomp's complaint about an OpenMP variable it cannot read) becomes
    styler's own warning lines."""
    if "torch" in sys.modules:
        return True
    with _native_stderr_to_log():
        return import_installed("torch", "PyTorch", TRAIN_EXTRA) is not None


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        catch = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    except (OSError, ValueError, AttributeError):  # no stderr, no TMPDIR: as it is
        yield
        return
    try:
        os.dup2(catch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
        catch.seek(0)
        caught = catch.read(1 << 16).decode("utf-8", "replace")
    finally:
        os.close(saved)
        catch.close()
    for line in caught.splitlines():
        if line.strip():
            logger.warning("%s", line.strip())


# Options that several commands share.
OutputFile = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="ONNX file to write [default: CHECKPOINT with .onnx]"),
]
Fp16 = Annotated[bool, typer.Option("--fp16", help="Half-precision weights (for GPUs).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")]
Description = Annotated[str | None, typer.Option(help="One-line description.")]


def _log_library_warnings() -> None:
    """Python warnings of the libraries styler uses (numpy, Pillow, torch,
    onnx) go to the debug log (``-vv``), not to stderr: only styler's own
    lines reach it. The command owns its process, so it may set this; the
    library never does."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        logger.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)

    warnings.showwarning = show


def _open_closed_streams() -> None:
    """A standard stream the caller closed (``styler ... >&-``) is opened on
    /dev/null: no file styler opens takes its number (where a library's
    write to stdout would land in it), and nothing written there fails."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115


def _stdout_lost(exc: OSError) -> bool:
    """Whether ``exc`` was raised writing to stdout (a full disk, /dev/full,
    a device error): the innermost frame was writing to stdout or its
    buffer. stdout is then pointed at /dev/null, so that Python's own flush
    at exit does not fail again with a traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    streams = (sys.stdout, getattr(sys.stdout, "buffer", None))
    if tb is None or not any(v in streams for v in tb.tb_frame.f_locals.values()):
        return False
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return True


#: Exit code of a command stopped by SIGTERM (128 + 15, as the shell reports it).
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM (or SIGHUP): the command unwinds,
    so that a write under way removes its temporary file and running encodes
    finish, and exits with 128 + the signal's number (143 for SIGTERM)."""


class _Signals:
    """While a command runs, SIGTERM (``kill``, a job scheduler's time limit)
    and SIGHUP (the terminal closed) stop it as Ctrl-C does, leaving no
    temporary file behind; a signal inherited as ignored stays ignored.
    Ctrl-C raises KeyboardInterrupt as Python's own handler does.
    ``styler train`` installs its own handler while it trains (save, then
    stop). The signal is remembered: a library that turns the exception into
    its own (Ray's ``SystemExit(1)``, an exporter's error) still ends as a
    stop, with its exit code."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.received = signum
        if signum == signal.SIGINT:  # Ctrl-C: what Python does, remembered
            raise KeyboardInterrupt
        raise Terminated(128 + signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL}
        defaults[signal.SIGINT] = signal.default_int_handler
        wanted = [s for s, default in defaults.items() if signal.getsignal(s) == default]
        for s in wanted:
            signal.signal(s, self)
        try:
            yield self
        finally:
            for s in wanted:
                signal.signal(s, defaults[s])


def _stopped(code: int) -> int:
    name = signal.Signals(code - 128).name
    typer.echo(f"styler: stopped ({name}); nothing half-written is left", err=True)
    return code


def with_optional_values(args: list[str]) -> list[str]:
    """``args`` with ``--ray`` alone made ``--ray=local`` (typer's parser has
    no option whose value may be left out): what follows ``--ray`` is its
    value only when it is a Ray address, so ``styler apply --ray photos/``
    styles photos/ on a Ray started here and ``--ray auto photos/`` joins."""
    if "--ray" not in args:
        return args
    from styler.distributed import ADDRESS

    out: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return [*out, arg, *rest]
        if arg == "--ray":
            given = rest.pop(0) if rest and ADDRESS.fullmatch(rest[0]) else "local"
            arg = f"--ray={given}"
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; styler's errors become one line on stderr and
    their exit code (usage errors and bad models 2, failed inputs 1)."""
    _open_closed_streams()
    _log_library_warnings()
    signals = _Signals()
    try:
        with signals.installed():
            args = with_optional_values(sys.argv[1:] if argv is None else argv)
            code = app(args=args, prog_name="styler", standalone_mode=False)
    except KeyboardInterrupt:  # a second Ctrl-C that landed while the first was handled
        return _ctrl_c()
    except Terminated as exc:
        return _stopped(int(exc.code or EXIT_TERMINATED))
    except (StylerError, SystemExit) as exc:
        if signals.received is not None:  # a stop that a library reported as its own
            return _stopped(128 + signals.received)
        if isinstance(exc, SystemExit):
            return _exit_code(exc)
        typer.echo(one_line(f"styler: error: {exc}"), err=True)
        return exc.exit_code
    except ClickException as exc:  # a usage error found by the option parser
        if type(exc).__name__ == "NoArgsIsHelpError":  # `styler` alone: the help
            typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(one_line(f"styler: error: {_usage_message(exc)}"), err=True)
        return exc.exit_code
    except typer.Abort:  # end of input at a prompt
        typer.echo("styler: aborted", err=True)
        return EXIT_SOME_FAILED
    except OSError as exc:
        if not _stdout_lost(exc):
            raise
        typer.echo(one_line(f"styler: error: stdout: cannot write: {exc.strerror}"), err=True)
        return EXIT_SOME_FAILED
    if code == EXIT_INTERRUPTED or signals.received == signal.SIGINT:
        return _ctrl_c()
    return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as n


def _ctrl_c() -> int:
    """A command stopped by Ctrl-C: exit 130, and any Ctrl-C after it (one
    keypress is two signals under some wrappers that forward it to a whole
    process group) is ignored while the process exits, never a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return EXIT_INTERRUPTED


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    typer.echo(str(exc.code), err=True)
    return EXIT_USAGE


def _usage_message(exc: ClickException) -> str:
    """The parser's message and where to read more, on one line (click's own
    display takes three: usage, a hint, the error)."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{exc.format_message()}{where}"
