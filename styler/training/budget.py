"""A run measured in time, not steps (``styler train --time 1h``).

The budget is the wall time of the training loop: the steps and what runs
between them (samples, scores, checkpoints). Loading the data before the
first step and exporting after the last are not in it (a few seconds to a
minute; ``styler train`` prints both).

The learning-rate schedule has the usual shape (constant, then a linear
decay to zero) laid out over the budget: the rate at any moment follows the
share of the budget spent, so the run ends on time with its rate at zero
whatever the machine's speed does meanwhile. The step count, which samples
and checkpoints are spaced by, is estimated from the speed of the first
steps and revised twice; it is stored in the run's config. A resumed run
spends only what is left of its budget (its checkpoint says what was
spent); unlike a run measured in steps, it is not bit-exact with an
uninterrupted one, since its schedule follows the clock.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from styler.errors import UsageError

#: Steps timed before the first estimate (the first step, slower than the
#: others while the allocator and the kernels warm up, is one of them) ...
CALIBRATION_STEPS = 8
#: ... and at least this share of the budget.
CALIBRATION_SHARE = 0.02
#: After the first estimate, the shares of the budget where it is revised.
REVISIONS = (0.25, 0.5)
#: The step count before the first estimate: large enough never to end the
#: run, its decay far away.
PROVISIONAL_STEPS = 10**8

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``1h``, ``1h30m`` or a plain number of
    seconds (each unit at most once, the larger first); a :class:`UsageError`
    for anything else (``1h1h``, ``30m1h``)."""
    s = text.strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        parts = _DURATION.findall(s)
        scales = [_UNITS[unit] for _, unit in parts]
        ordered = all(a > b for a, b in itertools.pairwise(scales))
        if not parts or _DURATION.sub("", s).strip() or not ordered:
            raise UsageError(
                f"--time {text!r}: give a duration such as 90s, 30m, 1h or 1h30m"
            ) from None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    if not math.isfinite(seconds) or not 1 <= seconds <= 365 * 86400:
        raise UsageError(f"--time {text!r}: between one second and a year")
    return seconds


def time_lr_factor(spent: float, decay: float) -> float:
    """The learning-rate multiplier after the share ``spent`` of a budget."""
    constant = 1.0 - decay
    if spent < constant or decay <= 0:
        return 1.0
    return max(0.0, 1.0 - (spent - constant) / decay)


def format_duration(seconds: float) -> str:
    """``1h``, ``1h30m``, ``30m``, ``90s`` (the reverse of :func:`parse_duration`)."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s else ""]
    return "".join(parts) or "0s"


@dataclass
class Budget:
    """The clock of a run with a time budget of ``seconds``, of which
    ``spent`` went before this process (a resumed run)."""

    seconds: float
    spent: float = 0.0
    #: Share of the run whose learning rate decays (the config's).
    decay: float = 0.5
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    first_step: int = field(init=False, default=0)
    revised: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def start(self, step: int) -> None:
        """The loop begins at ``step`` (0, or where a resume begins)."""
        self.first_step = step
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.spent + (self.clock() - self.started)

    @property
    def over(self) -> bool:
        return self.elapsed() >= self.seconds

    def lr_factor(self) -> float:
        """The learning-rate multiplier now: 1 for the first ``1 - decay``
        of the budget, then falling linearly to 0 at its end."""
        return time_lr_factor(self.elapsed() / self.seconds, self.decay)

    def estimate(self, done: int, steps: int) -> int | None:
        """The run's total step count after ``done`` steps of ``steps``, when
        an estimate is due (after the first steps are timed, then at a
        quarter and at half of the budget, and whenever the count is reached
        with time left), else None: from the speed of this process so far,
        the steps the rest of the budget holds."""
        ran = done - self.first_step
        here = self.clock() - self.started
        if done < steps:
            if self.revised > len(REVISIONS):
                return None
            if self.revised == 0:
                if ran < CALIBRATION_STEPS or here < CALIBRATION_SHARE * self.seconds:
                    return None
            elif self.elapsed() < REVISIONS[self.revised - 1] * self.seconds:
                return None
            self.revised += 1
        left = max(0.0, self.seconds - self.elapsed())
        return done + max(1, math.floor(left * max(ran, 1) / max(here, 1e-9)))
