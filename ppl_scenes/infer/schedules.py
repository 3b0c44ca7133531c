"""Schedules for annealed quantities: plain callables of the training step."""

from __future__ import annotations

import math
from collections.abc import Callable


def constant_schedule(value: float) -> Callable[[int], float]:
    """Always ``value``."""
    return lambda step: value


def linear_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """From ``start`` at step 0 to ``end`` at ``steps`` in a straight line, then ``end``."""

    def schedule(step: int) -> float:
        if steps <= 0 or step >= steps:
            return end
        return start + (end - start) * step / steps

    return schedule


def exponential_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """From ``start`` to ``end`` geometrically (linear in log space) over ``steps``, then ``end``.

    Both values must be positive; suited to probabilities spanning orders of magnitude.
    """
    if start <= 0 or end <= 0:
        raise ValueError("exponential_schedule needs positive start and end values")
    log_start, log_end = math.log(start), math.log(end)

    def schedule(step: int) -> float:
        if steps <= 0 or step >= steps:
            return end
        return math.exp(log_start + (log_end - log_start) * step / steps)

    return schedule
