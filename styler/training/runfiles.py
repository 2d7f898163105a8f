"""Which files of a run folder are styler's own: what a run without step
checkpoints leaves (config.json, metrics, report, sample grids, its
exported models, its best checkpoint, styler's temporary files), so that a
fresh start there can set them aside (:meth:`RunFolder.set_aside
<styler.training.run.RunFolder.set_aside>`) and refuse anything else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from styler.errors import BadCheckpointError
from styler.fsutil import dead_writer
from styler.training import report, state
from styler.training.config import TrainConfig

#: What a run without step checkpoints writes: files in the run folder (and
#: its exported models, named by its domains) ...
_FIRST = frozenset({"config.json", "metrics.jsonl", "report.html", "curves.svg"})
#: ... and in its subfolders (in checkpoints/, at most the best one).
_FIRST_IN = {
    # (`styler export RUN` exports the best; NAME.kept: what a resume moved
    # aside rather than overwrite)
    "checkpoints": re.compile(
        r"best\.safetensors|(best|step_[0-9]{7,})\.safetensors\.kept(-[0-9]+)?"
    ),
    "samples": report.SAMPLE_NAME,
    "tensorboard": re.compile(r"events\.out\.tfevents\.[^/]*"),
}


#: Any name (of a file already known to be styler's).
_ANY = re.compile(r".*")

#: Where a fresh start set aside the files of the run before it.
_ASIDE = re.compile(r"earlier-[0-9]{8}-[0-9]{6}(-[0-9]+)?")


def reads(checkpoint: Path, config: TrainConfig) -> bool:
    """Whether ``checkpoint`` reads whole and is of ``config``'s run."""
    try:
        state.peek(checkpoint, config)
    except BadCheckpointError:
        return False
    return True


def exported_names(config: TrainConfig) -> frozenset[str]:
    """The model files a run of ``config`` writes in its folder (``styler
    train``'s export, ``styler export --fp16``, ``styler quantize``'s default)."""
    a, b = config.domains
    return frozenset(
        f"{name}{kind}.onnx"
        for name in (f"{a}_to_{b}", f"{b}_to_{a}", f"{a}_generator")
        for kind in ("", ".fp16", ".int8")
    )


def first_files(entries: list[os.DirEntry[str]], exported: frozenset[str]) -> list[Path] | None:
    """The files among ``entries`` (of a run folder) and in its subfolders
    if all are what a run without step checkpoints writes (``exported``:
    its models' names; folders set aside by earlier fresh starts are passed
    over), else None."""
    files = []
    for entry in entries:
        if _ASIDE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            continue
        if entry.name in _FIRST_IN and entry.is_dir(follow_symlinks=False):
            pattern = _FIRST_IN[entry.name]
            with os.scandir(entry.path) as inside:
                subs = list(inside)
            if not all(_ours(sub, pattern) for sub in subs):
                return None
            files += [Path(sub.path) for sub in subs]
        elif _ours(entry, None) or (entry.name in exported and _ours(entry, _ANY)):
            files.append(Path(entry.path))
        else:
            return None
    return files


def _ours(entry: os.DirEntry[str], pattern: re.Pattern[str] | None) -> bool:
    """A regular file of styler's: one of :data:`_FIRST` (``pattern`` None)
    or matching ``pattern``, or a temporary file whose writer was killed
    (one still being written is another process's work: not left over)."""
    named = entry.name in _FIRST if pattern is None else pattern.fullmatch(entry.name)
    return bool(named or dead_writer(entry.path)) and entry.is_file(follow_symlinks=False)


def only_set_aside(entries: list[os.DirEntry[str]]) -> list[Path] | None:
    """The temporary files whose writer was killed among ``entries`` (of a
    folder without config.json) if they are only what a fresh start that
    failed after its set-aside, or while writing its config.json, leaves:
    ``earlier-*`` folders, empty run subfolders and such files; else None."""
    dead = []
    for entry in entries:
        if dead_writer(entry.path) and entry.is_file(follow_symlinks=False):
            dead.append(Path(entry.path))
            continue
        if not entry.is_dir(follow_symlinks=False):
            return None
        if _ASIDE.fullmatch(entry.name):
            continue
        if entry.name not in _FIRST_IN:
            return None
        with os.scandir(entry.path) as inside:
            if next(inside, None) is not None:
                return None
    return dead
