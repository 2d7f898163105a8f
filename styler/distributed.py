"""`styler apply --ray`: the same run as a local one, on Ray actors.

The driver (the process that calls this module) lists the inputs and plans
every output with the local :class:`~styler.apply.Planner`: header-level
reads only, so the checks that no input is ever overwritten and that no two
inputs write one file hold exactly as in a local run. Planned items go, in
blocks, to Ray actors that each hold one :class:`~styler.apply.Stylizer`
(one onnxruntime session: on the CPU, or on one GPU each) and run the local
:class:`~styler.apply.Processor` over their block. Decoding, styling and
atomic encoding are therefore the local code, and the results are the same
:class:`~styler.apply.Result` records, in input order.

Back-pressure: at most two blocks per actor are in flight, so the driver
holds paths (as a local run does, to check every output against every
input) and a bounded number of blocks, never an image, whatever the number
of images.

Failures: a bad file is a failed result, as locally. A worker that dies
mid-block (killed, out of memory, a node lost) is restarted by Ray and its
block retried (``max_task_retries``); a block that kills its worker every
time is retried image by image, so that only the image that kills it fails.
Outputs are written atomically, so a killed worker leaves no half-written
output, only a hidden temporary file that the next run removes.

Every node reads and writes the same paths: the inputs, the output folder
and the model lie on storage that every node mounts at the same place, and
each actor works in the driver's working folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from styler.apply import ApplyOptions, Item, Planner, Processor, Result, Stylizer, check_model
from styler.errors import DeviceError, StylerError, UsageError
from styler.fsutil import process_alive, remove_stale_parts
from styler.log import logger
from styler.paths import Job, collect_jobs
from styler.runtime import DEVICES, Model

RAY_MISSING = "--ray needs Ray: pip install 'styler[ray]'"
#: Images to style in one block (one actor call).
BLOCK_SIZE = 16
#: Blocks in flight per actor: one running, one waiting (no idle gap).
BLOCKS_PER_ACTOR = 2
#: How often Ray runs a block again after its worker died.
TASK_RETRIES = 3
#: What ``--ray ADDRESS`` may be: auto (the cluster this machine is in),
#: local (start one here), ray://HOST:PORT (Ray Client) or HOST:PORT.
ADDRESS = re.compile(r"auto|local|ray://\S+|[\w.-]+:\d+|\[[0-9a-fA-F:]+\]:\d+")


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def check_address(address: str) -> str:
    """``address`` if it is one :data:`ADDRESS` takes, else a usage error."""
    if not ADDRESS.fullmatch(address):
        raise UsageError(
            f"--ray {address!r}: not a Ray address (auto, local, HOST:PORT or "
            "ray://HOST:PORT); write --ray=ADDRESS, or --ray alone to start Ray here"
        )
    return address


@contextlib.contextmanager
def connect(address: str | None = None) -> Iterator[None]:
    """Ray for the length of a run. A Ray the caller started already is used
    as it is. Otherwise ``address`` is joined (``auto``: the cluster this
    machine is part of), or with None (or ``local``) a Ray is started on this
    machine with all its CPUs and no dashboard, and stopped at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    _check_startable()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if address in (None, "local"):
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
        else:
            ray.init(address=check_address(address), **quiet)
    except SystemExit as exc:  # Ray's own handler took a SIGTERM while it started
        _restore(handlers)
        if exc.code in (signal.SIGTERM, signal.SIGHUP):
            signal.raise_signal(signal.Signals(exc.code))  # as the caller handles it
        raise
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        where = f"the Ray cluster at {address}" if address not in (None, "local") else "Ray"
        filename = getattr(exc, "filename", None)
        why = f"{filename}: {exc.strerror}" if filename and exc.strerror else _first_line(exc)
        raise UsageError(f"cannot start or join {where}: {why}") from None
    # Ray's core worker puts its own SIGTERM handler (a stack dump, then
    # death) in place of the caller's: `styler apply` stops cleanly on it.
    _restore(handlers)
    try:
        yield
    finally:
        ray.shutdown()


def _restore(handlers: Mapping[int, Any]) -> None:
    if threading.current_thread() is threading.main_thread():
        for s, handler in handlers.items():
            if handler is not None:
                signal.signal(s, handler)


