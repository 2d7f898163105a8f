"""The learning-rate schedule: a pure function of the step."""

from __future__ import annotations


def lr_factor(step: int, steps: int, decay_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): 1 for the first
    ``steps - decay_steps`` steps, then falling linearly, reaching 0 after the
    last step (CycleGAN's "linear" policy, counted in steps)."""
    constant = steps - decay_steps
    if step < constant or decay_steps == 0:
        return 1.0
    return max(0.0, 1.0 - (step - constant + 1) / (decay_steps + 1))
