"""`styler generate`: new images from a generation model's noise."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from styler.cli.app import app, one_line, print_line
from styler.fsutil import (
    NOT_A_FILE,
    check_new_output,
    check_output_folder,
    path_kind,
    remove_stale_parts,
    resolved,
)
from styler.log import logger


@app.command("generate")
def generate(
    model: Annotated[
        Path,
        typer.Argument(help="A generation model (styler train on one folder).", metavar="MODEL"),
    ],
    count: Annotated[int, typer.Option("-n", "--count", help="How many images.")] = 16,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "generated"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the noise: same seed, same images.")] = 0,
    label: Annotated[
        str | None,
        typer.Option("--class", help="Class name or index [default: every class in turn]."),
    ] = None,
    grid_path: Annotated[
        Path | None, typer.Option("--grid", help="Also write all images in one grid PNG.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Generate COUNT images into --output (PNG, written atomically; existing
    files are kept unless --overwrite). stdout gets one path per written image
    (and the grid's path last). A class-conditional model makes every class in
    turn, or only --class."""
    from styler.errors import OutputError, OutputExistsError, UsageError
    from styler.generate import MAX_GRID, ImageGenerator, file_name, grid, save_png, to_pil

    if grid_path is not None and count > MAX_GRID:
        raise UsageError(f"--grid holds at most {MAX_GRID} images; -n is {count}")
    gen = ImageGenerator(model, device=device)
    if grid_path is not None:
        check_new_output(model, grid_path, overwrite=True)  # never the model itself
        _check_grid(grid_path, output)
    check_output_folder(output)
    for stale in remove_stale_parts(output):
        logger.info("removed %s, left by an interrupted run", stale)
    items = []  # kept only for the grid: memory stays bounded without one
    skipped = 0
    for item in gen.iter_sample(count, seed, label):
        if grid_path is not None:
            items.append(item)
        path = output / file_name(item, gen.classes)
        if path_kind(path, OutputError) not in (None, "file"):
            raise OutputError(NOT_A_FILE, path)
        if path.exists() and (not overwrite or path.samefile(model)):
            skipped += 1
            continue
        try:
            save_png(to_pil(item.image), path, replace=overwrite)
        except OutputExistsError:  # made by someone else meanwhile: kept
            skipped += 1
            continue
        print_line(str(path))
    if grid_path is not None:
        if os.path.lexists(grid_path) and not overwrite:  # a dangling link too
            typer.echo(f"styler: {grid_path} exists; pass --overwrite to replace it", err=True)
        else:
            columns = gen.meta.num_classes if gen.meta.num_classes and label is None else None
            try:
                save_png(grid(items, columns), grid_path, replace=overwrite)
            except OutputExistsError as exc:
                typer.echo(one_line(f"styler: {exc}"), err=True)
            else:
                print_line(str(grid_path))
    if skipped:
        typer.echo(f"styler: kept {skipped} existing files (--overwrite replaces them)", err=True)


#: Names generate gives its samples: ``sample_00012.png``, ``<class>_00012.png``.
_SAMPLE_NAME = re.compile(r".*_[0-9]{5}\.png")


def _check_grid(grid_path: Path, output: Path) -> None:
    """The grid never takes the place of this run's outputs: not the output
    folder itself, nor a name in it that a sample is written under."""
    from styler.errors import UsageError

    grid_real, out_real = resolved(grid_path), resolved(output)
    if grid_real == out_real:
        raise UsageError(f"--grid {grid_path} is the output folder; give a file name")
    if grid_real.parent == out_real and _SAMPLE_NAME.fullmatch(grid_real.name):
        raise UsageError(
            f"--grid {grid_path} is named like the samples written into {output}; "
            "choose another name"
        )
