"""Applying a model to images: one array, one PIL image, or a whole stream of files.

The pipeline for files is Real-ESRGAN's pre-process -> tile -> post-process,
made to stream: decoding runs ahead in worker threads, neighbouring images of
the same size are batched into one onnxruntime call on the main thread, and
encoding runs behind in worker threads, each output written atomically.
Results come back in input order, one per input, and a bad input never stops
the batch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from styler import imageio, tiling
from styler.colour import keep_colours as keep
from styler.errors import (
    BadImageError,
    BadModelError,
    InferenceError,
    OutputExistsError,
    StylerError,
    UsageError,
)
from styler.fsutil import NOT_A_FILE, remove_stale_parts
from styler.log import logger
from styler.metadata import ModelMetadata
from styler.paths import Job, output_path, same_file
from styler.runtime import Model

if TYPE_CHECKING:
    from PIL import Image

#: Memory onnxruntime may use for one run. Images whose run would need more go
#: in tiles. Measured on the CPU: a resnet_9blocks at ngf 64 takes about
#: 1.5 KB per pixel (600 MB at 768x512), and memory grows with the width.
RUN_MEMORY_BYTES = 1024**3
BYTES_PER_PIXEL_PER_NGF = 32
#: What a ResNet's paths add, at full resolution, per unit of their width
#: (their own width, not ngf's). Measured at ngf 8 on a 3-megapixel image
#: (onnxruntime, one thread; about 130 B a pixel without them): a colour
#: MLP of 256 added 1.8 KB a pixel, a detail path of 64 1.2 KB, a smoothing
#: path 300 to 340 B at widths 1 to 16 and 460 B at 64 (most of it its
#: blurs and Kuwahara filters, SMOOTH_BYTES, whatever the width); each
#: counted with a margin, as ngf's 32 bytes are.
PATH_BYTES_PER_PIXEL = {"color_mlp": 10, "detail": 24, "smooth": 4}
SMOOTH_BYTES = 600
#: Overlap between neighbouring tiles, blended with a smooth window, and the
#: margin of context at each tile edge that is computed and discarded.
TILE_OVERLAP = 32
#: Pixels decoded ahead of the model at most, and as many styled and waiting
#: to be written (each 12 bytes a pixel as float32 RGB: 600 MB): the count
#: of images read ahead bounds memory only while they are small.
HOLD_PIXELS = 50_000_000
TILE_MARGIN = 32

Status = Literal["ok", "skipped", "failed", "planned"]
FORMATS = ("keep", "png", "jpg", "webp")
#: The longest file name, in bytes, of the usual file systems (Linux NAME_MAX).
NAME_MAX = 255


@dataclass(frozen=True)
class ApplyOptions:
    """How a batch of files is styled and written (saved beside the CLI's args)."""

    output_dir: Path | str = Path("styled")
    format: str = "keep"
    quality: int = 95
    suffix: str = ""
    overwrite: bool = False
    max_size: int | None = None
    dry_run: bool = False
    batch_size: int = 4
    workers: int = 2
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    #: Each output keeps its input's colours (the style's brightness and
    #: texture, the photo's chroma: :func:`styler.colour.keep_colours`);
    #: None: as the model's metadata says (``colours``).
    keep_colours: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        if self.format not in FORMATS:
            raise StylerError(
                f"unknown format {self.format!r}: expected one of {', '.join(FORMATS)}"
            )
        if not 1 <= self.quality <= 100:
            raise StylerError(f"quality must be in 1..100, got {self.quality}")
        if self.batch_size < 1 or self.workers < 1:
            raise StylerError("batch size and workers must be at least 1")
        if self.max_size is not None and self.max_size < 1:
            raise StylerError(f"max size must be positive, got {self.max_size}")
        separators = {os.sep, os.altsep or os.sep, "\0"}
        if any(c in self.suffix for c in separators):
            raise UsageError(
                f"--suffix is added to each file name and cannot hold a path separator "
                f"or a NUL byte (got {self.suffix!r}); use --output to choose a folder"
            )
        size = len(os.fsencode(self.suffix))
        if 1 + size + len(".png") > NAME_MAX:  # the shortest name an output can have
            raise UsageError(
                f"--suffix is {size} bytes: no output's name could hold it "
                f"(a file name holds at most {NAME_MAX} bytes)"
            )


def precision_advice(precision: str, device: str) -> str | None:
    """A warning when a model's precision does not suit the device it runs on:
    fp16 is for GPUs (slower and less accurate on the CPU), int8 for CPUs
    (onnxruntime's CUDA provider has no int8 convolution, so those layers
    would run on the CPU)."""
    if precision == "fp16" and device == "cpu":
        return (
            "an fp16 model, meant for GPUs; on the CPU an fp32 export is faster and more accurate"
        )
    if precision == "int8" and device == "cuda":
        return (
            "an int8 model, meant for CPUs; onnxruntime runs its int8 convolutions on the "
            "CPU even with CUDA: use the fp32 (or an fp16) model on a GPU"
        )
    return None


def check_model(model: Model, tile: int | None = None) -> None:
    """Refuse what a :class:`Stylizer` cannot run: a generation model, or a
    tile smaller than the model's size multiple."""
    if model.meta.task != "translate":
        raise BadModelError(
            "a generation model (noise in, images out): use `styler generate`", model.path
        )
    if tile is not None and tile < model.meta.size_multiple:
        raise StylerError(
            f"tile size {tile} is smaller than the model's size multiple {model.meta.size_multiple}"
        )


@dataclass
class Result:
    """What happened to one input."""

    input: str
    output: str | None
    status: Status
    error: str | None = None
    milliseconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Stylizer:
    """A model ready to style images.

    >>> stylizer = Stylizer("model.onnx")            # doctest: +SKIP
    >>> styled = stylizer.apply(PIL.Image.open("photo.jpg"))   # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | Model | None = None,
        *,
        device: str = "auto",
        threads: int | None = None,
        tile: int | None = None,
        overlap: int = TILE_OVERLAP,
        whole_pixels: int | None = None,
        keep_colours: bool | None = None,
    ) -> None:
        if isinstance(model, Model):
            self.model = model
        else:
            from styler.shipped import resolve_model

            self.model = Model.open(resolve_model(model), device=device, threads=threads)
        check_model(self.model, tile)
        advice = precision_advice(self.model.meta.precision, self.model.device)
        if advice:
            logger.warning("%s: %s", self.model.path, advice)
        self.tile = tile
        self.overlap = overlap
        network = self.model.meta.network
        self.whole_pixels = whole_pixels or pixel_budget(network.ngf, paths=path_bytes(network))
        #: Whether outputs keep their inputs' colours (None: as the model says).
        self.keep_colours = self.meta.colours == "keep" if keep_colours is None else keep_colours

    @property
    def meta(self) -> Any:
        return self.model.meta

    # -- arrays ---------------------------------------------------------------

    def _to_model(self, rgb: np.ndarray) -> np.ndarray:
        return model_input(rgb, self.meta)

    def _from_model(self, y: np.ndarray) -> np.ndarray:
        return model_output(y, self.meta)

    def uses_tiles(self, height: int, width: int) -> bool:
        return self.tile is not None or height * width > self.whole_pixels

    def apply_array(self, rgb: np.ndarray) -> np.ndarray:
        """Style one H x W x 3 float image in [0, 1]; same size out."""
        return self.apply_batch([rgb])[0]

    def apply_batch(
        self, images: list[np.ndarray], keep_colours: bool | None = None
    ) -> list[np.ndarray]:
        """Style images; those of one size that run whole share one session
        call. ``keep_colours`` (None: the stylizer's choice) gives each
        output its input's chroma (:func:`styler.colour.keep_colours`)."""
        outputs = self._style(images)
        if self.keep_colours if keep_colours is None else keep_colours:
            outputs = [keep(x, y) for x, y in zip(images, outputs, strict=True)]
        return outputs

    def _style(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images) or self.uses_tiles(h, w):
            if len(images) > 1:
                return [self._style([im])[0] for im in images]
            return [self._tiled(images[0])]
        x = np.concatenate([self._to_model(im) for im in images])
        padded, size = pad_for_model(x, self.meta)
        y = tiling.crop(self.model.run(padded), size)
        return [self._from_model(y[i]) for i in range(len(images))]

    def _tiled(self, rgb: np.ndarray) -> np.ndarray:
        x = self._to_model(rgb)[0]
        multiple = self.meta.size_multiple
        # Tiles take half a whole run's budget: the image, its model-range copy
        # and the blend accumulator already hold memory beside the session.
        tile = self.tile or tiling.auto_tile_size(self.whole_pixels // 2, multiple)
        stats = self._global_stats(x) if self.meta.norm_stats else None

        def run(batch: np.ndarray) -> np.ndarray:
            h, w = batch.shape[-2:]
            padded = _pad_to_at_least(batch, self.meta.min_side)
            return self.model.run(padded, stats=stats)[..., :h, :w]

        y = tiling.run_tiled(
            run,
            x,
            tile=tile,
            overlap=min(self.overlap, tile // 4),
            margin=min(TILE_MARGIN, tile // 8),
            multiple=multiple,
            out_channels=self.meta.out_channels,
        )
        del x
        return self._from_model(y)

    def _global_stats(self, x: np.ndarray) -> np.ndarray:
        """Instance-norm statistics of the whole image (C x H x W), from an
        area-downscaled copy when it is larger than one run may take."""
        c, h, w = x.shape
        factor = max(1, math.ceil(math.sqrt(h * w / self.whole_pixels)))
        if factor > 1:
            hh, ww = h // factor, w // factor
            x = x[:, : hh * factor, : ww * factor].reshape(c, hh, factor, ww, factor).mean((2, 4))
        padded, _ = tiling.pad_to_multiple(x[None], self.meta.size_multiple)
        return self.model.norm_stats(_pad_to_at_least(padded, self.meta.min_side))

    # -- PIL images -----------------------------------------------------------

    def apply(self, image: Image.Image) -> Image.Image:
        """Style a PIL image: EXIF orientation applied, alpha kept, same size out."""
        decoded = imageio.decode_pil(image)
        return imageio.to_pil(self.apply_array(decoded.rgb), decoded)

    # -- files ----------------------------------------------------------------

    def apply_files(
        self, jobs: Iterable[Job], options: ApplyOptions = ApplyOptions()
    ) -> Iterator[Result]:
        """Style every job's input into ``options.output_dir``; one result per
        job, in order. Existing outputs are skipped unless ``overwrite``."""
        pipeline = _Pipeline(self, options)
        try:
            yield from pipeline.run(jobs)
        finally:
            pipeline.close()


@dataclass
class Item:
    """One job on its way through the pipeline: planned (its output decided,
    or its result settled without decoding), then decoded, styled, written."""

    job: Job
    output: Path | None = None
    #: Pillow format the output is written in (decided from the input's header).
    format: str = "PNG"
    decoded: Future[imageio.DecodedImage] | None = None
    result: Result | None = None
    started: float = field(default_factory=time.perf_counter)
    #: Pixels of the input (from its header): what it holds in memory while
    #: decoded, and its output while encoded.
    pixels: int = 0


class Planner:
    """Decides every job's output, once, before any pixel is decoded.

    Every output path is decided when a job is planned, from the input's
    header (so a PNG named .jpg is written as .png there and then), and
    checked there against every input of the run and every output already
    claimed: no input is ever written over, no two inputs write one file.
    With ``overwrite``, a stream of jobs is listed to the end first so that
    the check covers inputs that come later too. The planner holds only
    paths, never images: a local run and ``styler.distributed``'s driver
    plan with it alike."""

    def __init__(self, options: ApplyOptions) -> None:
        self.options = options
        #: Outputs of this run (real path) -> the input that writes it.
        self.claimed: dict[str, Path] = {}
        #: Inputs of this run by file identity (device, inode) -> path ...
        self.inputs: dict[tuple[int, int], Path] = {}
        #: ... and by place (folder identity and name): a file saved again
        #: while the run goes on (written anew and renamed over the old, as
        #: editors do) is a new file at an input's place, still the user's.
        self.input_places: dict[Place, Path] = {}
        #: With a suffix or a chosen format, where each input's output goes by
        #: its name (real path and place -> input): a file there is an
        #: earlier result, under whatever name the folder is reached (a
        #: symbolic link or a bind mount).
        self.named_outputs: dict[str | Place, Path] = {}
        #: Image files of a folder by stem (listed once, when first asked).
        self.stems: dict[Path, dict[str, list[Path]]] = {}
        #: Folders' identities (device, inode), each looked up once.
        self.folders: dict[Path, tuple[int, int]] = {}
        self.cleaned: set[Path] = set()
        #: Inputs taken as earlier results (real paths), not styled.
        self.earlier: set[str] = set()
        #: The output folder's real path (results below it are looked for).
        self.output_real = os.path.realpath(options.output_dir)

    def plan_all(self, jobs: Iterable[Job]) -> Iterator[Item]:
        """Each job planned, in order and lazily (a stream of jobs stays one,
        unless ``overwrite`` needs every input known first)."""
        if self.options.overwrite and not isinstance(jobs, Sequence):
            jobs = list(jobs)  # know every input before anything is overwritten
        if isinstance(jobs, Sequence):
            for job in jobs:
                self._register(job)
        for job in jobs:
            yield self.plan(job)

    def _register(self, job: Job) -> None:
        """Remember ``job``'s input by identity, so no output replaces it,
        and (with a suffix or a chosen format) the name of its output, so
        that an earlier result lying among the inputs is not styled again."""
        try:
            st = os.stat(job.input)
        except (OSError, ValueError):
            return
        self.inputs.setdefault((st.st_dev, st.st_ino), job.input)
        place = self._place(job.input)
        if place is not None:
            self.input_places.setdefault(place, job.input)
        for key in self._named_output(job):
            self.named_outputs.setdefault(key, job.input)

    def _named_output(self, job: Job) -> list[str | Place]:
        """Where ``job``'s output goes by its name alone, as a real path and
        as a place (none unless a suffix or a format is asked for: only then
        can a result lie among inputs)."""
        opts = self.options
        if not (opts.suffix or opts.format != "keep"):
            return []
        fmt = imageio.output_format(imageio.format_from_extension(job.input.suffix), opts.format)
        try:
            out = output_path(opts.output_dir, job, imageio.extension_for(fmt), opts.suffix)
        except ValueError:
            return []
        return [key for key in (_real(out), self._place(out)) if key]

    def _source_beside(self, job: Job) -> Path | None:
        """The image beside ``job.input`` whose output (by its name and its
        content's format) is ``job.input``: then ``job.input`` is an earlier
        result of it, whatever order the inputs come in (a stream from
        stdin lists a result before its source as often as after) and
        whatever the source's extension says."""
        opts = self.options
        if not opts.suffix and opts.format == "keep":
            return None
        stem = _source_stem(job.input.stem, opts.suffix)
        if stem is None:
            return None
        return self._writer(job.input, job.input.parent, job.relative.with_name(stem))

    def _source_above(self, job: Job) -> Path | None:
        """For ``job.input`` given by a path relative to the working folder
        and inside the output folder (a listing that holds it: ``find . |
        styler apply -`` with ``-o styled`` there), the image
        whose output it is, found where its place below the output folder
        says a source given by a relative path lies: then it is an earlier
        result, never a photo to style again."""
        opts = self.options
        if job.input.is_absolute() or job.input.with_suffix("") != Path(job.relative):
            return None  # walked, or given by an absolute path: no place says where a source is
        try:
            real = os.path.join(os.path.realpath(job.input.parent), job.input.name)
            below = PurePath(os.path.relpath(real, self.output_real))
        except ValueError:  # another drive, a NUL in the name
            return None
        if below.parts[:1] == ("..",) or len(below.parts) == 0:
            return None
        stem = _source_stem(below.stem, opts.suffix)
        if stem is None:
            return None
        folder = Path(below.parent)  # relative to the working folder, as the source was given
        if self._place(folder / job.input.name) == self._place(job.input):
            return None  # the folder beside it: _source_beside's
        return self._writer(job.input, folder, below.parent / stem)

    def _writer(self, result: Path, folder: Path, relative: PurePath) -> Path | None:
        """The image of ``folder`` (with ``relative``'s stem) whose output,
        styled as ``relative``, is ``result``."""
        opts = self.options
        target = self._place(result)
        if target is None:
            return None
        for other in self._by_stem(folder).get(relative.name, []):
            if self._place(other) == target:
                continue
            try:
                header = imageio.probe(other, opts.max_pixels)
                fmt = imageio.output_format(header.format, opts.format)
                twin = Job(other, relative)
                out = output_path(opts.output_dir, twin, imageio.extension_for(fmt), opts.suffix)
            except (BadImageError, ValueError):
                continue
            if self._place(out) == target:
                return other
        return None

    def _place(self, path: Path) -> Place | None:
        """``path``'s place: its name in its folder, the folder known by
        identity (the same under every name it is reached by: symbolic
        links, bind mounts; kept when the file there is replaced). None
        while the folder does not exist."""
        folder = path.parent
        if folder not in self.folders:
            try:
                st = os.stat(folder)
            except (OSError, ValueError):
                return None
            self.folders[folder] = (st.st_dev, st.st_ino)
        return (path.name, *self.folders[folder])

    def _by_stem(self, folder: Path) -> dict[str, list[Path]]:
        if folder not in self.stems:
            found: dict[str, list[Path]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:  # any name: files given by name are styled whatever it is
                        if not entry.name.startswith("."):
                            path = Path(entry.path)
                            found.setdefault(path.stem, []).append(path)
            except OSError:
                pass
            self.stems[folder] = found
        return self.stems[folder]

    def plan(self, job: Job) -> Item:
        """``job`` with its output decided, or its result settled (failed,
        skipped, or planned in a dry run) without decoding."""
        item = Item(job)
        opts = self.options
        if job.error:
            return _settle(item, "failed", job.error)
        self._register(job)  # a streamed input is known from here on
        # A file named like another input's output is taken as an earlier
        # result (in place, the two cannot be told apart by name): kept, not styled.
        writer = None
        if self.named_outputs:
            keys = (_real(job.input), self._place(job.input))
            writer = next((self.named_outputs[k] for k in keys if k in self.named_outputs), None)
        if writer is None:
            writer = self._source_beside(job) or self._source_above(job)
        if writer is not None and writer != job.input:
            self.earlier.add(_real(job.input))
            return _settle(
                item,
                "skipped",
                f"named like the output of {writer}: taken as an earlier result and not "
                "styled (style it into another --output)",
            )
        try:
            header = imageio.probe(job.input, opts.max_pixels)
        except BadImageError as exc:
            return _settle(item, "failed", exc.reason)
        item.format = imageio.output_format(header.format, opts.format)
        item.pixels = header.size[0] * header.size[1]
        too_large = imageio.too_large_for(item.format, imageio.limited(header.size, opts.max_size))
        if too_large is not None:
            return _settle(item, "failed", too_large)
        out = output_path(opts.output_dir, job, imageio.extension_for(item.format), opts.suffix)
        item.output = out
        try:
            self._clean(out.parent)
            refusal = self._claim(job.input, out)
        except OSError as exc:  # a name too long, a folder that cannot be read, ...
            return _settle(item, "failed", f"cannot write: {exc.strerror or exc}")
        if refusal is not None:
            return _settle(item, *refusal)
        if opts.dry_run:
            return _settle(item, "planned")
        return item

    def _clean(self, folder: Path) -> None:
        """Remove what killed writers left in ``folder`` (once per folder)."""
        if folder in self.cleaned or self.options.dry_run:
            return
        self.cleaned.add(folder)
        for stale in remove_stale_parts(folder):
            logger.info("removed %s, left by an interrupted run", stale)

    def _claim(self, source: Path, out: Path) -> tuple[Status, str] | None:
        """Claim ``out`` for ``source``, or say why it is not written: another
        input writes it, ``source`` is itself this run's output, it exists
        (without ``overwrite``), or it is an input of this run."""
        root = os.path.realpath(self.options.output_dir)
        if os.path.commonpath([root, os.path.realpath(out)]) != root:
            link = out if os.path.islink(out) else out.parent
            return "failed", f"{link} leads out of the output folder (a symbolic link)"
        # Where the write lands: a symbolic link at ``out`` is replaced (or,
        # without --overwrite, kept), never written through, so two outputs
        # are one only when their folders and names are.
        key = os.path.join(os.path.realpath(out.parent), out.name)
        other = self.claimed.get(key)
        if other is not None and same_file(other, source):
            return "skipped", f"named twice (as {other} too)"
        if other is not None:
            return "failed", f"another input already writes {out} ({other})"
        writer = self.claimed.get(_real(source))
        if writer is not None:
            return "skipped", f"written by this run, as the output of {writer}"
        self.claimed[key] = source
        try:
            st = os.stat(out)
        except FileNotFoundError:  # a dangling symbolic link is still the user's file
            dangling = os.path.lexists(out)
            return ("skipped", "output exists") if dangling and not self.options.overwrite else None
        if not stat.S_ISREG(st.st_mode):
            return "failed", f"{out} {NOT_A_FILE}"
        victim = self.inputs.get((st.st_dev, st.st_ino))
        if victim is None:  # an input saved again since it was listed: a new file there
            victim = self.input_places.get(self._place(out) or ("", 0, 0))
        if victim is not None and os.path.samefile(victim, source):
            return "failed", "the output would overwrite the input; choose another --output"
        if not self.options.overwrite:
            return "skipped", "output exists"
        if victim is not None:
            advice = "choose another --output" + ("" if self.options.suffix else " or a --suffix")
            if _real(victim) in self.earlier:  # (said as such a moment ago)
                return "failed", (
                    f"the output {out} is an input of this run (taken as an earlier result, "
                    f"which may be the user's own file) and is never overwritten; {advice}"
                )
            return "failed", f"the output {out} would overwrite the input {victim}; {advice}"
        return None


class Processor:
    """Decode ahead, infer in order, encode behind: planned items in, one
    result per item out, in order. Items settled by the planner pass
    through; every other one is decoded in worker threads, batched with
    decoded neighbours of its size, styled, and written atomically."""

    def __init__(self, stylizer: Stylizer, options: ApplyOptions) -> None:
        self.stylizer = stylizer
        self.options = options
        self.decoders = ThreadPoolExecutor(options.workers, thread_name_prefix="styler-decode")
        self.encoders = ThreadPoolExecutor(options.workers, thread_name_prefix="styler-encode")
        self.ahead = max(2 * options.batch_size, 2 * options.workers)
        #: ... and at most this many pixels decoded ahead, and as many
        #: styled and waiting for their encodes (an image at least, however
        #: large): a folder of 100-megapixel photos is not held 16 at a time.
        self.hold_pixels = HOLD_PIXELS

    def close(self) -> None:
        # Let running encodes finish (they write atomically); drop queued work.
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.encoders.shutdown(wait=True, cancel_futures=True)

    def _start(self, item: Item) -> Item:
        """Start decoding a planned item (a settled one passes through)."""
        if item.result is None and item.output is not None:
            item.started = time.perf_counter()
            item.decoded = self.decoders.submit(
                imageio.load_image, item.job.input, self.options.max_pixels
            )
        return item

    def process(self, items: Iterable[Item]) -> Iterator[Result]:
        """One result per item, in order. Stopped (Ctrl-C, SIGTERM: raised
        here, or thrown in at a result), the encodes under way finish and
        their results come out, then the stop goes on. A model error on one
        batch writes and reports the batches before it, then goes on up."""
        encoding: deque[tuple[Item, Future[Result]]] = deque()
        try:
            try:
                yield from self._process(items, encoding)
            except BadModelError:
                # The model broke its promise on a later batch: the images
                # styled before it are good, so they are written and reported
                # first, each as its encode finishes (a stop meanwhile is a
                # stop: the handler below drains what is left).
                self.decoders.shutdown(wait=False, cancel_futures=True)
                while encoding:
                    yield _first(encoding)
                raise
        except (KeyboardInterrupt, SystemExit):
            self.decoders.shutdown(wait=False, cancel_futures=True)
            self.encoders.shutdown(wait=True, cancel_futures=True)
            for _, future in encoding:
                if future.done() and not future.cancelled():
                    yield future.result()
            raise

    def _process(
        self, items: Iterable[Item], encoding: deque[tuple[Item, Future[Result]]]
    ) -> Iterator[Result]:
        pending = iter(items)
        window: deque[Item] = deque()
        upcoming = next(pending, None)
        while True:
            while upcoming is not None and len(window) < self.ahead:
                held = sum(item.pixels for item in window)
                if window and held + upcoming.pixels > self.hold_pixels:
                    break
                window.append(self._start(upcoming))
                upcoming = next(pending, None)
            if not window:
                break
            batch = self._take_batch(window)
            if batch is None:  # the first item was settled without inference
                item = window.popleft()
                assert item.result is not None
                encoding.append((item, _done(item.result)))
            else:
                self._infer(batch, encoding)
            while encoding and (
                encoding[0][1].done()
                or len(encoding) > self.ahead
                or sum(item.pixels for item, _ in encoding) > self.hold_pixels
            ):
                yield _first(encoding)
        while encoding:
            yield _first(encoding)

    def _take_batch(self, window: deque[Item]) -> list[tuple[Item, imageio.DecodedImage]] | None:
        """The first item and the decoded neighbours of the same size behind it."""
        first = window[0]
        if first.decoded is None:
            return None
        try:
            image = self._prepare(first.decoded.result())
        except Exception as exc:  # one bad file never stops the batch
            first.result = Result(str(first.job.input), None, "failed", _reason(exc), _ms(first))
            return None
        window.popleft()
        batch = [(first, image)]
        h, w = image.rgb.shape[:2]
        if self.stylizer.uses_tiles(h, w):
            return batch
        budget = self.stylizer.whole_pixels
        while window and len(batch) < self.options.batch_size:
            nxt = window[0]
            if nxt.decoded is None or not nxt.decoded.done() or nxt.decoded.exception():
                break
            other = self._prepare(nxt.decoded.result())
            if other.rgb.shape[:2] != (h, w) or (len(batch) + 1) * h * w > budget:
                break
            window.popleft()
            batch.append((nxt, other))
        return batch

    def _prepare(self, image: imageio.DecodedImage) -> imageio.DecodedImage:
        if self.options.max_size:
            return imageio.limit_size(image, self.options.max_size)
        return image

    def _infer(
        self,
        batch: list[tuple[Item, imageio.DecodedImage]],
        encoding: deque[tuple[Item, Future[Result]]],
    ) -> None:
        """Style a batch and queue its encodes on ``encoding``, each as it is
        handed to the encoders (a stop drains what is queued)."""
        try:
            images = [image.rgb for _, image in batch]
            outputs = self.stylizer.apply_batch(images, self.options.keep_colours)
        except BadModelError:
            raise  # the model breaks its own promises: a model error, once, for the run
        except Exception as exc:  # e.g. out of memory, or NaN out of the model
            if len(batch) > 1:  # find which image it was: each alone
                for one in batch:
                    self._infer([one], encoding)
                return
            item = batch[0][0]
            failed = Result(str(item.job.input), None, "failed", _reason(exc), _ms(item))
            encoding.append((item, _done(failed)))
            return
        for (item, image), rgb in zip(batch, outputs, strict=True):
            # Queued before it is handed over: a stop at any moment drains it
            # (it is done only if an encoder ran it).
            slot: Future[Result] = Future()
            encoding.append((item, slot))
            self.encoders.submit(self._encode_into, slot, item, image, rgb)

    def _encode_into(
        self, slot: Future[Result], item: Item, image: imageio.DecodedImage, rgb: np.ndarray
    ) -> None:
        try:
            slot.set_result(self._encode(item, image, rgb))
        except BaseException as exc:
            slot.set_exception(exc)

    def _encode(self, item: Item, image: imageio.DecodedImage, rgb: np.ndarray) -> Result:
        assert item.output is not None
        fmt, out = item.format, item.output
        notes = []
        if image.alpha is not None and fmt in ("JPEG", "BMP"):
            notes.append(f"{fmt} cannot store transparency: alpha dropped")
        if imageio.exif_too_long(image, fmt):
            notes.append(f"EXIF of {len(image.exif or b'')} bytes is too long for JPEG: dropped")
        try:
            imageio.save_image(out, rgb, image, fmt, self.options.quality, self.options.overwrite)
        except OutputExistsError as exc:  # made by someone else while this one was styled
            return Result(str(item.job.input), str(out), "skipped", exc.reason, _ms(item))
        except Exception as exc:
            return Result(str(item.job.input), str(out), "failed", _reason(exc), _ms(item))
        return Result(str(item.job.input), str(out), "ok", None, _ms(item), notes)


def _first(encoding: deque[tuple[Item, Future[Result]]]) -> Result:
    """The first encode's result, taken off once it is there (a stop while
    waiting for it leaves it to be reported when it finishes)."""
    result = encoding[0][1].result()
    encoding.popleft()
    return result


class _Pipeline:
    """A local run: the planner's items straight into one processor."""

    def __init__(self, stylizer: Stylizer, options: ApplyOptions) -> None:
        self.planner = Planner(options)
        self.processor = Processor(stylizer, options)

    def close(self) -> None:
        self.processor.close()

    def run(self, jobs: Iterable[Job]) -> Iterator[Result]:
        yield from self.processor.process(self.planner.plan_all(jobs))


#: Where a file is: its folder's identity (device, inode) and its name.
Place = tuple[str, int, int]


def _real(path: Path) -> str:
    """``path`` with every symbolic link resolved ('' for a name the OS refuses)."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return ""


def _source_stem(stem: str, suffix: str) -> str | None:
    """The stem of the source whose output has ``stem`` (None: no source's)."""
    if not suffix:
        return stem
    if not stem.endswith(suffix) or stem == suffix:
        return None
    return stem[: -len(suffix)]


def _settle(item: Item, status: Status, error: str | None = None) -> Item:
    """``item`` decided without decoding: failed, skipped or planned."""
    output = None if item.output is None else str(item.output)
    item.result = Result(str(item.job.input), output, status, error, _ms(item))
    return item


def model_input(rgb: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """H x W x 3 in [0, 1] -> 1 x C x H x W in the model's value range
    (averaged to grey for a one-channel model); NaN or infinity refused."""
    lo, hi = meta.value_range
    if not _finite(rgb):
        raise BadImageError("the image holds NaN or infinite values")
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
    if meta.in_channels == 1:
        x = x.mean(axis=1, keepdims=True)
    x *= hi - lo
    x += lo
    return x


def model_output(y: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """C x H x W in the model's range -> H x W x 3 in [0, 1] (in place: a
    6000x4000 image is 288 MB per float copy); NaN or infinity is an
    :class:`InferenceError` (that image fails)."""
    lo, hi = meta.value_range
    if not _finite(y):
        raise InferenceError("the model's output holds NaN or infinite values")
    out = np.ascontiguousarray(y[:3].transpose(1, 2, 0), dtype=np.float32)
    out -= lo
    out *= 1.0 / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out


def pad_for_model(x: np.ndarray, meta: ModelMetadata) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, C, H, W) padded to what the model runs on (a multiple of its size
    multiple, at least :attr:`ModelMetadata.min_side`), and the (H, W) to crop back to."""
    padded, size = tiling.pad_to_multiple(x, meta.size_multiple)
    return _pad_to_at_least(padded, meta.min_side), size


def _pad_to_at_least(x: np.ndarray, side: int) -> np.ndarray:
    """Pad (N, C, H, W) at the bottom and right, by mirroring, so that H and
    W are at least ``side`` (what is added is cropped off after the run)."""
    h, w = x.shape[-2:]
    if h >= side and w >= side:
        return x
    width = [(0, 0)] * (x.ndim - 2) + [(0, max(0, side - h)), (0, max(0, side - w))]
    return np.pad(x, width, mode="symmetric")


def _finite(x: np.ndarray) -> bool:
    """Whether every value of ``x`` is finite: one pass, no temporary array
    (a sum in float64 is NaN or infinite exactly when a value is, for values
    of any size a float32 holds)."""
    return bool(np.isfinite(np.add.reduce(x, axis=None, dtype=np.float64)))


def pixel_budget(ngf: int, memory: int = RUN_MEMORY_BYTES, paths: int = 0) -> int:
    """Pixels one session run may take so that it stays within ``memory``
    (``paths``: bytes a pixel its paths add, :func:`path_bytes`)."""
    return max(64 * 64, memory // (BYTES_PER_PIXEL_PER_NGF * max(ngf, 1) + max(paths, 0)))


def path_bytes(network: Any) -> int:
    """Bytes a pixel costs in a ResNet's colour, detail and smoothing paths,
    which work at full resolution whatever its ngf (0 without them)."""
    total = 0
    for name, per_unit in PATH_BYTES_PER_PIXEL.items():
        width = getattr(network, name, 0)
        if isinstance(width, int) and width > 0:
            total += per_unit * width + (SMOOTH_BYTES if name == "smooth" else 0)
    return total


def _reason(exc: BaseException) -> str:
    """One line for a failed input: styler's own reason, or the unexpected
    error's type and first line (never a traceback)."""
    if isinstance(exc, StylerError):
        return exc.reason
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 240:  # (a runtime's message ends with its cause: keep both ends)
        first = f"{first[:120]} ... {first[-115:]}"
    return f"unexpected {type(exc).__name__}: {first}".rstrip(": ")


def _ms(item: Item) -> float:
    return round((time.perf_counter() - item.started) * 1000, 1)


def _done(result: Result) -> Future[Result]:
    future: Future[Result] = Future()
    future.set_result(result)
    return future


def apply_paths(
    inputs: Iterable[str | Path],
    model: str | Path | None = None,
    options: ApplyOptions = ApplyOptions(),
    *,
    recursive: bool = True,
    device: str = "auto",
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Convenience: style files and folders, return every result."""
    from styler.paths import collect_jobs

    stylizer = Stylizer(model, device=device)
    jobs = collect_jobs(inputs, recursive=recursive, output_dir=options.output_dir)
    results = []
    for result in stylizer.apply_files(jobs, options):
        if progress:
            progress(result)
        results.append(result)
    logger.info("%d results", len(results))
    return results


__all__ = ["ApplyOptions", "BadImageError", "Result", "Stylizer", "apply_paths"]
