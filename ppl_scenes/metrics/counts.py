"""Object-count metrics: accuracy and mean absolute error of the predicted number of objects.

SPAIR (Crawford & Pineau 2019, Fig. 3) plots both against the true number of objects; the
per-count grouping here is what :func:`ppl_scenes.viz.plot_metric_by_count` draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from ppl_scenes.metrics._validation import as_1d_array, check_pair

__all__ = ["count_accuracy", "count_mae", "count_metrics_by_true_count"]

Counts = Tensor | np.ndarray | Sequence[int]


def _counts(pred_counts: Counts, true_counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    pred = as_1d_array(pred_counts, "pred_counts", integer=True)
    true = as_1d_array(true_counts, "true_counts", integer=True)
    check_pair(pred, true, ("pred_counts", "true_counts"))
    if (pred < 0).any() or (true < 0).any():
        raise ValueError("counts must be non-negative")
    return pred, true


def count_accuracy(pred_counts: Counts, true_counts: Counts) -> float:
    """Fraction of images whose predicted object count equals the true count.

    Args:
        pred_counts: predicted counts, one per image (tensor, array or sequence of whole numbers).
        true_counts: true counts, same length.

    Returns:
        Accuracy in [0, 1] (SPAIR's "0-1 error" is one minus this).

    Raises:
        ValueError: on empty or differently sized inputs, non-integer, negative or non-finite counts.
    """
    pred, true = _counts(pred_counts, true_counts)
    return float(np.mean(pred == true))


def count_mae(pred_counts: Counts, true_counts: Counts) -> float:
    """Mean absolute difference between predicted and true object counts.

    Args:
        pred_counts: predicted counts, one per image.
        true_counts: true counts, same length.

    Returns:
        Mean of ``|pred - true|`` over images.

    Raises:
        ValueError: as :func:`count_accuracy`.
    """
    pred, true = _counts(pred_counts, true_counts)
    return float(np.mean(np.abs(pred - true)))


def count_metrics_by_true_count(pred_counts: Counts, true_counts: Counts) -> dict[int, dict]:
    """Count accuracy and MAE grouped by the true number of objects.

    Args:
        pred_counts: predicted counts, one per image.
        true_counts: true counts, same length.

    Returns:
        ``{true_count: {"accuracy": float, "mae": float, "n": number of images}}`` for every true
        count that occurs, keys ascending.

    Raises:
        ValueError: as :func:`count_accuracy`.
    """
    pred, true = _counts(pred_counts, true_counts)
    out: dict[int, dict] = {}
    for c in np.unique(true):
        sel = true == c
        out[int(c)] = {
            "accuracy": float(np.mean(pred[sel] == c)),
            "mae": float(np.mean(np.abs(pred[sel] - c))),
            "n": int(sel.sum()),
        }
    return out