def _check_startable() -> None:
    """What Ray needs of this process before it starts: a working folder
    (the actors work in it) and a command line it can send as UTF-8."""
    try:
        os.getcwd()
    except OSError as exc:
        raise UsageError(
            f"--ray needs a working folder (the actors work in it): {exc.strerror}; "
            "cd to an existing folder"
        ) from None
    try:
        with open("/proc/self/cmdline", "rb") as f:
            f.read().decode("utf-8")
    except OSError:
        pass  # not Linux: nothing to check
    except UnicodeDecodeError:
        raise UsageError(
            "--ray: Ray cannot take a command line holding a name that is not UTF-8; "
            "give such paths on stdin instead (for example: find DIR -print0 | "
            "styler apply -0 - --ray ...)"
        ) from None


@dataclass(frozen=True)
class WorkerPlan:
    """How many actors style, and what each one reserves."""

    count: int
    num_cpus: float
    num_gpus: float
    #: What each actor's onnxruntime session runs on ("cpu" or "cuda").
    device: str
    #: onnxruntime's CPU threads in each actor (None: its default).
    threads: int | None

    def describe(self) -> str:
        each = "one GPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        return f"Ray, {self.count} actor{'s' * (self.count != 1)} ({each} each)"


def plan_workers(
    device: str,
    resources: Mapping[str, float],
    *,
    threads: int | None = None,
    actors: int | None = None,
    node_cpus: float | None = None,
) -> WorkerPlan:
    """The actors for ``device`` on a cluster with ``resources``
    (``ray.cluster_resources()``). CUDA (asked for, or ``auto`` on a cluster
    with GPUs): one actor per GPU, each reserving one; CUDA asked for on a
    cluster without GPUs is an error, never a silent fallback. CPU: one actor
    per ``threads`` CPUs (default 1), each session given that many threads.
    ``actors`` overrides the count. ``node_cpus``, the most CPUs one node
    has: an actor asking for more could never be placed (a usage error, not
    a wait without end)."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    if actors is not None and actors < 1:
        raise UsageError(f"actors must be at least 1, got {actors}")
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    if device == "cuda" and gpus == 0:
        raise DeviceError("--device cuda: the Ray cluster has no GPU; use --device cpu")
    if device == "cuda" or (device == "auto" and gpus > 0):
        return WorkerPlan(actors or gpus, 1, 1, "cuda", threads)
    per_actor = threads or 1
    if node_cpus is not None and per_actor > node_cpus:
        raise UsageError(
            f"--threads {per_actor}: no Ray node has {per_actor} CPUs (the largest has "
            f"{node_cpus:g}); give at most that"
        )
    return WorkerPlan(actors or max(1, cpus // per_actor), per_actor, 0, "cpu", per_actor)


class StyleWorker:
    """One Ray actor: one Stylizer, styling blocks of planned items with the
    local Processor, in the driver's working folder (relative paths mean on
    every node what they mean on the driver)."""

    def __init__(
        self,
        model: str,
        device: str,
        threads: int | None,
        tile: int | None,
        options: ApplyOptions,
        cwd: str,
    ) -> None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise UsageError(
                f"the driver's working folder is not on this node ({exc.strerror}): "
                "--ray needs the same paths on every node (shared storage)",
                cwd,
            ) from None
        self.stylizer = Stylizer(model, device=device, threads=threads, tile=tile)
        self.options = options

    def ready(self) -> int:
        """The actor's process id, once its session is open."""
        return os.getpid()

    def style(self, items: list[Item]) -> list[Result]:
        processor = Processor(self.stylizer, self.options)
        try:
            return list(processor.process(items))
        finally:
            processor.close()


