"""A shipped card beside its command re-run with other seeds: the numbers both ``reproduce.py`` (into
the card) and ``report.py`` (into BENCHMARKS.md) give. Pure Python, so the report needs no torch."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def seed_spread(targets: Iterable[str], card: dict, reruns: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per target score: the reruns' test values (in ``reruns``' order), whether each lies inside the
    card's 95 % test interval (its sampling error over the test scenes), and the mean and sample sd
    over the card's seed and the reruns (BENCHMARKS.md protocol, rule 3; a missing value is left out,
    the sd is None below two values).

    Args:
        card: the card's ``test`` and ``test_intervals``; reruns: records with ``test`` each.
    """
    spread = {}
    for key in targets:
        low, high = card["test_intervals"].get(key, (None, None))
        tests = [d["test"].get(key) for d in reruns]
        values = [v for v in [card["test"].get(key), *tests] if v is not None]
        spread[key] = {
            "reruns": tests,
            "inside_card_interval": [low is not None and v is not None and low <= v <= high for v in tests],
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "seeds": len(values),
        }
    return spread
