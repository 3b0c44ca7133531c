"""Count accuracy and MAE against hand-computed values."""

import numpy as np
import pytest
import torch

from ppl_scenes.metrics import count_accuracy, count_mae, count_metrics_by_true_count

PRED = [1, 2, 2, 5, 0, 3]
TRUE = [1, 2, 3, 3, 0, 3]


@pytest.mark.parametrize("convert", [list, tuple, np.array, torch.tensor, lambda v: torch.tensor(v).float()])
def test_accuracy_and_mae_by_hand(convert):
    # Hits at positions 0, 1, 4, 5; absolute errors 0, 0, 1, 2, 0, 0.
    assert count_accuracy(convert(PRED), convert(TRUE)) == pytest.approx(4 / 6)
    assert count_mae(convert(PRED), convert(TRUE)) == pytest.approx(3 / 6)


def test_by_true_count():
    res = count_metrics_by_true_count(PRED, TRUE)
    assert list(res) == [0, 1, 2, 3]
    assert res[3] == {"accuracy": pytest.approx(1 / 3), "mae": pytest.approx(1.0), "n": 3}
    assert res[0] == {"accuracy": 1.0, "mae": 0.0, "n": 1}
    # Grouped values recombine into the overall ones.
    n = sum(r["n"] for r in res.values())
    assert sum(r["mae"] * r["n"] for r in res.values()) / n == pytest.approx(count_mae(PRED, TRUE))


@pytest.mark.parametrize(
    "pred, true, match",
    [
        ([1, 2], [1], "length"),
        ([], [], "empty"),
        ([1.5], [1], "whole"),
        ([-1], [1], "non-negative"),
        ([[1, 2]], [[1, 2]], "1-D"),
        ([float("nan")], [1], "NaN"),
        (["a"], [1], "numbers"),
    ],
)
def test_bad_inputs(pred, true, match):
    for fn in (count_accuracy, count_mae, count_metrics_by_true_count):
        with pytest.raises(ValueError, match=match):
            fn(pred, true)