class _Pool:
    """The actors of one run: started when the first block needs them, each
    block sent to the actor with the fewest unfinished blocks, all killed at
    the end (they hold a session and reserve CPUs or a GPU)."""

    def __init__(self, ray: ModuleType, plan: WorkerPlan, args: tuple[Any, ...]) -> None:
        self.ray = ray
        self.plan = plan
        self.args = args
        self.actors: list[Any] = []
        #: Each actor's ``ready`` call: its process id, once it has started.
        self.started: list[Any] = []
        self.unfinished: list[list[Any]] = []

    def _start(self) -> None:
        remote = self.ray.remote(StyleWorker)
        run = uuid.uuid4().hex[:8]
        self.actors = [
            remote.options(
                name=f"styler-apply-{run}-{i}",
                num_cpus=self.plan.num_cpus,
                num_gpus=self.plan.num_gpus,
                max_restarts=-1,
                max_task_retries=TASK_RETRIES,
            ).remote(*self.args)
            for i in range(self.plan.count)
        ]
        self.unfinished = [[] for _ in self.actors]
        # Wait for one actor only (the others may wait for resources that a
        # busy cluster frees later): one that cannot start (a model it cannot
        # open, a device it lacks) is an error for the run, here or on its
        # first block.
        self.started = [actor.ready.remote() for actor in self.actors]
        first, _ = self.ray.wait(self.started, num_returns=1)
        logger.info(
            "%s starting (the first in process %s)", self.plan.describe(), _get(self.ray, first[0])
        )

    def submit(self, items: list[Item]) -> Any:
        if not self.actors:
            self._start()
        for refs in self.unfinished:
            if refs:
                done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
                refs[:] = [r for r in refs if r not in done]
        i = min(range(len(self.actors)), key=lambda k: len(self.unfinished[k]))
        ref = self.actors[i].style.remote(items)
        self.unfinished[i].append(ref)
        return ref

    def close(self) -> list[int]:
        """Kill the actors; the process ids of those that were still styling
        (on this node: their temporary files can be told apart by them)."""
        pids = []
        busy = [ref for refs in self.unfinished for ref in refs]
        if busy and len(self.ray.wait(busy, num_returns=len(busy), timeout=0)[0]) < len(busy):
            done, _ = self.ray.wait(self.started, num_returns=len(self.started), timeout=0)
            pids = [int(self.ray.get(ref)) for ref in done]
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        return pids


def _remove_parts_of(pids: list[int], folders: Iterable[Path]) -> None:
    """Once the killed actors ``pids`` have exited (a few seconds at most),
    remove the temporary files they left in ``folders`` (styler's names
    carry the writer's process id; another writer's files are kept)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(process_alive(pid) for pid in pids):
        time.sleep(0.1)
    for folder in folders:
        for stale in remove_stale_parts(folder):
            logger.info("removed %s, left by a stopped actor", stale)


@dataclass
class _Block:
    """Items in input order; those still to style went to an actor as ``ref``."""

    items: list[Item]
    todo: list[Item] = field(default_factory=list)
    ref: Any = None


class RayStylizer:
    """A model ready to style files on Ray, as :class:`~styler.apply.Stylizer`
    does locally. Needs a running Ray (:func:`connect`, or ``ray.init()``).
    The model is checked here, on the driver, before any actor starts.

    >>> with connect():                                          # doctest: +SKIP
    ...     stylizer = RayStylizer("model.onnx", device="cpu")
    ...     for result in stylizer.apply_files(collect_jobs(["photos/"])):
    ...         print(result.status, result.output)
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        threads: int | None = None,
        tile: int | None = None,
        actors: int | None = None,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        from styler.shipped import resolve_model

        self.ray = import_ray()
        if not self.ray.is_initialized():
            raise UsageError("Ray is not running: call ray.init() or use distributed.connect()")
        if block_size < 1:
            raise UsageError(f"block size must be at least 1, got {block_size}")
        self.path = os.path.abspath(resolve_model(model))
        checked = Model.open(self.path, device="cpu", threads=1)
        check_model(checked, tile)
        self.meta = checked.meta
        del checked  # the driver needs the metadata only, not a session
        self.tile = tile
        self.block_size = block_size
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        self.plan = plan_workers(
            device,
            self.ray.cluster_resources(),
            threads=threads,
            actors=actors,
            node_cpus=max((float(r.get("CPU", 0)) for r in nodes), default=None),
        )

    def apply_files(
        self, jobs: Iterable[Job], options: ApplyOptions = ApplyOptions()
    ) -> Iterator[Result]:
        """Style every job's input into ``options.output_dir``: one result
        per job, in order, the same as :meth:`Stylizer.apply_files`."""
        args = (self.path, self.plan.device, self.plan.threads, self.tile, options, os.getcwd())
        pool = _Pool(self.ray, self.plan, args)
        planner = Planner(options)
        try:
            yield from self._stream(planner.plan_all(jobs), pool)
        finally:
            pids = pool.close()
            if pids:  # stopped early: what the killed actors were writing
                _remove_parts_of(pids, planner.cleaned)

    def _stream(self, items: Iterator[Item], pool: _Pool) -> Iterator[Result]:
        window: deque[_Block] = deque()
        for block in _blocks(items, self.block_size):
            if block.todo:
                block.ref = pool.submit(block.todo)
            window.append(block)
            while window and (
                len(window) > BLOCKS_PER_ACTOR * self.plan.count or self._ready(window[0])
            ):
                yield from self._collect(window.popleft(), pool)
        while window:
            yield from self._collect(window.popleft(), pool)

    def _ready(self, block: _Block) -> bool:
        return block.ref is None or bool(self.ray.wait([block.ref], timeout=0)[0])

    def _collect(self, block: _Block, pool: _Pool) -> Iterator[Result]:
        styled = iter(self._results(block.todo, block.ref, pool) if block.todo else [])
        for item in block.items:
            yield item.result if item.result is not None else next(styled)

    def _results(self, items: list[Item], ref: Any, pool: _Pool) -> list[Result]:
        """The block's results; a block whose worker died on every retry is
        tried again image by image, and an image that still kills it fails."""
        try:
            return _get(self.ray, ref)
        except _WorkerDied as died:
            if len(items) > 1:
                logger.warning("a Ray worker died %s; retrying its block image by image", died)
                refs = [pool.submit([item]) for item in items]
                pairs = zip(items, refs, strict=True)
                return [r for item, one in pairs for r in self._results([item], one, pool)]
            reason = f"the Ray worker styling it died {TASK_RETRIES + 1} times ({died})"
            item = items[0]
            output = None if item.output is None else str(item.output)
            return [Result(str(item.job.input), output, "failed", reason)]


