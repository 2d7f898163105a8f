"""Watching a run: a rich live panel on a terminal, plain log lines elsewhere,
or nothing. All of it goes to stderr; stdout stays for results."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

from styler.training.budget import PROVISIONAL_STEPS

#: Steps over which speed and ETA are measured.
RATE_WINDOW = 50


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


class Smoother:
    """Exponential moving averages of the losses, for display only."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.values: dict[str, float] = {}

    def update(self, losses: dict[str, float]) -> dict[str, float]:
        for k, v in losses.items():
            old = self.values.get(k)
            self.values[k] = v if old is None else self.beta * old + (1 - self.beta) * v
        return dict(self.values)


class Display:
    """Quiet: shows nothing."""

    def __init__(self, total: int, start: int, loss_names: Sequence[str]) -> None:
        self.total = total
        self.start_step = start
        self.loss_names = list(loss_names)
        self.smoother = Smoother()
        self.started = time.perf_counter()
        self.step = start
        self.recent: deque[tuple[float, int]] = deque([(self.started, start)], maxlen=RATE_WINDOW)

    def rate(self) -> float:
        """Seconds per step over the last steps (the machine's load changes)."""
        if len(self.recent) < 2:
            return float("nan")
        (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 else float("nan")

    def eta(self) -> float:
        if self.total >= PROVISIONAL_STEPS:
            return float("nan")
        return self.rate() * (self.total - self.step)

    def update(self, step: int, losses: dict[str, float], lr: float) -> None:
        self.step = step
        self.recent.append((time.perf_counter(), step))
        self.smoother.update(losses)

    def note(self, message: str) -> None:
        del message

    def set_total(self, total: int) -> None:
        """The run's length changed (a time budget's estimate)."""
        self.total = total

    def close(self) -> None:
        pass

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainDisplay(Display):
    """A log line every ``interval`` seconds (and at the first and last step)."""

    def __init__(
        self,
        total: int,
        start: int,
        loss_names: Sequence[str],
        stream: TextIO | None = None,
        interval: float = 30.0,
    ) -> None:
        super().__init__(total, start, loss_names)
        self.stream = stream or sys.stderr
        self.interval = interval
        self.last = 0.0

    def line(self, lr: float) -> str:
        losses = "  ".join(f"{k} {v:.3f}" for k, v in self.smoother.values.items())
        if self.total >= PROVISIONAL_STEPS:  # a time budget, not yet measured
            where = f"step {self.step} (timing the first steps)"
        else:
            pct = 100 * self.step / max(self.total, 1)
            where = f"step {self.step}/{self.total} ({pct:.1f}%)"
        return (
            f"{where}  {self.rate():.2f} s/step  "
            f"eta {format_duration(self.eta())}  lr {lr:.2e}  {losses}"
        )

    def update(self, step: int, losses: dict[str, float], lr: float) -> None:
        super().update(step, losses, lr)
        now = time.perf_counter()
        if now - self.last >= self.interval or step in (self.start_step + 1, self.total):
            self.last = now
            print(f"styler: {self.line(lr)}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"styler: {message}", file=self.stream, flush=True)


class LiveDisplay(Display):
    """A progress bar with steps/s and ETA, and a table of the current
    (smoothed) losses, redrawn in place."""

    def __init__(self, total: int, start: int, loss_names: Sequence[str]) -> None:
        super().__init__(total, start, loss_names)
        from rich import progress as bar
        from rich.console import Console, Group
        from rich.live import Live

        self.console = Console(stderr=True)
        self.progress = bar.Progress(
            bar.SpinnerColumn(),
            bar.TextColumn("training"),
            bar.BarColumn(),
            bar.MofNCompleteColumn(),
            bar.TextColumn("{task.fields[speed]}"),
            bar.TimeElapsedColumn(),
            bar.TextColumn("eta"),
            bar.TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, speed="")
        self._group = Group
        self.lr = 0.0
        self.notes: list[str] = []
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=4, transient=False
        )
        self.live.start()

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        names = [k for k in self.loss_names if k in self.smoother.values]
        for k in names:
            table.add_column(k, justify="right")
        table.add_column("lr", justify="right")
        if names:
            table.add_row(*(f"{self.smoother.values[k]:.3f}" for k in names), f"{self.lr:.2e}")
        parts: list[Any] = [self.progress, table]
        parts += [Text(n, style="dim") for n in self.notes[-3:]]  # never read as markup
        return self._group(*parts)

    def update(self, step: int, losses: dict[str, float], lr: float) -> None:
        super().update(step, losses, lr)
        self.lr = lr
        rate = self.rate()
        speed = f"{rate:.2f} s/step" if rate >= 1 or rate != rate else f"{1 / rate:.1f} steps/s"
        self.progress.update(self.task, completed=step, speed=speed)
        self.live.update(self._render())

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.live.update(self._render())

    def set_total(self, total: int) -> None:
        super().set_total(total)
        self.progress.update(self.task, total=total)

    def close(self) -> None:
        self.live.stop()


def make_display(kind: str, total: int, start: int, loss_names: Sequence[str]) -> Display:
    """``auto``: live on a terminal, plain lines otherwise; or ``live``,
    ``plain``, ``quiet``."""
    if kind == "auto":
        kind = "live" if sys.stderr.isatty() else "plain"
    if kind == "live":
        return LiveDisplay(total, start, loss_names)
    if kind == "plain":
        return PlainDisplay(total, start, loss_names)
    if kind == "quiet":
        return Display(total, start, loss_names)
    raise ValueError(f"unknown display {kind!r}: expected auto, live, plain or quiet")
