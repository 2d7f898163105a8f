"""`styler import` and `styler export`: checkpoints in, ONNX models out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from styler.cli.app import (
    Description,
    Fp16,
    OutputFile,
    Overwrite,
    app,
    need_onnx,
    need_train_extra,
    print_line,
)
from styler.errors import BadCheckpointError, StylerError, UsageError
from styler.fsutil import check_new_output, path_kind


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
    _check_checkpoint_argument(checkpoint)
    need_train_extra()
    need_onnx()
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
        output or _beside(checkpoint, ".onnx"),
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
        typer.Argument(
            help="A styler generator checkpoint (.safetensors), or a training run folder.",
            metavar="CHECKPOINT|RUN_DIR",
        ),
    ],
    output: OutputFile = None,
    fp16: Fp16 = False,
    name: Annotated[str | None, typer.Option(help="Model name.")] = None,
    description: Description = None,
    license: Annotated[str | None, typer.Option(help="Licence of the weights.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Export a styler checkpoint to a self-describing ONNX model.

    Given a training run folder, exports its generators from the latest
    checkpoint into the folder, named by direction (A_to_B.onnx, B_to_A.onnx).
    """
    _check_checkpoint_argument(checkpoint)
    run_folder = path_kind(checkpoint) == "dir"
    given = {"--output": output, "--name": name, "--description": description, "--license": license}
    if run_folder and (misplaced := [flag for flag, value in given.items() if value is not None]):
        flags = ", ".join(misplaced[:-1]) + " and " if len(misplaced) > 1 else ""
        flags += misplaced[-1]
        raise UsageError(
            f"{flags} {'does' if len(misplaced) == 1 else 'do'} not apply to a run folder, "
            "whose models are written into it, named and described from its training "
            "config (export one of its checkpoints to choose them)"
        )
    need_train_extra()  # (the checks above are said before PyTorch loads, in seconds)
    need_onnx()
    from styler.export import export_checkpoint

    if run_folder:
        from styler.training.export import export_run

        for result in export_run(checkpoint, fp16=fp16, overwrite=overwrite):
            _report_export(result)
        return

    target = output or _beside(checkpoint, ".fp16.onnx" if fp16 else ".onnx")
    meta = {"name": name, "description": description, "license": license}
    result = export_checkpoint(checkpoint, target, fp16=fp16, overwrite=overwrite, **meta)
    _report_export(result)


def _check_checkpoint_argument(checkpoint: Path) -> None:
    """A checkpoint that is not there, or a model given for one, is said at
    once, before PyTorch is imported (which takes seconds)."""
    kind = path_kind(checkpoint, BadCheckpointError)
    if kind is None:
        raise BadCheckpointError("no such file", checkpoint)
    if kind == "file" and checkpoint.suffix.lower() == ".onnx":
        raise BadCheckpointError(
            "an ONNX model, not a checkpoint (styler info describes it, styler apply -m runs it)",
            checkpoint,
        )


def _beside(path: Path, suffix: str) -> Path:
    """The default output: ``path`` with ``suffix`` in place of its own. A
    path without a file name (``.``, ``/``, an empty argument) names no file."""
    if not path.name:
        raise UsageError(f"{str(path) or repr('')}: not a file name (a model file is expected)")
    return path.with_suffix(suffix)


def _report_export(result: object) -> None:
    from styler.export import ExportResult

    assert isinstance(result, ExportResult)
    print_line(str(result.path))
    typer.echo(
        f"styler: wrote {result.path}: {result.meta.architecture}, {result.meta.precision}, "
        f"parity error {result.parity_error:.2e} vs torch ({result.seconds:.1f} s)",
        err=True,
    )


@app.command("quantize")
def quantize(
    model: Annotated[Path, typer.Argument(help="An fp32 styler model (.onnx).", metavar="MODEL")],
    calibration: Annotated[
        Path,
        typer.Option(help="A folder of images like those the model will style (10-50 is plenty)."),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="[default: MODEL with .int8.onnx]")
    ] = None,
    min_psnr: Annotated[
        float, typer.Option(help="Refuse if int8 outputs differ from fp32 more than this (dB).")
    ] = 30.0,
    limit: Annotated[int, typer.Option(help="Calibration images used at most.", min=2)] = 32,
    overwrite: Overwrite = False,
) -> None:
    """Make an int8 copy of a model for CPUs (onnxruntime static quantisation).

    Calibrated on --calibration images; the int8 outputs are compared with
    the fp32 ones on those images and the file is refused below --min-psnr.
    """
    need_onnx()
    from styler.paths import collect_jobs
    from styler.quantize import load_calibration, quantize_int8

    if not math.isfinite(min_psnr):
        raise StylerError(f"--min-psnr must be a number, got {min_psnr}")
    try:
        kind = path_kind(calibration)
    except UsageError as exc:  # a symbolic link loop, a folder without permission
        raise UsageError(f"--calibration {calibration}: {exc.reason}") from None
    if kind != "dir":
        why = "no such folder" if kind is None else "not a folder (a folder of images is expected)"
        raise UsageError(f"--calibration {calibration}: {why}")
    jobs = list(collect_jobs([calibration]))
    files = [j.input for j in jobs if not j.error]
    if len(files) < 2:
        why = next((f" ({j.input}: {j.error})" for j in jobs if j.error), "")
        raise UsageError(
            f"--calibration {calibration}: int8 calibration needs at least 2 images, "
            f"found {len(files)}{why}"
        )
    target = output or _beside(model, ".int8.onnx")
    check_new_output([model, *files], target, overwrite)  # no input is ever replaced
    try:  # the first --limit images that decode
        images = load_calibration(files, limit=limit)
    except UsageError as exc:
        raise UsageError(f"--calibration {calibration}: {exc.reason}") from None
    result = quantize_int8(model, target, images, min_psnr=min_psnr, overwrite=overwrite)
    print_line(str(result.path))
    typer.echo(
        f"styler: wrote {result.path}: int8, {result.psnr:.1f} dB PSNR against fp32 on "
        f"{len(images)} images ({result.seconds:.1f} s)",
        err=True,
    )
