"""The ``styler`` command: a thin layer over the Python API.

Each command parses its arguments, calls the library, and prints. Exceptions
from the library become a one-line message and an exit code here, in
:func:`main`, and nowhere else. Heavy modules (torch, onnxruntime, numpy) are
imported inside the commands so that ``styler --help`` starts instantly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from styler._version import __version__
from styler.errors import EXIT_USAGE, StylerError
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


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("styler: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _need_train_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise StylerError("this command needs PyTorch: pip install 'styler[train]'") from None


# Options that several commands share.
OutputFile = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="ONNX file to write [default: CHECKPOINT with .onnx]"),
]
Fp16 = Annotated[bool, typer.Option("--fp16", help="Half-precision weights (for GPUs).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")]
Description = Annotated[str | None, typer.Option(help="One-line description.")]


@app.command("import")
def import_(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A .pth generator saved by pytorch-CycleGAN-and-pix2pix.", metavar="CHECKPOINT"
        ),
    ],
    output: OutputFile = None,
    arch: Annotated[
        str | None,
        typer.Option(help="Override the detected architecture (resnet_9blocks, unet_256, ...)."),
    ] = None,
    ngf: Annotated[int | None, typer.Option(help="Override the detected width.")] = None,
    norm: Annotated[
        str | None, typer.Option(help="Override the detected norm: instance, batch, none.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name [default: file stem].")] = None,
    description: Description = None,
    license: Annotated[str, typer.Option(help="Licence of the weights.")] = "unknown",
    train_size: Annotated[
        int | None, typer.Option(help="Crop size the model was trained at.")
    ] = None,
    direction: Annotated[
        str | None, typer.Option(help="AtoB or BtoA [default: from the file name].")
    ] = None,
    fp16: Fp16 = False,
    overwrite: Overwrite = False,
) -> None:
    """Import a pytorch-CycleGAN-and-pix2pix generator checkpoint as a styler ONNX model."""
    _need_train_extra()
    from styler.importer import import_to_onnx
    from styler.netconfig import generator_preset

    overrides: dict[str, object] = {"ngf": ngf, "norm": norm}
    if arch is not None:
        try:
            preset = generator_preset(arch)
        except ValueError as exc:
            raise StylerError(str(exc)) from None
        overrides.update(
            {"n_blocks": preset.n_blocks}
            if preset.kind == "resnet"
            else {"num_downs": preset.num_downs}
        )
    result = import_to_onnx(
        checkpoint,
        output or checkpoint.with_suffix(".onnx"),
        name=name,
        description=description,
        license=license,
        train_size=train_size,
        direction=direction,
        fp16=fp16,
        overwrite=overwrite,
        **overrides,
    )
    _report_export(result)


@app.command("export")
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="A styler generator checkpoint (.safetensors).", metavar="CHECKPOINT"),
    ],
    output: OutputFile = None,
    fp16: Fp16 = False,
    name: Annotated[str | None, typer.Option(help="Model name.")] = None,
    description: Description = None,
    license: Annotated[str | None, typer.Option(help="Licence of the weights.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Export a styler checkpoint to a self-describing ONNX model."""
    _need_train_extra()
    from styler.export import export_checkpoint

    result = export_checkpoint(
        checkpoint,
        output or checkpoint.with_suffix(".fp16.onnx" if fp16 else ".onnx"),
        fp16=fp16,
        overwrite=overwrite,
        name=name,
        description=description,
        license=license,
    )
    _report_export(result)


def _report_export(result: object) -> None:
    from styler.export import ExportResult

    assert isinstance(result, ExportResult)
    typer.echo(str(result.path))
    typer.echo(
        f"styler: wrote {result.path}: {result.meta.architecture}, {result.meta.precision}, "
        f"parity error {result.parity_error:.2e} vs torch ({result.seconds:.1f} s)",
        err=True,
    )


