"""Bootstrap intervals: coverage of a known mean, reproducibility, and the scorers that report them."""

import numpy as np
import pytest
import torch

from ppl_scenes.metrics import RankedDetections, bootstrap_interval, detection_scores, image_label_metrics
from ppl_scenes.metrics.scoring import AP_THRESHOLDS, _detection_statistic, _instance_rates
from ppl_scenes.scene import SceneParse


def test_interval_of_a_mean_brackets_it_and_shrinks_with_more_items():
    rng = np.random.default_rng(1)
    widths = []

    def mean_of(values):
        return lambda idx: {"mean": values[idx].mean()}

    for n in (100, 1600):
        values = rng.random(n) < 0.8
        low, high = bootstrap_interval(mean_of(values), n, 400)["mean"]
        assert low < values.mean() < high
        # The normal approximation's half-width is 1.96 * sqrt(p (1 - p) / n).
        assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.16 / n), rel=0.3)
        widths.append(high - low)
    assert widths[1] < widths[0] / 3
    again = bootstrap_interval(mean_of(values), len(values), 400)
    assert again == bootstrap_interval(mean_of(values), len(values), 400)


def test_scores_that_are_mostly_nan_get_no_interval():
    out = bootstrap_interval(lambda idx: {"a": 1.0, "b": float("nan")}, 5, 20)
    assert out == {"a": [1.0, 1.0]}


@pytest.mark.parametrize("bad", [dict(num_items=0), dict(resamples=0), dict(level=1.0)])
def test_bad_arguments_raise(bad):
    kwargs = dict(num_items=3, resamples=10, level=0.9) | bad
    with pytest.raises(ValueError):
        bootstrap_interval(lambda idx: {"a": 0.0}, **kwargs)


def test_image_label_accuracy_interval():
    parses = [SceneParse(boxes=[], scores=[], image_labels=torch.tensor([1, 2, 3, 4]))]
    targets = [{"sum": torch.tensor(v)} for v in (1, 2, 0, 0)]
    out = image_label_metrics(parses, targets, "sum", intervals=200)
    assert out["accuracy"] == 0.5
    low, high = out["intervals"]["accuracy"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_instance_rates_are_ratios_of_sums():
    tally = np.array([[3, 3, 2], [1, 0, 0]])
    rates = _instance_rates(tally, with_labels=True)
    assert rates == {"detection_rate": 0.75, "classification_accuracy": 2 / 3, "detected_and_classified": 0.5}
    assert _instance_rates(tally[[1, 1]], with_labels=False) == {"detection_rate": 0.0}


def test_detection_statistic_of_all_scenes_equals_the_scores():
    gt = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 30, 30], [0, 0, 5, 5]])]
    boxes = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 29, 30]])]
    scores = [torch.tensor([0.9]), torch.tensor([0.8])]
    d = {
        "boxes": boxes,
        "scores": scores,
        "gt_boxes": gt,
        "present": [s >= 0.5 for s in scores],
        "labels": None,
        "gt_labels": None,
        "pred_counts": torch.tensor([1, 1]),
        "true_counts": torch.tensor([1, 2]),
    }
    ranking = RankedDetections(boxes, scores, gt, AP_THRESHOLDS)
    full = _detection_statistic(d, ranking, np.array([0, 1]))
    assert full["count_accuracy"] == 0.5 and full["ap50"] == pytest.approx(2 / 3)
    whole = detection_scores(boxes, scores, gt, d["pred_counts"], d["true_counts"])
    assert full == {k: v for k, v in whole.items() if k in full}
    twice = _detection_statistic(d, ranking, np.array([0, 0]))
    assert twice["count_accuracy"] == 1.0 and twice["ap50"] == 1.0
