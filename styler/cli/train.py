"""`styler train`: learn to turn images like A's into images like B's."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from styler.cli.app import EXIT_INTERRUPTED, app, need_onnx, need_train_extra, print_line
from styler.errors import UsageError
from styler.paths import check_image_folder, check_two_domains


@app.command("train")
def train(
    ctx: typer.Context,
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
        str,
        typer.Option(
            help="auto (paired folders: pix2pix; unpaired: the --recipe), cyclegan, cut, "
            "fastcut, pix2pix."
        ),
    ] = "auto",
    recipe: Annotated[
        str | None,
        typer.Option(
            help="fast (one hour, starts at the identity), brush (30 minutes: fast with a "
            "colour path and a smoothing path that learn a style's colours and flat patches "
            "of paint), painting (one hour, the shipped photo -> painting model's settings: "
            "a style that shows) or reference (the published CycleGAN) [default: fast for "
            "unpaired folders without --mode]."
        ),
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Train for this long (90s, 30m, 1h, 1h30m): the schedule is laid out from "
            "the measured speed [default: the recipe's, 1h for fast].",
        ),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            "--gen",
            help="resnet_9blocks, resnet_6blocks, unet_256, unet_128, ... "
            "[default: resnet_9blocks for cyclegan, unet_<size> for pix2pix].",
        ),
    ] = None,
    ngf: Annotated[
        int | None, typer.Option(help="Generator width (filters of its first layer) [default: 64].")
    ] = None,
    norm: Annotated[
        str | None,
        typer.Option(
            help="instance, batch or none [default: instance for cyclegan, batch for pix2pix]."
        ),
    ] = None,
    upsample: Annotated[
        str | None,
        typer.Option(
            help="transpose (as the reference) or resize (no checkerboards) [default: transpose]."
        ),
    ] = None,
    residual: Annotated[
        bool | None,
        typer.Option(
            "--residual/--no-residual",
            help="The generator adds its input to its output and starts as the identity "
            "(keeps the photo's colours) [default: off; on in the fast recipe].",
        ),
    ] = None,
    color_mlp: Annotated[
        int | None,
        typer.Option(
            help="Width of a per-pixel colour path added to a ResNet generator's output "
            "(learns colour grades; implies --residual) [default: 0, none].",
        ),
    ] = None,
    detail: Annotated[
        int | None,
        typer.Option(
            help="Width of a full-resolution detail path added to a ResNet generator's "
            "output (three 5x5 convolutions on the input: learns to smooth or sharpen "
            "fine detail, which the network's quarter-size bottleneck cannot; implies "
            "--residual) [default: 0, none].",
        ),
    ] = None,
    smooth: Annotated[
        int | None,
        typer.Option(
            help="Width of a smoothing path added to a ResNet generator's output (the "
            "input blurred by three fixed Gaussians and two Kuwahara filters; a small "
            "network learns, pixel by pixel, how far towards each: flat patches of "
            "paint, edges kept; implies "
            "--residual) [default: 0, none].",
        ),
    ] = None,
    discriminator: Annotated[
        str | None,
        typer.Option(
            "--discriminator",
            "--disc",
            help="basic (70x70 PatchGAN), n_layers_N, pixel, projected (on frozen "
            "EfficientNet-Lite0 features) [default: basic].",
        ),
    ] = None,
    color_disc: Annotated[
        bool | None,
        typer.Option(
            "--color-disc/--no-color-disc",
            help="cut/fastcut: a colour discriminator beside the others (a small PatchGAN "
            "on 4x4-averaged images: colours and tones, not texture) [default: off].",
        ),
    ] = None,
    color_judge: Annotated[
        str | None,
        typer.Option(
            help="What --color-disc is: patch (the small PatchGAN) or projected (frozen "
            "EfficientNet-Lite0 features of the 4x4 averages: what a colour belongs to) "
            "[default: patch].",
        ),
    ] = None,
    texture_disc: Annotated[
        bool | None,
        typer.Option(
            "--texture-disc/--no-texture-disc",
            help="cut/fastcut: a texture discriminator beside the others (a PatchGAN on "
            "grey images, a random channel mix: strokes and edges, not colours) "
            "[default: off].",
        ),
    ] = None,
    projected: Annotated[
        bool | None,
        typer.Option(
            "--projected/--no-projected",
            help="cut/fastcut: a projected discriminator beside the PatchGAN [default: off].",
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="DiffAugment (translation, cut-out) of all the discriminators see [default: off].",
        ),
    ] = None,
    augment_color: Annotated[
        bool | None,
        typer.Option(
            "--augment-color/--no-augment-color",
            help="DiffAugment's colour changes too [default: off].",
        ),
    ] = None,
    ndf: Annotated[int | None, typer.Option(help="Discriminator width [default: 64].")] = None,
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
    lr: Annotated[float | None, typer.Option(help="Adam learning rate [default: 0.0002].")] = None,
    beta1: Annotated[float | None, typer.Option(help="Adam beta1 [default: 0.5].")] = None,
    gan_loss: Annotated[
        str | None,
        typer.Option(
            help="lsgan, vanilla, hinge or wgangp [default: lsgan; vanilla for pix2pix and "
            "one folder]."
        ),
    ] = None,
    lambda_cycle: Annotated[
        float | None, typer.Option(help="Cycle-consistency weight [default: 10.0].")
    ] = None,
    lambda_identity: Annotated[
        float | None,
        typer.Option(help="Identity weight, relative to the cycle weight [default: 0.5]."),
    ] = None,
    lambda_l1: Annotated[
        float | None, typer.Option(help="pix2pix L1 weight [default: 100.0].")
    ] = None,
    lambda_color: Annotated[
        float | None,
        typer.Option(
            help="CycleGAN, cut, fastcut: colour loss (regional hues kept; 0: off, as the "
            "reference) [default: 0.0]."
        ),
    ] = None,
    color_cells: Annotated[
        int | None,
        typer.Option(
            help="cut/fastcut: the colour and hue losses compare mean chroma over this many "
            "cells a side (more: finer) [default: 8].",
        ),
    ] = None,
    lambda_hue: Annotated[
        float | None,
        typer.Option(
            help="cut/fastcut: hue loss (each region's hue kept, its saturation and brightness "
            "free; 0: off) [default: 0.0].",
        ),
    ] = None,
    disc_input: Annotated[
        str | None,
        typer.Option(
            help="CycleGAN discriminators see rgb (the reference) or luma (colour left alone) "
            "[default: rgb]."
        ),
    ] = None,
    pool_size: Annotated[
        int | None, typer.Option(help="Past fakes per discriminator (0: none) [default: 50].")
    ] = None,
    lambda_nce: Annotated[
        float | None,
        typer.Option(help="cut/fastcut PatchNCE weight [default: 1.0; fastcut: 10.0]."),
    ] = None,
    nce_idt: Annotated[
        bool | None,
        typer.Option(
            "--nce-idt/--no-nce-idt",
            help="cut/fastcut: PatchNCE on G(B) too [default: on for cut, off for fastcut].",
        ),
    ] = None,
    lambda_content: Annotated[
        float | None,
        typer.Option(help="cut/fastcut content loss (Lite0 features) [default: 0.0]."),
    ] = None,
    lambda_style: Annotated[
        float | None,
        typer.Option(help="cut/fastcut style loss (Lite0 feature statistics) [default: 0.0]."),
    ] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            help="cut/fastcut: decay of the generator's weight average, exported (0: none) "
            "[default: 0.0]."
        ),
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip", help="Random horizontal flips [default: on; one folder: off]."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of everything random [default: 0].")
    ] = None,
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
        float | None, typer.Option(help="Also checkpoint at least this often [default: 10.0].")
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            help="Checkpoints kept [default: 3; on --resume, as many as the run folder holds]."
        ),
    ] = None,
    display: Annotated[
        str | None,
        typer.Option(
            help="auto (live on a terminal, else log lines), live, plain, quiet [default: auto]."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Same as --display quiet.")] = False,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also log to RUN_DIR/tensorboard.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Image loading threads [default: up to 4, one a core].")
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            help="Score the A->B generator every N steps (KID); keep the best "
            "[default: with --time, about 10 times a run when photos are held out]."
        ),
    ] = None,
    eval_photos: Annotated[
        Path | None, typer.Option(help="Photos to score [default: the held-out A images].")
    ] = None,
    eval_reference: Annotated[
        Path | None, typer.Option(help="Reference style to score against [default: B].")
    ] = None,
    export: Annotated[
        bool | None,
        typer.Option(
            "--export/--no-export", help="Export ONNX models at the end [default: export]."
        ),
    ] = None,
) -> None:
    """Train a model that turns images like A's into images like B's, or, given
    one folder, one that makes new images like those in it.

    Paired folders (the same file names in A and B) train pix2pix; unpaired
    ones the --recipe (fast: one hour; reference: the published CycleGAN)
    or the --mode asked for; one folder a GAN from noise (class-conditional
    when the folder holds one subfolder per class; see styler generate). The
    run folder gets config.json, checkpoints, samples, metrics.jsonl,
    curves.svg and report.html, and at the end the ONNX models, whose paths
    are printed on stdout. The first Ctrl-C saves a checkpoint and stops
    (exit 130); continue with --resume RUN_DIR.
    """
    # What the arguments alone decide is checked before PyTorch is imported
    # (seconds): a mistyped command is answered at once.
    if resume is not None:
        if data_a or data_b or aligned or output:
            raise UsageError("--resume takes the run folder only: its config says the rest")
        _refuse_on_resume(ctx)
    else:
        first, second = _folders(data_a, data_b, aligned)
        for folder in (first, second):
            if folder is not None:
                check_image_folder(folder)
        if second is not None:
            check_two_domains(first, second)
    need_train_extra()
    if export is not False:  # the run ends by writing ONNX models
        need_onnx()
    from styler.training.allocator import keep_freed_memory

    keep_freed_memory()  # this process trains: reuse freed memory (see the module)
    from styler.log import logger
    from styler.training import loop
    from styler.training.config import given

    if quiet:
        display = "quiet"
    watch = loop.WatchOptions(
        **given(
            sample_every=sample_every,
            checkpoint_every=checkpoint_every,
            checkpoint_minutes=checkpoint_minutes,
            keep_checkpoints=keep_checkpoints,
            display=display,
            tensorboard=tensorboard,
            workers=workers,
            export=export,
            eval_every=eval_every,
            eval_photos=str(eval_photos) if eval_photos else None,
            eval_reference=str(eval_reference) if eval_reference else None,
        )
    )
    if watch.eval_every:
        from styler.training.scoring import check_inputs

        check_inputs(watch.eval_photos, watch.eval_reference)
    if resume is not None:
        result = loop.resume(resume, device=device, watch=watch, steps=steps)
    else:
        from styler.training.budget import parse_duration
        from styler.training.device import choose
        from styler.training.recipes import get_recipe
        from styler.training.run import RunFolder
        from styler.training.setup import default_run_dir, make_config, recipe_for

        if output is not None:  # before any image is decoded
            RunFolder(output).check_writable()

        one_folder = second is None and aligned is None
        name = recipe_for(recipe or "auto", first, second, aligned is not None, mode, seed)
        chosen_recipe = get_recipe(name) if name else None
        if precision == "auto" and chosen_recipe is not None:
            precision = chosen_recipe.flags.get("precision", "auto")
        chosen_device, chosen_precision = choose(device, precision, small=one_folder)
        config, found = make_config(
            first,
            second,
            aligned=aligned is not None,
            mode=mode,
            recipe=name,
            steps=steps,
            epochs=epochs,
            decay=decay,
            time=parse_duration(time) if time is not None else None,
            precision=chosen_precision,
            **given(
                generator=generator,
                ngf=ngf,
                norm=norm,
                upsample=upsample,
                residual=residual,
                color_mlp=color_mlp,
                detail=detail,
                smooth=smooth,
                discriminator=discriminator,
                projected=projected,
                color_disc=color_disc,
                color_judge=color_judge,
                texture_disc=texture_disc,
                augment=augment,
                augment_color=augment_color,
                lambda_nce=lambda_nce,
                nce_idt=nce_idt,
                lambda_content=lambda_content,
                lambda_style=lambda_style,
                ema=ema,
                ndf=ndf,
                size=size,
                arch=arch,
                latent_dim=latent_dim,
                load_size=load_size,
                batch_size=batch_size,
                lr=lr,
                beta1=beta1,
                gan_loss=gan_loss,
                lambda_cycle=lambda_cycle,
                lambda_identity=lambda_identity,
                lambda_l1=lambda_l1,
                lambda_color=lambda_color,
                color_cells=color_cells,
                lambda_hue=lambda_hue,
                disc_input=disc_input,
                pool_size=pool_size,
                flip=flip,
                seed=seed,
            ),
        )
        if chosen_recipe is not None and watch.display != "quiet":
            why = (
                ""
                if recipe
                else " (the default for unpaired folders; --recipe reference: "
                "the published CycleGAN)"
            )
            typer.echo(f"styler: recipe {name}{why}: {chosen_recipe.summary}", err=True)
        note = config.mode.cpu_note(config) if chosen_device == "cpu" else None
        if note and watch.display != "quiet":
            typer.echo(f"styler: note: {note}", err=True)
        run_dir = output or default_run_dir(config)
        if watch.display != "quiet":
            typer.echo(
                f"styler: {config.mode.describe(config, chosen_device)} -> {run_dir}", err=True
            )
        logger.info("config: %s", config.to_json())
        result = loop.train(config, run_dir, device=chosen_device, watch=watch, found=found)
    for path in result.models:
        print_line(str(path))
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
            f"styler: finished {result.step} step{'' if result.step == 1 else 's'} in "
            f"{result.seconds / 60:.1f} min of training; "
            f"report: {result.run_dir / 'report.html'}",
            err=True,
        )
        typer.echo(
            f"styler: this run's {result.wall / 60:.1f} min went to {result.where_time_went()}",
            err=True,
        )


#: What ``--resume`` takes besides the run folder: the run's length, the
#: device, and how the run is watched and kept (never what it computes).
RESUME_TAKES = frozenset(
    {"resume", "steps", "device", "sample_every", "checkpoint_every", "checkpoint_minutes"}
    | {"keep_checkpoints", "display", "quiet", "tensorboard", "workers", "export"}
    | {"eval_every", "eval_photos", "eval_reference"}
)


def _refuse_on_resume(ctx: typer.Context) -> None:
    """A resume continues the run its config describes: an option given that
    would change it is refused, not ignored."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name not in RESUME_TAKES and _on_command_line(ctx, param.name or "")
    ]
    if given:
        raise UsageError(
            f"--resume continues the run as its config.json says: {', '.join(sorted(given))} "
            "would change it (a resume takes --steps, --device and how the run is watched "
            "and kept: --display, --workers, --checkpoint-every, --eval-every, ...)"
        )


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (compared by
    name: typer uses click's ParameterSource or a vendored copy of it)."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"


def _folders(
    data_a: Path | None, data_b: Path | None, aligned: Path | None
) -> tuple[Path, Path | None]:
    """The first folder and the second (None: one folder, or --aligned)."""
    folders = [f for f in (data_a, data_b) if f is not None]
    if aligned is not None:
        if folders:
            raise UsageError("--aligned takes the place of the A and B folders")
        return aligned, None
    if not folders:
        raise UsageError(
            "give two folders (A/ B/), one folder (generation), --aligned DIR, or --resume RUN_DIR"
        )
    return folders[0], folders[1] if len(folders) == 2 else None