@app.command("info")
def info(
    model: Annotated[Path, typer.Argument(help="A styler ONNX model.", metavar="MODEL")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
) -> None:
    """Show what a styler model is: architecture, channels, range, provenance."""
    from styler.runtime import Model

    opened = Model.open(model, device="cpu")
    meta = opened.meta
    data = meta.to_dict()
    data["file"] = str(model)
    data["file_size"] = model.stat().st_size
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    net = meta.network
    rows = [
        ("name", meta.name),
        ("description", meta.description),
        (
            "architecture",
            f"{meta.architecture} ({net.kind}, ngf {net.ngf}, norm {net.norm}, "
            f"upsample {net.upsample})",
        ),
        ("channels", f"{meta.in_channels} in, {meta.out_channels} out"),
        ("value range", f"[{meta.value_range[0]:g}, {meta.value_range[1]:g}]"),
        ("size multiple", str(meta.size_multiple)),
        ("train size", str(meta.train_size) if meta.train_size else "unknown"),
        (
            "direction",
            meta.direction + (f" ({meta.domains[0]} -> {meta.domains[1]})" if meta.domains else ""),
        ),
        ("precision", meta.precision),
        (
            "parity error",
            f"{meta.parity_error:.2e}" if meta.parity_error is not None else "not measured",
        ),
        ("licence", meta.license),
        ("source", meta.source),
        ("created", f"{meta.created} with styler {meta.styler_version}"),
        ("file", f"{model} ({data['file_size'] / 1e6:.1f} MB)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


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
) -> None:
    """Style every image in INPUT (files, folders, or '-' for paths on stdin).

    Outputs go under --output, mirroring each folder's tree, at the input's
    exact size; existing outputs are skipped. stdout gets one output path per
    styled image (or JSON with --json); progress and errors go to stderr.
    Exit code 0: all styled or skipped; 1: some inputs failed; 2: usage or model error.
    """
    import time

    from styler.apply import ApplyOptions, Stylizer
    from styler.errors import EXIT_SOME_FAILED
    from styler.paths import Job, collect_jobs, read_path_list

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
    )
    stylizer = Stylizer(model, device=device, threads=threads, tile=tile)
    if not quiet:
        meta = stylizer.meta
        typer.echo(
            f"styler: {meta.name} ({meta.architecture}) on {stylizer.model.device}", err=True
        )

    def expand() -> Iterator[str]:
        for item in inputs:
            if item == "-":
                yield from read_path_list(sys.stdin.buffer, nul=nul)
            else:
                yield item

    jobs: Iterable[Job] = collect_jobs(expand(), recursive=recursive, output_dir=output)
    total = None
    if "-" not in inputs:  # paths from stdin stream; anything else is listed first
        jobs = list(jobs)
        total = len(jobs)
    counts = {"ok": 0, "skipped": 0, "failed": 0, "planned": 0}
    started = time.perf_counter()
    interrupted = False
    with contextlib.ExitStack() as stack:
        advance = stack.enter_context(
            _progress(enabled=not quiet and sys.stderr.isatty(), total=total)
        )
        results = stylizer.apply_files(jobs, options)
        stack.callback(results.close)  # waits for encodes in flight
        try:
            for result in results:
                counts[result.status] += 1
                _print_result(result, as_json)
                advance(result)
        except KeyboardInterrupt:
            interrupted = True
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
    if counts["failed"]:
        raise typer.Exit(EXIT_SOME_FAILED)


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    elif result.status == "ok":
        typer.echo(result.output)
    elif result.status == "planned":
        typer.echo(f"{result.input} -> {result.output}")
    if result.status == "failed":
        typer.echo(f"styler: {result.input}: {result.error}", err=True)
    for note in result.warnings:
        typer.echo(f"styler: {result.input}: warning: {note}", err=True)
    sys.stdout.flush()


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None = None) -> Iterator[Callable[[object], None]]:
    """A rich progress line on stderr when it is a terminal; else nothing."""
    if not enabled:
        yield lambda _result: None
        return
    from rich.console import Console
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
        TextColumn("{task.fields[last]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("styling", total=total, last="")

        def advance(result: object) -> None:
            name = Path(getattr(result, "input", "")).name
            progress.update(task, advance=1, last=name)

        yield advance


@app.command("models")
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> None:
    """List the models that ship with styler, with their cards."""
    from styler.models import shipped_models

    found = shipped_models()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "path": str(m.path),
                        "default": m.is_default,
                        "card": m.card.read_text() if m.card else None,
                    }
                    for m in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        typer.echo("styler: no models ship with this install yet", err=True)
        return
    for m in found:
        typer.echo(f"{m.name}{' (default)' if m.is_default else ''}  {m.path}")
        if m.card:
            typer.echo("")
            typer.echo(m.card.read_text().rstrip())
            typer.echo("")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; styler's errors become one line on stderr and
    their exit code (usage errors and bad models 2, failed inputs 1)."""
    try:
        app(args=argv, prog_name="styler")
    except StylerError as exc:
        typer.echo(f"styler: error: {exc}", err=True)
        return exc.exit_code
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        typer.echo(str(exc.code), err=True)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
