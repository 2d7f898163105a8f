"""Stopping a run: the first Ctrl-C, SIGTERM or SIGHUP (the terminal or SSH
session closed) asks the training loop to save a checkpoint and stop; a
second Ctrl-C aborts at once. While the run finishes (its last checkpoint,
samples, report and export: seconds), a stop lets it finish. Each says what
it does, and an abort what ``--resume`` will do."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from styler.log import logger


class StopRequest:
    """The signal handler of a training run (see the module)."""

    def __init__(self, run_dir: Path, exports: bool = True) -> None:
        self.run_dir, self.exports = run_dir, exports
        self.requested = False
        #: The loop is past its last step, finishing the run.
        self.finishing = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            logger.warning("aborted: %s", self.what_resume_does())
            raise KeyboardInterrupt
        if self.requested:  # (said once)
            return
        self.requested = True
        if self.finishing:
            what = "its last checkpoint and models" if self.exports else "its last checkpoint"
            logger.warning("finishing the run (%s: seconds); Ctrl-C again aborts", what)
        else:
            logger.warning("stopping after this step, with a checkpoint; Ctrl-C again aborts")

    def what_resume_does(self) -> str:
        if any((self.run_dir / "checkpoints").glob("step_*.safetensors")):
            return f"`styler train --resume {self.run_dir}` goes on from its last checkpoint"
        return "no checkpoint was saved yet: training again starts afresh"

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # A signal the process inherited as ignored (SIGINT in a job started
        # with `&` from a script) stays ignored, as it does for `styler apply`.
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        wanted = [s for s in stops if signal.getsignal(s) != signal.SIG_IGN]
        old = {s: signal.signal(s, self) for s in wanted}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
