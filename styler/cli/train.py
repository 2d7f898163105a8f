"""`styler train`: learn to turn images like A's into images like B's."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from styler.cli.app import app, need_train_extra
from styler.errors import StylerError, UsageError

EXIT_INTERRUPTED = 130


@app.command("train")
def train(
    data_a: Annotated[
        Path | None,
        typer.Argument(help="Folder of images of domain A (the inputs).", metavar="A"),
    ] = None,
    data_b: Annotated[
        Path | None,
        typer.Argument(help="Folder of images of domain B (the targets).", metavar="B"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Run folder [default: runs/A_to_B]."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its latest checkpoint."),
    ] = None,
    aligned: Annotated[
        Path | None,
        typer.Option(help="One folder of side-by-side A|B images (trains pix2pix)."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="auto (paired folders: pix2pix, else cyclegan), cyclegan, pix2pix.")
    ] = "auto",
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            "--gen",
            help="resnet_9blocks, resnet_6blocks, unet_256, unet_128, ... "
            "[default: resnet_9blocks for cyclegan, unet_<size> for pix2pix].",
        ),
    ] = None,
    ngf: Annotated[int, typer.Option(help="Generator width (filters of its first layer).")] = 64,
    norm: Annotated[
        str | None,
        typer.Option(
            help="instance, batch or none [default: instance for cyclegan, batch for pix2pix]."
        ),
    ] = None,
    upsample: Annotated[
        str, typer.Option(help="transpose (as the reference) or resize (no checkerboards).")
    ] = "transpose",
    residual: Annotated[
        bool,
        typer.Option(
            "--residual/--no-residual",
            help="ResNet generators add the input to their output (keeps its colours).",
        ),
    ] = False,
    discriminator: Annotated[
        str,
        typer.Option(
            "--discriminator", "--disc", help="basic (70x70 PatchGAN), n_layers_N, pixel."
        ),
    ] = "basic",
    ndf: Annotated[int, typer.Option(help="Discriminator width.")] = 64,
    size: Annotated[
        int | None,
        typer.Option(help="Square crop size trained on [default: 256; one folder: the images']."),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="One folder (generation): mlp or dcgan [default: mlp].")
    ] = None,
    latent_dim: Annotated[
        int | None, typer.Option(help="One folder: length of the noise vector [default: 100].")
    ] = None,
    load_size: Annotated[
        int | None,
        typer.Option(
            help="Images are scaled to this shorter side, then cropped [default: size*286/256]."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step [default: 1; one folder: 64].")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimiser steps [default: 200 epochs].")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Run length in passes over the data.")
    ] = None,
    decay: Annotated[
        float | None,
        typer.Option(
            help="Share of the run over which the LR decays to 0 [default: 0.5; one folder: 0]."
        ),
    ] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-4,
    beta1: Annotated[float, typer.Option(help="Adam beta1.")] = 0.5,
    gan_loss: Annotated[
        str,
        typer.Option(help="lsgan, vanilla, hinge or wgangp [default: lsgan; vanilla for pix2pix]."),
    ] = "auto",
    lambda_cycle: Annotated[float, typer.Option(help="Cycle-consistency weight.")] = 10.0,
    lambda_identity: Annotated[
        float, typer.Option(help="Identity weight, relative to the cycle weight.")
    ] = 0.5,
    lambda_l1: Annotated[float, typer.Option(help="pix2pix L1 weight.")] = 100.0,
    lambda_color: Annotated[
        float,
        typer.Option(help="CycleGAN colour loss (regional hues kept; 0: off, as the reference)."),
    ] = 0.0,
    disc_input: Annotated[
        str,
        typer.Option(
            help="CycleGAN discriminators see rgb (the reference) or luma (colour left alone)."
        ),
    ] = "rgb",
    pool_size: Annotated[int, typer.Option(help="Past fakes per discriminator (0: none).")] = 50,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip", help="Random horizontal flips [default: on; one folder: off]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of everything random.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(help="auto (bf16 where the hardware has it), fp32, bf16 or fp16 (GPU)."),
    ] = "auto",
    sample_every: Annotated[
        int | None, typer.Option(help="Steps between sample grids [default: ~40 per run].")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Steps between checkpoints [default: as samples].")
    ] = None,
    checkpoint_minutes: Annotated[
        float, typer.Option(help="Also checkpoint at least this often.")
    ] = 10.0,
    keep_checkpoints: Annotated[int, typer.Option(help="Checkpoints kept.")] = 3,
    display: Annotated[
        str, typer.Option(help="auto (live on a terminal, else log lines), live, plain, quiet.")
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Same as --display quiet.")] = False,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also log to RUN_DIR/tensorboard.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Image loading threads.")] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(help="Score the A->B generator every N steps (KID); keep the best."),
    ] = None,
    eval_photos: Annotated[
        Path | None, typer.Option(help="Photos to score [default: the held-out A images].")
    ] = None,
    eval_reference: Annotated[
        Path | None, typer.Option(help="Reference style to score against [default: B].")
    ] = None,
    export: Annotated[
        bool, typer.Option("--export/--no-export", help="Export ONNX models at the end.")
    ] = True,
) -> None:
    """Train a model that turns images like A's into images like B's, or, given
    one folder, one that makes new images like those in it.

    Paired folders (the same file names in A and B) train pix2pix; unpaired
    ones CycleGAN; one folder a GAN from noise (class-conditional when the
    folder holds one subfolder per class; see styler generate). The run
    folder gets config.json, checkpoints, samples, metrics.jsonl, curves.svg
    and report.html, and at the end the ONNX models, whose paths are printed
    on stdout. The first Ctrl-C saves a
    checkpoint and stops (exit 130); continue with --resume RUN_DIR.
    """
    need_train_extra()
    from styler.training.allocator import keep_freed_memory

    keep_freed_memory()  # this process trains: reuse freed memory (see the module)
    flip_given = flip is not None
    flip = True if flip is None else flip
    from styler.log import logger
    from styler.training import loop
    from styler.training.data import default_workers

    watch = loop.WatchOptions(
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
        keep_checkpoints=keep_checkpoints,
        display="quiet" if quiet else display,
        tensorboard=tensorboard,
        workers=workers or default_workers(),
        export=export,
        eval_every=eval_every,
        eval_photos=str(eval_photos) if eval_photos else None,
        eval_reference=str(eval_reference) if eval_reference else None,
    )
    if resume is not None:
        if data_a or data_b or aligned or output:
            raise UsageError("--resume takes the run folder only: its config says the rest")
        result = loop.resume(resume, device=device, watch=watch, steps=steps)
    else:
        folders = [f for f in (data_a, data_b) if f is not None]
        if aligned is not None:
            if folders:
                raise UsageError("--aligned takes the place of the A and B folders")
            first, second = aligned, None
        elif folders:
            first, second = folders[0], (folders[1] if len(folders) == 2 else None)
        else:
            raise UsageError(
                "give two folders (A/ B/), one folder (generation), --aligned DIR, "
                "or --resume RUN_DIR"
            )
        from styler.training.device import Hardware, choose_device, choose_precision
        from styler.training.setup import default_run_dir, make_config

        hw = Hardware.probe()
        chosen_device = choose_device(device, hw)
        common = {
            "steps": steps,
            "epochs": epochs,
            "size": size,
            "precision": choose_precision(
                precision, chosen_device, hw, small=second is None and aligned is None
            ),
            "lr": lr,
            "beta1": beta1,
            "gan_loss": gan_loss,
            "seed": seed,
        }
        for key, value in (("batch_size", batch_size), ("decay", decay)):
            if value is not None:
                common[key] = value
        if second is None and aligned is None:  # one folder: generation
            config, found = make_config(
                first,
                arch=arch or "mlp",
                latent_dim=latent_dim or 100,
                ngf=ngf,
                ndf=ndf,
                flip=flip if flip_given else False,
                **common,
            )
        else:
            if arch is not None or latent_dim is not None:
                raise UsageError("--arch and --latent-dim are for one folder (generation)")
            config, found = make_config(
                first,
                second,
                aligned=aligned is not None,
                mode=mode,
                generator=generator,
                ngf=ngf,
                norm=norm,
                upsample=upsample,
                residual=residual,
                discriminator=discriminator,
                ndf=ndf,
                load_size=load_size,
                lambda_cycle=lambda_cycle,
                lambda_identity=lambda_identity,
                lambda_l1=lambda_l1,
                lambda_color=lambda_color,
                disc_input=disc_input,
                pool_size=pool_size,
                flip=flip,
                **common,
            )
        heavy = getattr(config.generator, "ngf", 0) >= 64 and config.size >= 256
        if chosen_device == "cpu" and config.mode != "gan" and heavy and watch.display != "quiet":
            typer.echo(
                "styler: note: the published defaults (ngf 64, 256-pixel crops) take several "
                "seconds per step on a CPU; the shipped model was trained with --gen "
                "resnet_6blocks --ngf 32 --upsample resize --size 128 --load-size 512 "
                "(see weights/photo2painting.md)",
                err=True,
            )
        run_dir = output or default_run_dir(config)
        if watch.display != "quiet":
            typer.echo(f"styler: {describe(config, chosen_device)} -> {run_dir}", err=True)
        logger.info("config: %s", config.to_json())
        result = loop.train(config, run_dir, device=chosen_device, watch=watch, found=found)
    for path in result.models:
        typer.echo(str(path))
    if result.interrupted:
        typer.echo(
            f"styler: stopped at step {result.step} of {result.total}; checkpoint "
            f"{result.checkpoint}. Continue with: styler train --resume "
            f"{shlex.quote(str(result.run_dir))}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if watch.display != "quiet":
        typer.echo(
            f"styler: finished {result.step} steps in {result.seconds / 60:.1f} min of training; "
            f"report: {result.run_dir / 'report.html'}",
            err=True,
        )


def describe(config: object, device: str) -> str:
    """One line about what a run will do."""
    from styler.training.config import TrainConfig

    if not isinstance(config, TrainConfig):
        raise StylerError("not a training config")
    g = config.generator
    a, b = config.domains
    if config.mode == "gan":
        kind = f"{len(config.classes)} classes" if config.classes else "unconditional"
        return (
            f"gan {a} ({kind}): {g.preset} from {g.latent_dim}-d noise, "  # type: ignore[union-attr]
            f"{config.size} px, {config.steps} steps of {config.batch_size}, "
            f"{config.gan_loss}, {config.precision} on {device}"
        )
    return (
        f"{config.mode} {a} -> {b}: {g.preset} (ngf {g.ngf}), {config.size} px crops, "  # type: ignore[union-attr]
        f"{config.steps} steps, {config.gan_loss}, {config.precision} on {device}"
    )