def _blocks(items: Iterator[Item], size: int) -> Iterator[_Block]:
    """Items in order, in blocks of ``size`` items to style; items the
    planner settled (skipped, failed) ride along, at most ``4 * size`` in a
    block, so that a rerun that skips everything still streams."""
    block = _Block([])
    for item in items:
        block.items.append(item)
        if item.result is None:
            block.todo.append(item)
        if len(block.todo) >= size or len(block.items) >= 4 * size:
            yield block
            block = _Block([])
    if block.items:
        yield block


class _WorkerDied(Exception):
    """The worker running a block died on every retry."""


def _get(ray: ModuleType, refs: Any) -> Any:
    """``ray.get``, with styler's own errors raised as themselves (a bad
    model is a model error for the run) and a dead worker as :class:`_WorkerDied`."""
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, StylerError):
            raise exc.cause from None
        raise
    except RayActorError as exc:
        init_error = _init_error(exc)
        if init_error is not None:
            raise init_error from None
        raise _WorkerDied(_first_line(exc)) from None
    except WorkerCrashedError as exc:
        raise _WorkerDied(_first_line(exc)) from None


def _init_error(exc: Exception) -> StylerError | None:
    """Why an actor could not start (a model it cannot open, a device it
    does not have, a folder not on its node), when that is why it is dead:
    the styler error its constructor raised, which Ray passes on as text."""
    if not getattr(exc, "actor_init_failed", False):
        return None
    ours = [line for line in str(exc).splitlines() if line.startswith("styler.errors.")]
    reason = ours[-1].split(": ", 1)[-1] if ours else _first_line(exc)
    return StylerError(f"a Ray actor could not start: {reason}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def apply_dataset(
    paths_or_dataset: Any,
    model: str | Path | None = None,
    options: ApplyOptions = ApplyOptions(),
    *,
    recursive: bool = True,
    device: str = "auto",
    threads: int | None = None,
    tile: int | None = None,
    actors: int | None = None,
    address: str | None = None,
) -> Iterator[Result]:
    """Style files, folders, or a Ray Dataset's ``path`` column on Ray: one
    :class:`~styler.apply.Result` per input, in order (a dataset's rows in
    the order it yields them: set Ray Data's ``preserve_order`` for a
    deterministic one), the same as a local run. Uses the Ray already
    started, else joins ``address`` (or starts one here) for the length of
    the run. Paths are read as ``styler apply``
    reads its arguments: a folder's tree is mirrored below the output
    folder, a file named by a relative path keeps that path."""
    with connect(address):
        stylizer = RayStylizer(model, device=device, threads=threads, tile=tile, actors=actors)
        paths = _paths(paths_or_dataset)
        jobs = collect_jobs(paths, recursive=recursive, output_dir=options.output_dir)
        yield from stylizer.apply_files(jobs, options)


def _paths(source: Any) -> Iterable[str | Path]:
    """Paths from a path, a list of paths, or a Ray Dataset with a ``path``
    column (streamed to the driver, that column only)."""
    if isinstance(source, (str, Path)):
        return [source]
    if hasattr(source, "iter_rows") and hasattr(source, "select_columns"):
        if "path" not in (source.columns() or []):
            raise UsageError("a dataset of images to style needs a 'path' column")
        return (row["path"] for row in source.select_columns(["path"]).iter_rows())
    return source


__all__ = ["RayStylizer", "WorkerPlan", "apply_dataset", "connect", "plan_workers"]
