"""`styler apply`: style files, folders or paths from stdin."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from styler.cli.app import Terminated, app, one_line, print_line
from styler.errors import StylerError
from styler.fsutil import check_output_folder, folders_to_make, path_kind, remove_made
from styler.log import logger

if TYPE_CHECKING:
    from styler.apply import ApplyOptions, Stylizer
    from styler.distributed import RayStylizer


@app.command("apply")
def apply(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files or folders; '-' reads paths from stdin.", metavar="INPUT..."
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="ONNX model file or shipped model name [default: the default model].",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("styled"),
    fmt: Annotated[str, typer.Option("--format", help="keep, png, jpg or webp.")] = "keep",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.")] = 95,
    suffix: Annotated[str, typer.Option(help="Added to each output's stem.")] = "",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Walk subfolders.")
    ] = True,
    nul: Annotated[
        bool, typer.Option("-0", "--null", help="Paths on stdin are NUL-separated.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be done; write nothing.")
    ] = False,
    max_size: Annotated[
        int | None, typer.Option(help="Downscale images whose longest side exceeds this.")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Tile edge in pixels [default: automatic].")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for inference.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images of one size run together.")] = 4,
    workers: Annotated[int, typer.Option(help="Decode and encode threads.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per input on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")] = False,
    keep_colours: Annotated[
        bool | None,
        typer.Option(
            "--keep-colours/--model-colours",
            help="Keep each photo's own colours (the style's brightness and texture "
            "with the input's chroma: no colour cast), or the model's "
            "[default: as the model's metadata says].",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Style on Ray actors (pip install 'styler[ray]'): alone, a Ray started "
            "on this machine; 'auto' or HOST:PORT joins a running cluster.",
        ),
    ] = None,
) -> None:
    """Style every image in INPUT (files, folders, or '-' for paths on stdin).

    Outputs go under --output, mirroring each folder's tree, at the input's
    exact size; existing outputs are skipped. stdout gets one output path per
    styled image (or JSON with --json); progress and errors go to stderr.
    Exit code 0: all styled or skipped; 1: some inputs failed; 2: usage or model error.
    """
    from styler.apply import ApplyOptions, Stylizer

    if inputs.count("-") > 1:
        raise StylerError("'-' (paths from stdin) can be given only once")
    options = ApplyOptions(
        output_dir=output,
        format=fmt,
        quality=quality,
        suffix=suffix,
        overwrite=overwrite,
        max_size=max_size,
        dry_run=dry_run,
        batch_size=batch_size,
        workers=workers,
        keep_colours=keep_colours,
    )
    stdout = sys.stdout  # results only: what Ray prints on the driver goes to the log
    with contextlib.ExitStack() as session:
        stylizer: Stylizer | RayStylizer
        if ray is None:
            stylizer = Stylizer(model, device=device, threads=threads, tile=tile)
            where = stylizer.model.device
        else:  # the same run, styled on Ray actors
            from styler.distributed import RayStylizer, connect

            session.enter_context(contextlib.redirect_stdout(_RayPrints()))
            session.enter_context(connect(ray))
            stylizer = RayStylizer(model, device=device, threads=threads, tile=tile)
            where = stylizer.plan.describe()
        _run(stylizer, where, inputs, options, recursive, nul, quiet, as_json, stdout)


def _run(
    stylizer: Stylizer | RayStylizer,
    where: str,
    inputs: list[str],
    options: ApplyOptions,
    recursive: bool,
    nul: bool,
    quiet: bool,
    as_json: bool,
    stdout: TextIO,
) -> None:
    """The run itself, the same with a local Stylizer and a RayStylizer:
    list, style, print each result, sum up, exit code."""
    import time

    from styler.errors import EXIT_SOME_FAILED
    from styler.paths import Job, collect_jobs, read_path_list

    output, dry_run = options.output_dir, options.dry_run
    # The folders making the output folder makes are no inputs (`-o` in or at
    # a mistyped input folder must not make it, empty, and "style" it), and
    # go again when nothing is written.
    made = folders_to_make(output)
    counts = {"ok": 0, "skipped": 0, "failed": 0, "planned": 0}
    interrupted = False
    try:
        if not dry_run:
            check_output_folder(output)
        elif path_kind(output) not in (None, "dir"):  # a dry run creates nothing
            raise StylerError("the output folder is a file", output)
        if not quiet:
            meta = stylizer.meta
            typer.echo(
                one_line(f"styler: {meta.name} ({meta.architecture}) on {where}"),
                err=True,
            )
        stdin_error: list[StylerError] = []  # raised once the paths before it are done

        def expand() -> Iterator[str]:
            for item in inputs:
                if item == "-":
                    try:
                        yield from read_path_list(sys.stdin.buffer, nul=nul)
                    except StylerError as exc:
                        stdin_error.append(exc)
                        return
                else:
                    yield item

        jobs: Iterable[Job] = collect_jobs(
            expand(), recursive=recursive, output_dir=output, made=made
        )
        total = None
        if "-" not in inputs:  # paths from stdin stream; anything else is listed first
            jobs = list(jobs)
            total = len(jobs)
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            advance = stack.enter_context(
                _progress(enabled=not quiet and sys.stderr.isatty(), total=total)
            )
            results = stylizer.apply_files(jobs, options)
            stack.callback(results.close)  # waits for encodes in flight

            def report(result: Any) -> None:
                counts[result.status] += 1
                _print_result(result, as_json, stdout)
                advance(result)

            try:
                for result in results:
                    report(result)
            except (KeyboardInterrupt, Terminated) as stop:
                # The encodes under way finish: what they wrote is reported too.
                with contextlib.suppress(KeyboardInterrupt, SystemExit, StopIteration):
                    report(results.throw(stop))
                    for result in results:
                        report(result)
                if not isinstance(stop, KeyboardInterrupt):
                    raise
                interrupted = True
    finally:  # (also when a signal stops the run before any output)
        if not counts["ok"] and not dry_run:  # nothing written: the folders made go again
            remove_made(made)
    if not quiet:
        seconds = time.perf_counter() - started
        rate = counts["ok"] / seconds if seconds > 0 else 0.0
        parts = [f"{counts['ok']} styled"]
        if counts["planned"]:
            parts.append(f"{counts['planned']} planned")
        parts += [f"{counts['skipped']} skipped (existing)", f"{counts['failed']} failed"]
        typer.echo(f"styler: {', '.join(parts)} in {seconds:.1f} s ({rate:.2f} images/s)", err=True)
    if interrupted:
        typer.echo(
            "styler: interrupted; finished outputs are complete, run again to do the rest",
            err=True,
        )
        raise typer.Exit(130)
    if stdin_error:
        raise stdin_error[0]
    if counts["failed"]:
        raise typer.Exit(EXIT_SOME_FAILED)


def _print_result(result: Any, as_json: bool, stdout: TextIO) -> None:
    if as_json:
        print_line(_json_line(result.to_dict()), stdout)
    elif result.status == "ok":
        print_line(result.output, stdout)
    elif result.status == "planned":
        print_line(f"{result.input} -> {result.output}", stdout)
    if result.status == "failed":
        typer.echo(one_line(f"styler: {result.input}: {result.error}"), err=True)
    for note in result.warnings:
        typer.echo(one_line(f"styler: {result.input}: warning: {note}"), err=True)
    stdout.flush()


def _json_line(record: dict[str, Any]) -> str:
    """One JSON object as valid UTF-8 text: a file name that is not UTF-8
    (decoded with surrogate escapes, as Python does) keeps its bytes as
    \\udcXX escapes, which ``os.fsencode(json.loads(...))`` turns back."""
    text = json.dumps(record, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _RayPrints(io.StringIO):
    """Where Ray's prints on the driver go (a worker's death, which Ray
    retries; it prints them on stdout): the log (``-v``), a line each, so that
    stdout holds the results only."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                logger.info("ray: %s", re.sub(r"\x1b\[[0-9;]*m", "", line))
        return len(text)


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None = None) -> Iterator[Callable[[object], None]]:
    """A rich progress line on stderr when it is a terminal; else nothing."""
    if not enabled:
        yield lambda _result: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("styling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]:.2f} images/s, {task.fields[failed]} failed"),
        TextColumn("{task.fields[last]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("styling", total=total, last="", rate=0.0, failed=0)
        failed = 0

        def advance(result: object) -> None:
            nonlocal failed
            failed += getattr(result, "status", "") == "failed"
            name = Path(getattr(result, "input", "")).name  # shown, never read as markup
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = (progress.tasks[0].completed + 1) / elapsed if elapsed > 0 else 0.0
            progress.update(task, advance=1, last=escape(one_line(name)), rate=rate, failed=failed)

        yield advance
