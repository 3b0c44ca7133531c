"""Schedules for annealed quantities: plain callables of the training step.

Each schedule maps a step (an int, 0 at the start of training) to a float: it holds ``start`` at
step 0 and before, moves to ``end`` over ``steps`` steps, and holds ``end`` from step ``steps`` on.
``steps=0`` gives ``end`` from the start.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ppl_scenes.checks import check_non_negative


def _check_value(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _fraction(step: int, steps: int) -> float:
    if steps == 0 or step >= steps:
        return 1.0
    return max(step, 0) / steps


def constant_schedule(value: float) -> Callable[[int], float]:
    """Always ``value``."""
    value = _check_value(value, "value")
    return lambda step: value


def linear_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """From ``start`` at step 0 to ``end`` at ``steps`` in a straight line, then ``end``."""
    start, end = _check_value(start, "start"), _check_value(end, "end")
    steps = check_non_negative(steps, "steps", integer=True)

    def schedule(step: int) -> float:
        fraction = _fraction(step, steps)
        return end if fraction == 1.0 else start + (end - start) * fraction

    return schedule


def exponential_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """From ``start`` to ``end`` geometrically (linear in log space) over ``steps``, then ``end``.

    Both values must be positive; suited to probabilities spanning orders of magnitude.
    """
    start, end = _check_value(start, "start"), _check_value(end, "end")
    steps = check_non_negative(steps, "steps", integer=True)
    if start <= 0 or end <= 0:
        raise ValueError("exponential_schedule needs positive start and end values")
    log_start, log_end = math.log(start), math.log(end)

    def schedule(step: int) -> float:
        fraction = _fraction(step, steps)
        return end if fraction == 1.0 else math.exp(log_start + (log_end - log_start) * fraction)

    return schedule
