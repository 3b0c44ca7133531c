"""Scoring parses against the truth: overall and per true object count."""

import math

import pytest
import torch

from ppl_scenes.baselines import ConnComp
from ppl_scenes.metrics import count_metrics_by_true_count
from ppl_scenes.metrics.scoring import detection_scores, evaluate_by_count, evaluate_detection, matched_codes


def _scene(blobs, extra_truth=()):
    """A 1x16x16 image with a white square per ``(x1, y1, x2, y2)`` and its target.

    ``extra_truth``: true boxes with no ink (objects the detector cannot see).
    """
    image = torch.zeros(1, 16, 16)
    for x1, y1, x2, y2 in blobs:
        image[:, y1:y2, x1:x2] = 1.0
    boxes = torch.tensor([*blobs, *extra_truth], dtype=torch.float32).reshape(-1, 4)
    return image, {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64), "count": len(boxes)}


A, B, C = (1, 1, 4, 4), (8, 8, 12, 12), (1, 10, 4, 14)
SCENES = [
    _scene([A]),
    _scene([B]),
    _scene([A, B]),
    _scene([A, C]),
    _scene([A, B], extra_truth=[(12, 1, 15, 4)]),  # 3 true objects, 2 visible
]


def test_evaluate_by_count_splits_by_true_count():
    result = evaluate_by_count(ConnComp(), SCENES, batch_size=2)
    assert set(result) == {"overall", "by_count"}
    assert result["overall"] == evaluate_detection(ConnComp(), SCENES)
    by_count = result["by_count"]
    assert list(by_count) == [1, 2, 3]
    assert [m["num_scenes"] for m in by_count.values()] == [2, 2, 1]
    for count in (1, 2):  # every object is a separate blob: perfect detections and counts
        assert by_count[count]["ap50"] == pytest.approx(1.0)
        assert by_count[count]["ap_spair"] == pytest.approx(1.0)
        assert by_count[count]["count_accuracy"] == 1.0 and by_count[count]["count_mae"] == 0.0
    assert by_count[3]["count_accuracy"] == 0.0 and by_count[3]["count_mae"] == 1.0
    assert by_count[3]["ap50"] == pytest.approx(2 / 3)  # two of three found, no false positive
    # The per-count counting scores agree with the metric that groups counts directly.
    direct = count_metrics_by_true_count([1, 1, 2, 2, 2], [1, 1, 2, 2, 3])
    for count, metrics in direct.items():
        assert by_count[count]["count_accuracy"] == metrics["accuracy"]
        assert by_count[count]["count_mae"] == metrics["mae"]
    assert result["overall"]["count_mae"] == pytest.approx(0.2)


def test_evaluate_by_count_max_scenes_and_empty_scenes():
    empty = _scene([])
    result = evaluate_by_count(ConnComp(), [empty, *SCENES], max_scenes=3)
    assert result["overall"]["num_scenes"] == 3
    assert list(result["by_count"]) == [0, 1]
    assert math.isnan(result["by_count"][0]["ap50"])  # no object to find: AP is undefined
    assert result["by_count"][0]["count_accuracy"] == 1.0


def test_detection_scores_validates():
    boxes = [torch.tensor([[0.0, 0, 2, 2]])]
    scores = [torch.tensor([0.9])]
    out = detection_scores(boxes, scores, boxes, [1], [1])
    assert out["ap50"] == pytest.approx(1.0) and out["num_scenes"] == 1
    with pytest.raises(ValueError):
        detection_scores(boxes, scores, boxes, [1, 2], [1])
    with pytest.raises(ValueError):
        detection_scores(boxes, scores, [], [1], [1])


class _FixedParser:
    """Reports fixed boxes with codes equal to the box's x1 (to see which detection was kept)."""

    device = torch.device("cpu")

    def __init__(self, boxes):
        self.boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)

    def parse(self, x):
        from ppl_scenes.models import SceneParse

        n = len(x)
        return SceneParse(
            boxes=[self.boxes] * n,
            scores=[torch.ones(len(self.boxes))] * n,
            what=[self.boxes[:, :1].clone()] * n,
            labels=[torch.arange(len(self.boxes))] * n,
        )


def test_matched_codes_label_hits_by_best_iou():
    image = torch.zeros(1, 16, 16)
    truth = {"boxes": torch.tensor([[1.0, 1, 5, 5], [8, 8, 12, 12]]), "labels": torch.tensor([3, 7])}
    # detections: on the second truth, on the first (shifted a little), and one hitting nothing
    model = _FixedParser([[8, 8, 12, 12], [1, 1, 5, 6], [12, 0, 16, 3]])
    codes, own, true = matched_codes(model, [(image, truth), (image, truth)])
    assert codes[:, 0].tolist() == [8.0, 1.0, 8.0, 1.0]
    assert own.tolist() == [0, 1, 0, 1] and true.tolist() == [7, 3, 7, 3]
    codes, _, true = matched_codes(model, [(image, truth)], iou_threshold=0.9)
    assert true.tolist() == [7]  # the shifted box has IoU 0.8
    empty = _FixedParser(torch.zeros(0, 4).tolist())
    codes, own, true = matched_codes(empty, [(image, truth)])
    assert codes.shape[0] == 0 and len(own) == 0 and len(true) == 0
