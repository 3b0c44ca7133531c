"""AP and box matching against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from ppl_scenes.metrics import (
    COCO_IOU_THRESHOLDS,
    SPAIR_IOU_THRESHOLDS,
    RankedDetections,
    average_precision,
    average_precision_range,
    match_detections,
)


def B(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def S(*scores):
    return torch.tensor(scores, dtype=torch.float32)


# Three well-separated objects and a box that overlaps none of them.
GT = B((0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10))
MISS = (100, 100, 110, 110)


def test_threshold_constants():
    assert SPAIR_IOU_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert COCO_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_detector_is_one():
    gts = [GT, B((5, 5, 15, 25))]
    preds = [g.clone() for g in gts]
    scores = [S(0.9, 0.8, 0.7), S(0.6)]
    assert average_precision(preds, scores, gts) == pytest.approx(1.0)


def test_all_misses_is_zero():
    assert average_precision([B(MISS, MISS)], [S(0.9, 0.8)], [GT]) == 0.0


def test_no_predictions_is_zero():
    assert average_precision([B()], [S()], [GT]) == 0.0


def test_ranked_list_by_hand():
    # Ranked TP, FP, TP with 3 objects: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3.
    # Envelope: 1 on (0, 1/3], 2/3 on (1/3, 2/3], nothing beyond -> AP = 1/3 + 2/9 = 5/9.
    preds = B((0, 0, 10, 10), MISS, (20, 0, 30, 10))
    assert average_precision([preds], [S(0.9, 0.8, 0.7)], [GT]) == pytest.approx(5 / 9)


def test_precision_envelope_is_applied():
    # TP, FP, TP, TP: precision 1, 1/2, 2/3, 3/4. The envelope lifts recall (1/3, 2/3] to 3/4:
    # AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 (without it, 1/3 * (1 + 2/3 + 3/4) = 0.8056).
    preds = B((0, 0, 10, 10), MISS, (20, 0, 30, 10), (40, 0, 50, 10))
    assert average_precision([preds], [S(0.9, 0.8, 0.7, 0.6)], [GT]) == pytest.approx(5 / 6)


def test_ranking_is_global_across_images():
    # Image 0 holds the top and third detection, image 1 the second (a miss).
    preds = [B((0, 0, 10, 10), (20, 0, 30, 10)), B(MISS)]
    scores = [S(0.9, 0.5), S(0.7)]
    gts = [B((0, 0, 10, 10), (20, 0, 30, 10)), B()]
    # TP, FP, TP over 2 objects: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert average_precision(preds, scores, gts) == pytest.approx(5 / 6)


def test_duplicates_are_false_positives():
    # Two objects; the second-ranked detection duplicates the first: TP, FP, TP -> 1/2 + 1/2 * 2/3.
    gts = [B((0, 0, 10, 10), (20, 0, 30, 10))]
    preds = [B((0, 0, 10, 10), (0, 0, 10, 10), (20, 0, 30, 10))]
    assert average_precision(preds, [S(0.9, 0.8, 0.7)], gts) == pytest.approx(5 / 6)


def test_match_only_within_the_same_image():
    # A perfect box for image 1's object placed in image 0 is a miss.
    preds = [B((0, 0, 10, 10)), B()]
    gts = [B(), B((0, 0, 10, 10))]
    assert average_precision(preds, [S(0.9), S()], gts) == 0.0


def test_best_unmatched_truth_is_taken():
    # Two overlapping objects. The lower-scored detection overlaps the already-matched object most
    # (IoU 0.905) but the free one enough (IoU 0.739): it takes the free one (COCO rule).
    gts = [B((0, 0, 10, 10), (2, 0, 12, 10))]
    preds = [B((0, 0, 10, 10), (0.5, 0, 10.5, 10))]
    assert average_precision(preds, [S(0.9, 0.8)], gts) == pytest.approx(1.0)


def test_iou_threshold_dependence():
    # IoU 0.55 (the box covers the top 55% of the object).
    gts, preds, scores = [B((0, 0, 10, 10))], [B((0, 0, 10, 5.5))], [S(0.9)]
    assert average_precision(preds, scores, gts, iou_threshold=0.5) == pytest.approx(1.0)
    assert average_precision(preds, scores, gts, iou_threshold=0.6) == 0.0
    res = average_precision_range(preds, scores, gts)
    assert list(res["per_threshold"]) == list(SPAIR_IOU_THRESHOLDS)
    assert [res["per_threshold"][t] for t in SPAIR_IOU_THRESHOLDS] == [1.0] * 5 + [0.0] * 4
    assert res["mean"] == pytest.approx(5 / 9)
    coco = average_precision_range(preds, scores, gts, thresholds=COCO_IOU_THRESHOLDS)
    assert coco["mean"] == pytest.approx(0.1)  # only 0.5 of the ten thresholds is below 0.55


def test_iou_equal_to_threshold_is_not_a_match():
    # IoU exactly 0.5: VOC and GMAIR require IoU > threshold.
    assert average_precision([B((0, 0, 10, 5))], [S(1.0)], [B((0, 0, 10, 10))], 0.5) == 0.0


def test_no_ground_truth_is_nan():
    assert math.isnan(average_precision([B((0, 0, 1, 1))], [S(0.5)], [B()]))
    assert math.isnan(average_precision([B()], [S()], [B()]))
    assert math.isnan(average_precision_range([B()], [S()], [B()])["mean"])


def _scene_from_flags(flags, scores, n_objects, images=3):
    """Spread a ranked TP/FP pattern over several images: TP k hits object k exactly."""
    gts = [[] for _ in range(images)]
    preds = [[] for _ in range(images)]
    scs = [[] for _ in range(images)]
    for k in range(n_objects):
        gts[k % images].append((20 * k, 0, 20 * k + 10, 10))
    hit = 0
    for j, (flag, s) in enumerate(zip(flags, scores)):
        if flag:
            img, box = hit % images, gts[hit % images][hit // images]
            hit += 1
        else:
            img, box = j % images, (500 + 20 * j, 500, 510 + 20 * j, 510)
        preds[img].append(box)
        scs[img].append(s)
    return [B(*p) for p in preds], [S(*s) for s in scs], [B(*g) for g in gts]


def test_agrees_with_sklearn_when_envelope_is_monotone():
    # Precision at each TP is non-increasing (1, 1, 3/4, 4/7, 5/9), so VOC's envelope changes nothing
    # and the area equals sklearn's step-wise AP.
    flags = [1, 1, 0, 1, 0, 0, 1, 0, 1, 0]
    scores = np.linspace(0.95, 0.05, len(flags)).tolist()
    preds, scs, gts = _scene_from_flags(flags, scores, n_objects=5)
    expected = average_precision_score(flags, scores)
    assert average_precision(preds, scs, gts) == pytest.approx(expected)
    # With missed objects recall stops at 5/7: AP scales by the detected fraction.
    preds, scs, gts = _scene_from_flags(flags, scores, n_objects=7)
    assert average_precision(preds, scs, gts) == pytest.approx(expected * 5 / 7)


def test_bad_inputs_raise():
    good = ([B((0, 0, 1, 1))], [S(0.5)], [B((0, 0, 1, 1))])
    with pytest.raises(ValueError, match="same length"):
        average_precision(good[0] * 2, good[1], good[2])
    with pytest.raises(ValueError, match="empty"):
        average_precision([], [], [])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        average_precision([torch.zeros(2, 3)], [S(0.1, 0.2)], good[2])
    with pytest.raises(ValueError, match="entries"):
        average_precision(good[0], [S(0.5, 0.4)], good[2])
    with pytest.raises(ValueError, match="x2 >= x1"):
        average_precision([B((5, 0, 1, 1))], good[1], good[2])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([B((0, 0, float("nan"), 1))], good[1], good[2])
    with pytest.raises(ValueError, match="list"):
        average_precision(B((0, 0, 1, 1)), good[1], good[2])
    for bad in (0.0, 1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="iou_threshold"):
            average_precision(*good, iou_threshold=bad)
    with pytest.raises(ValueError, match="thresholds"):
        average_precision_range(*good, thresholds=())
    with pytest.raises(ValueError, match="thresholds"):
        average_precision_range(*good, thresholds=(0.5, 1.2))


def test_match_detections_constructed_case():
    gt = B((0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10))
    pred = B(
        (41, 0, 51, 10),  # object 2 (IoU 0.82)
        (100, 100, 110, 110),  # nothing
        (0, 0, 10, 9),  # object 0 (IoU 0.9)
        (0, 0, 10, 6),  # object 0 again, weaker (IoU 0.6): loses to pred 2
    )
    pi, gi = match_detections(pred, gt)
    assert pi.dtype == gi.dtype == torch.int64
    assert pi.tolist() == [0, 2]
    assert gi.tolist() == [2, 0]
    # At a low threshold the weaker duplicate still cannot share object 0.
    pi, gi = match_detections(pred, gt, iou_threshold=0.1)
    assert sorted(zip(pi.tolist(), gi.tolist())) == [(0, 2), (2, 0)]


def test_match_detections_prefers_valid_pairs_over_total_iou():
    # Matching pred 0 first to its best truth (gt 0, IoU 0.67) would leave pred 1 (IoU 1.0 with gt 0,
    # 0.33 with gt 1) unmatched; the assignment pairs pred 0 with gt 1 (IoU 0.54) instead.
    gt = B((0, 0, 10, 10), (5, 0, 15, 10))
    pred = B((2, 0, 12, 10), (0, 0, 10, 10))
    pi, gi = match_detections(pred, gt)
    assert sorted(zip(pi.tolist(), gi.tolist())) == [(0, 1), (1, 0)]


def test_match_detections_empty_and_bad():
    pi, gi = match_detections(B(), B((0, 0, 1, 1)))
    assert pi.shape == gi.shape == (0,)
    pi, gi = match_detections(B((0, 0, 1, 1)), torch.tensor([]))
    assert pi.numel() == gi.numel() == 0
    with pytest.raises(ValueError):
        match_detections(torch.zeros(3), B((0, 0, 1, 1)))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_detections(B((0, 0, 1, 1)), B((0, 0, 1, 1)), iou_threshold=1.0)


def _reference_true_positives(pred_boxes, pred_scores, gt_boxes, threshold):
    """The dataset-wide greedy matching written out directly: walk all detections in one stable
    ranking by score, each taking the best untaken truth of its own image; the ranked TP list."""
    from torchvision.ops import box_iou

    ranked = sorted(
        ((-float(s), i, j) for i, ss in enumerate(pred_scores) for j, s in enumerate(ss)), key=lambda r: r[0]
    )
    taken = [set() for _ in gt_boxes]
    tp = []
    for _, i, j in ranked:
        hit = 0.0
        if len(gt_boxes[i]):
            iou = box_iou(pred_boxes[i][j : j + 1], gt_boxes[i])[0].tolist()
            free = [(v, -g) for g, v in enumerate(iou) if g not in taken[i]]
            if free:
                v, g = max(free)
                if v > threshold:
                    hit = 1.0
                    taken[i].add(-g)
        tp.append(hit)
    return np.array(tp)


def test_ranked_detections_give_the_ap_of_any_resample_as_matching_it_afresh():
    """Outcomes matched once per image give, for any subset of the images (repeats included), the AP
    that :func:`average_precision` and a direct dataset-wide greedy matching give; tied scores
    across and within images included."""
    from ppl_scenes.metrics.detection import _voc_ap

    g = torch.Generator().manual_seed(5)
    pred, scores, gts = [], [], []
    for _ in range(12):
        n, m = int(torch.randint(0, 7, (1,), generator=g)), int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 20
        gts.append(torch.cat((xy, xy + 3 + torch.rand(m, 2, generator=g) * 6), 1))
        if m:  # detections near the truths (duplicates among them), jittered
            near = gts[-1][torch.randint(m, (n,), generator=g)]
            pred.append(near + torch.rand(n, 4, generator=g) * 3)
        else:
            xy = torch.rand(n, 2, generator=g) * 20
            pred.append(torch.cat((xy, xy + 4), 1))
        scores.append(torch.round(torch.rand(n, generator=g) * 4) / 4)  # many ties
    ranking = RankedDetections(pred, scores, gts, (0.3, 0.5, 0.7))
    for pick in (None, [3, 3, 0, 11, 7, 7, 7], [int(i) for i in torch.randint(12, (12,), generator=g)]):
        idx = range(12) if pick is None else pick
        sub = ([pred[i] for i in idx], [scores[i] for i in idx], [gts[i] for i in idx])
        n_gt = sum(len(b) for b in sub[2])
        for t in (0.3, 0.5, 0.7):
            got = ranking.ap(t, pick)
            assert got == average_precision(*sub, iou_threshold=t)
            assert got == _voc_ap(_reference_true_positives(*sub, t), n_gt)
    assert 0 < ranking.ap(0.3) < 1
    without_truth = [i for i in range(12) if len(gts[i]) == 0]
    assert without_truth and all(math.isnan(v) for v in ranking.aps(without_truth).values())
    with pytest.raises(ValueError, match="not prepared"):
        ranking.ap(0.4)
