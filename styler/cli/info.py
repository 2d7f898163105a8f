"""`styler info` and `styler models`: what a model file is, what ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from styler.cli.app import app, one_line

if TYPE_CHECKING:
    from styler.metadata import ModelMetadata


@app.command("info")
def info(
    model: Annotated[Path, typer.Argument(help="A styler ONNX model.", metavar="MODEL")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
) -> None:
    """Show what a styler model is: architecture, channels, range, provenance."""
    from styler.runtime import Model

    try:  # (before it is read: the size of the file described, if it moves meanwhile)
        size: int | None = model.stat().st_size
    except OSError:
        size = None  # (Model.open says why in one line)
    opened = Model.open(model, device="cpu")
    meta = opened.meta
    data = meta.to_dict()
    data["file"] = str(model)
    data["file_size"] = size
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
        return
    rows = _described(meta)
    precision = meta.precision
    psnr = meta.extra.get("int8_psnr_db")
    if isinstance(psnr, (int, float)) and not isinstance(psnr, bool):
        precision += f" ({psnr:.1f} dB PSNR against fp32)"
    if meta.task == "translate":
        colours = {
            "model": "the model's",
            "keep": "each input's own (--model-colours: the model's)",
        }
        rows.append(("colours", colours[meta.colours]))
    rows += [
        ("precision", precision),
        (
            "parity error",
            f"{meta.parity_error:.2e}" if meta.parity_error is not None else "not measured",
        ),
        ("licence", meta.license),
        ("source", meta.source),
        ("created", f"{meta.created} with styler {meta.styler_version}"),
        ("file", f"{model} ({size / 1e6:.1f} MB)" if size is not None else str(model)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:  # every value may come from the file: one plain line each
        typer.echo(one_line(f"{key:<{width}}  {value}"))


#: The paths a ResNet generator may add to its output: config field, as shown.
_PATHS = (("color_mlp", "colour path"), ("detail", "detail path"), ("smooth", "smoothing path"))


def _described(meta: ModelMetadata) -> list[tuple[str, str]]:
    """The rows of ``styler info`` that say what the model is (by its task)."""
    net = meta.network
    if meta.task == "generate":
        rows = [
            ("name", meta.name),
            ("description", meta.description),
            ("task", "generate (noise in, images out)"),
            ("architecture", f"{meta.architecture}, latent {meta.latent_dim}"),
            ("image", f"{net.out_channels} channels, {net.size} x {net.size}"),
            ("classes", ", ".join(meta.classes or ()) or "none (unconditional)"),
        ]
    else:
        residual = ", residual" if getattr(net, "residual", False) else ""
        residual += "".join(  # a ResNet's added paths (0: none)
            f", {label} {getattr(net, name, 0)}" for name, label in _PATHS if getattr(net, name, 0)
        )
        rows = [
            ("name", meta.name),
            ("description", meta.description),
            (
                "architecture",
                f"{meta.architecture} ({net.kind}, ngf {net.ngf}, norm {net.norm}, "
                f"upsample {net.upsample}{residual})",
            ),
            ("channels", f"{meta.in_channels} in, {meta.out_channels} out"),
            ("value range", f"[{meta.value_range[0]:g}, {meta.value_range[1]:g}]"),
            ("size multiple", str(meta.size_multiple)),
            ("train size", str(meta.train_size) if meta.train_size else "unknown"),
            (
                "direction",
                meta.direction
                + (f" ({meta.domains[0]} -> {meta.domains[1]})" if meta.domains else ""),
            ),
        ]
    return rows


@app.command("models")
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> None:
    """List the models that ship with styler, with their cards."""
    from styler.shipped import shipped_models

    found = shipped_models()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "path": str(m.path),
                        "default": m.is_default,
                        "card": _card(m.card) if m.card else None,
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
        typer.echo(one_line(f"{m.name}{' (default)' if m.is_default else ''}  {m.path}"))
        if m.card:
            typer.echo("")
            for line in _card(m.card).rstrip().splitlines():
                typer.echo(one_line(line))
            typer.echo("")


def _card(path: Path) -> str:
    """A model card's text (UTF-8, whatever the locale; a byte that is not
    shown as U+FFFD)."""
    return path.read_text(encoding="utf-8", errors="replace")
