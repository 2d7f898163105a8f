"""Stopping a run: the first Ctrl-C, SIGTERM or SIGHUP (the terminal or SSH
session closed) asks the training loop to save a checkpoint and stop; a
second Ctrl-C aborts at once. While the run finishes (its last checkpoint,
samples, report and export: seconds), a stop lets it finish and says so."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from styler.log import logger


class StopRequest:
    """The signal handler of a training run (see the module)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.requested = False
        #: The loop is past its last step, finishing the run.
        self.finishing = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            if self.finishing:
                logger.warning(
                    "aborted while finishing the run: `styler train --resume %s` finishes it",
                    self.run_dir,
                )
            raise KeyboardInterrupt
        self.requested = True
        if self.finishing:
            logger.warning(
                "finishing the run (its last checkpoint and export, seconds); "
                "Ctrl-C again aborts it, and `styler train --resume %s` finishes it later",
                self.run_dir,
            )

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
