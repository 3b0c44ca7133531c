"""Bootstrap intervals over test scenes (BENCHMARKS.md's protocol: a claim carries its 95 % interval).

A score of a set of scenes -- average precision, count accuracy, a detection rate -- is recomputed on
scenes drawn with replacement from the scored ones; the interval is the percentiles of those
recomputed scores (the percentile bootstrap, Efron & Tibshirani 1993, ch. 13). The scenes are parsed
once: only the scoring is repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ppl_scenes.checks import check_positive_int

__all__ = ["bootstrap_interval"]


def bootstrap_interval(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    num_items: int,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of the scores ``statistic`` computes from a set of items.

    Args:
        statistic: maps an index array (items drawn with replacement, repeats allowed) to named scores.
        num_items: the number of items (scenes) scored.
        resamples: bootstrap draws.
        level: the interval's coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the draws (the interval is reproducible).

    Returns:
        ``{name: [low, high]}`` for every score that was finite in at least half of the draws.

    Raises:
        ValueError: on a non-positive ``num_items`` or ``resamples``, or ``level`` outside (0, 1).
    """
    num_items = check_positive_int(num_items, "num_items")
    resamples = check_positive_int(resamples, "resamples")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        for name, value in statistic(rng.integers(0, num_items, num_items)).items():
            if value is not None and math.isfinite(float(value)):
                draws.setdefault(name, []).append(float(value))
    tail = (1.0 - float(level)) / 2.0
    return {
        name: [float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))]
        for name, values in sorted(draws.items())
        if len(values) * 2 >= resamples
    }
