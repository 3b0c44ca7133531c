"""Clustering ACC / NMI: permutation invariance, hand-computed cases, scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from ppl_scenes.metrics import (
    cluster_accuracy,
    cluster_class_map,
    contingency_table,
    detection_clustering_scores,
    normalized_mutual_info,
)


def B(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def L(*labels):
    return torch.tensor(labels, dtype=torch.int64)


def test_permuted_labelling_is_perfect():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, size=200)
    perm = np.array([3, 0, 4, 1, 2]) + 10  # arbitrary ids, not 0..K-1
    assert cluster_accuracy(perm[true], true) == 1.0
    assert normalized_mutual_info(perm[true], true) == pytest.approx(1.0)


def test_accuracy_by_hand():
    true = [0, 0, 0, 1, 1, 1]
    pred = [5, 5, 7, 7, 7, 7]
    # One-to-one: 5 -> 0 (2 hits) and 7 -> 1 (3 hits): 5/6.
    assert cluster_accuracy(pred, true) == pytest.approx(5 / 6)


def test_more_clusters_than_classes():
    true = [0, 0, 1, 1, 1, 1]
    pred = [0, 1, 2, 2, 3, 3]
    # One-to-one: best is 2 -> 1 (2) and 0 or 1 -> 0 (1): 3/6. Majority: 1 + 1 + 2 + 2 = 6/6.
    assert cluster_accuracy(pred, true) == pytest.approx(3 / 6)
    assert cluster_accuracy(pred, true, mapping="majority") == 1.0


def test_fewer_clusters_than_classes():
    true = [0, 1, 2, 2]
    pred = [0, 0, 0, 0]
    assert cluster_accuracy(pred, true) == pytest.approx(2 / 4)


def test_contingency_table_by_hand_and_against_sklearn():
    table, classes, clusters = contingency_table([5, 5, 7, 7, 7, 9], [0, 0, 0, 1, 1, 1])
    assert classes.tolist() == [0, 1] and clusters.tolist() == [5, 7, 9]
    assert table.tolist() == [[2, 1, 0], [0, 2, 1]]
    rng = np.random.default_rng(2)
    true, pred = rng.integers(0, 4, size=100), rng.integers(3, 9, size=100)
    table = contingency_table(torch.tensor(pred), torch.tensor(true))[0]
    assert np.array_equal(table, contingency_matrix(true, pred))
    with pytest.raises(ValueError):
        contingency_table([0, 1], [0])


def test_cluster_class_map_is_the_matching_acc_scores():
    # 5 -> 0 and 7 -> 1 (the hand case above); 9 has the fewest items and stays unmatched.
    assert cluster_class_map([5, 5, 7, 7, 7, 9], [0, 0, 0, 1, 1, 1]) == {5: 0, 7: 1}
    rng = np.random.default_rng(3)
    true, pred = rng.integers(0, 6, size=300), rng.integers(10, 16, size=300)
    match = cluster_class_map(torch.tensor(pred), torch.tensor(true))
    assert len(match) == 6 and sorted(match.values()) == list(range(6))
    hits = sum(match[p] == t for p, t in zip(pred, true))
    assert hits / len(true) == pytest.approx(cluster_accuracy(pred, true))
    with pytest.raises(ValueError):
        cluster_class_map([], [])


def test_nmi_matches_sklearn():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=300)
    pred = np.where(rng.random(300) < 0.7, true, rng.integers(0, 6, size=300))
    expected = normalized_mutual_info_score(true, pred)
    assert 0.2 < expected < 0.95
    assert normalized_mutual_info(torch.tensor(pred), torch.tensor(true)) == pytest.approx(expected)
    # Arithmetic normalisation is GMAIR's 2 I / (H(G) + H(P)).
    assert expected == pytest.approx(normalized_mutual_info_score(true, pred, average_method="arithmetic"))


def test_bad_inputs():
    with pytest.raises(ValueError, match="length"):
        cluster_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        normalized_mutual_info([], [])
    with pytest.raises(ValueError, match="mapping"):
        cluster_accuracy([0], [0], mapping="best")


def test_detection_clustering_by_hand():
    gt_boxes = [B((0, 0, 10, 10), (20, 0, 30, 10)), B((0, 0, 10, 10))]
    gt_labels = [L(3, 7), L(7)]
    pred_boxes = [
        B((0, 0, 10, 9), (20, 0, 30, 10), (100, 100, 110, 110), (0, 0, 10, 8)),
        B((1, 0, 11, 10)),
    ]
    # The miss (cluster 9) is dropped; the duplicate (0, 0, 10, 8) of object 3 counts under GMAIR's
    # max-IoU rule but not under one-to-one matching.
    pred_labels = [L(0, 1, 9, 1), L(1)]
    res = detection_clustering_scores(pred_boxes, pred_labels, gt_boxes, gt_labels)
    assert (res["n_matched"], res["n_pred"], res["n_gt"]) == (4, 5, 3)
    # Matched pairs (pred, true): (0, 3), (1, 7), (1, 3), (1, 7) -> 0 -> 3, 1 -> 7: 3/4.
    assert res["acc"] == pytest.approx(3 / 4)
    assert res["acc_majority"] == pytest.approx(3 / 4)  # 0 -> 3 and 1 -> 7 either way
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score([3, 7, 3, 7], [0, 1, 1, 1]))
    one = detection_clustering_scores(pred_boxes, pred_labels, gt_boxes, gt_labels, matching="hungarian")
    assert one["n_matched"] == 3
    assert one["acc"] == 1.0
    # A stricter threshold drops (0, 0, 10, 8) (IoU 0.8) and (1, 0, 11, 10) (IoU 0.82).
    strict = detection_clustering_scores(pred_boxes, pred_labels, gt_boxes, gt_labels, iou_threshold=0.85)
    assert strict["n_matched"] == 2


def test_detection_clustering_majority_map_allows_shared_classes():
    # Three digits (3, 3, 7) found and split into three clusters: one-to-one, one 3 is wrong; GMAIR's
    # Eq. 16 maps clusters 0 and 1 both to 3.
    boxes = [B((0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10))]
    res = detection_clustering_scores(boxes, [L(0, 1, 2)], boxes, [L(3, 3, 7)])
    assert res["acc"] == pytest.approx(2 / 3)
    assert res["acc_majority"] == 1.0


def test_detection_clustering_no_match_is_nan():
    res = detection_clustering_scores([B((50, 50, 60, 60))], [L(0)], [B((0, 0, 10, 10))], [L(1)])
    assert res["n_matched"] == 0
    assert math.isnan(res["acc"]) and math.isnan(res["acc_majority"]) and math.isnan(res["nmi"])


def test_detection_clustering_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        detection_clustering_scores([B()], [L()], [B(), B()], [L(), L()])
    with pytest.raises(ValueError, match="entries"):
        detection_clustering_scores([B((0, 0, 1, 1))], [L(0, 1)], [B()], [L()])
    with pytest.raises(ValueError, match="iou_threshold"):
        detection_clustering_scores([B()], [L()], [B()], [L()], iou_threshold=0)
    with pytest.raises(ValueError, match="matching"):
        detection_clustering_scores([B()], [L()], [B()], [L()], matching="greedy")
