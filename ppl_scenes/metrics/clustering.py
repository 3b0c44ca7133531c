"""Clustering metrics for object categories: accuracy under the best cluster→class map, and NMI.

GMAIR (Zhu et al. 2021, App. C) scores its unsupervised categories over detections that hit a
ground-truth object: a predicted box is "correct" iff some true box overlaps it with IoU > 0.5, and it
takes the class of the true box it overlaps most. Over those boxes it reports ACC (Eq. 16, the best
assignment of clusters to classes) and NMI (Eq. 17, ``2 I(G, P) / (H(G) + H(P))``, scikit-learn's
``normalized_mutual_info_score`` with its default arithmetic normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from ppl_scenes.metrics._validation import (
    as_1d_array,
    check_boxes,
    check_list,
    check_pair,
    check_same_length,
    check_threshold,
    check_vector,
)
from ppl_scenes.metrics.detection import _pairwise_iou, match_detections

__all__ = [
    "cluster_accuracy",
    "cluster_class_map",
    "contingency_table",
    "detection_clustering_scores",
    "normalized_mutual_info",
]

Labels = Tensor | np.ndarray | Sequence[int]


def _labels(pred: Labels, true: Labels) -> tuple[np.ndarray, np.ndarray]:
    p = as_1d_array(pred, "pred", integer=True)
    t = as_1d_array(true, "true", integer=True)
    check_pair(p, t, ("pred", "true"))
    return p, t


def _table(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t_ids, t_idx = np.unique(t, return_inverse=True)
    p_ids, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((len(t_ids), len(p_ids)), dtype=np.int64)
    np.add.at(table, (t_idx, p_idx), 1)
    return table, t_ids, p_ids


def _cluster_accuracy(p: np.ndarray, t: np.ndarray, mapping: str) -> float:
    table = _table(p, t)[0].T  # clusters x classes
    if mapping == "majority":
        hits = table.max(axis=1).sum()
    else:
        # Rectangular tables are fine: with more clusters than classes the extra clusters stay
        # unassigned and all their items count as errors.
        rows, cols = linear_sum_assignment(table, maximize=True)
        hits = table[rows, cols].sum()
    return float(hits / len(p))


def contingency_table(pred: Labels, true: Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How many items of each true class fell in each cluster: what ACC and NMI summarise.

    Args:
        pred: predicted cluster id per item.
        true: true class id per item.

    Returns:
        ``(table, classes, clusters)``: ``table[i, j]`` counts the items of class ``classes[i]`` in
        cluster ``clusters[j]``; ``classes`` and ``clusters`` are the sorted ids that occur.

    Raises:
        ValueError: on empty or differently sized inputs, non-integer or non-finite ids.
    """
    p, t = _labels(pred, true)
    return _table(p, t)


def cluster_class_map(pred: Labels, true: Labels) -> dict[int, int]:
    """The one-to-one map from clusters to classes that clustering ACC scores (Hungarian matching).

    Args:
        pred: predicted cluster id per item.
        true: true class id per item.

    Returns:
        ``{cluster id: class id}`` for the matched clusters. Only ids that occur take part, so a cluster
        with no items is never matched, and with more clusters than classes (or the reverse) some stay
        out of the map.

    Raises:
        ValueError: on empty or differently sized inputs, non-integer or non-finite ids.
    """
    table, classes, clusters = contingency_table(pred, true)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(clusters[c]): int(classes[r]) for r, c in zip(rows, cols)}


def cluster_accuracy(
    pred: Labels, true: Labels, mapping: Literal["hungarian", "majority"] = "hungarian"
) -> float:
    """Clustering accuracy: the fraction of items right under the best map from clusters to classes.

    Cluster and class ids are arbitrary integers; their numbers may differ.

    Args:
        pred: predicted cluster id per item.
        true: true class id per item.
        mapping: ``"hungarian"`` (default): a one-to-one map found with
            :func:`scipy.optimize.linear_sum_assignment`; clusters left without a class (when there
            are more clusters than classes) count as wrong. ``"majority"``: each cluster maps to its
            most frequent class, several clusters may share a class — the literal form of GMAIR's
            Eq. 16 and of Dilokthanakul et al. (2016), which it follows; it is never lower than the
            one-to-one score and rewards over-clustering.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: on empty or differently sized inputs, non-integer or non-finite ids, or an unknown
            ``mapping``.
    """
    if mapping not in ("hungarian", "majority"):
        raise ValueError(f"mapping must be 'hungarian' or 'majority', got {mapping!r}")
    p, t = _labels(pred, true)
    return _cluster_accuracy(p, t, mapping)


def normalized_mutual_info(pred: Labels, true: Labels) -> float:
    """Normalised mutual information ``2 I(G, P) / (H(G) + H(P))`` between clusters and classes.

    Computed by :func:`sklearn.metrics.normalized_mutual_info_score` (arithmetic normalisation, GMAIR
    Eq. 17). Symmetric in its arguments; 1.0 when both labellings are constant.

    Args:
        pred: predicted cluster id per item.
        true: true class id per item.

    Returns:
        NMI in [0, 1].

    Raises:
        ValueError: on empty or differently sized inputs, non-integer or non-finite ids.
    """
    p, t = _labels(pred, true)
    return float(normalized_mutual_info_score(t, p))


def detection_clustering_scores(
    pred_boxes: Sequence[Tensor],
    pred_labels: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    iou_threshold: float = 0.5,
    matching: Literal["max_iou", "hungarian"] = "max_iou",
    mapping: Literal["hungarian", "majority"] = "hungarian",
) -> dict:
    """Clustering ACC and NMI of predicted object categories over detections that hit a true object.

    Args:
        pred_boxes: per image, predicted boxes ``[N_i, 4]`` xyxy in pixels.
        pred_labels: per image, predicted cluster ids ``[N_i]`` (e.g. the mode of GMAIR's ``z_cat``).
        gt_boxes: per image, ground-truth boxes ``[M_i, 4]``.
        gt_labels: per image, ground-truth classes ``[M_i]``.
        iou_threshold: IoU a detection must exceed to count, in (0, 1).
        matching: ``"max_iou"`` (default, GMAIR App. C): every detection whose best IoU with a true box
            exceeds the threshold counts, labelled with that best true box's class (two detections may
            hit the same object). ``"hungarian"``: only one-to-one pairs from
            :func:`~ppl_scenes.metrics.detection.match_detections`.
        mapping: cluster→class map for ACC, see :func:`cluster_accuracy`.

    Returns:
        ``{"acc": float, "acc_majority": float, "nmi": float, "n_matched": int, "n_pred": int,
        "n_gt": int}``: ``acc`` under ``mapping``, ``acc_majority`` always under the ``"majority"`` map
        (the literal form of GMAIR's Eq. 16, the rule of the paper's own numbers); the scores are ``nan``
        when no detection matched.

    Raises:
        ValueError: on lists of different or zero length, boxes and labels that do not correspond,
            malformed boxes, a threshold outside (0, 1), or unknown ``matching``/``mapping``.
    """
    threshold = check_threshold(iou_threshold)
    if matching not in ("max_iou", "hungarian"):
        raise ValueError(f"matching must be 'max_iou' or 'hungarian', got {matching!r}")
    if mapping not in ("hungarian", "majority"):
        raise ValueError(f"mapping must be 'hungarian' or 'majority', got {mapping!r}")
    lists = {
        "pred_boxes": check_list(pred_boxes, "pred_boxes"),
        "pred_labels": check_list(pred_labels, "pred_labels"),
        "gt_boxes": check_list(gt_boxes, "gt_boxes"),
        "gt_labels": check_list(gt_labels, "gt_labels"),
    }
    check_same_length(**lists)
    pred_cat: list[np.ndarray] = []
    true_cat: list[np.ndarray] = []
    n_pred = n_gt = 0
    for i, (pb, pl, gb, gl) in enumerate(zip(*lists.values())):
        pb = check_boxes(pb, f"pred_boxes[{i}]")
        gb = check_boxes(gb, f"gt_boxes[{i}]")
        pl = check_vector(pl, f"pred_labels[{i}]", length=pb.shape[0])
        gl = check_vector(gl, f"gt_labels[{i}]", length=gb.shape[0])
        n_pred += pb.shape[0]
        n_gt += gb.shape[0]
        if pb.shape[0] == 0 or gb.shape[0] == 0:
            continue
        if matching == "max_iou":
            iou = _pairwise_iou(pb, gb)
            best = iou.argmax(axis=1)
            hit = iou[np.arange(len(best)), best] > threshold
            pi, gi = np.nonzero(hit)[0], best[hit]
        else:
            pi_t, gi_t = match_detections(pb, gb, threshold)
            pi, gi = pi_t.numpy(), gi_t.numpy()
        pred_cat.append(pl.to(torch.float64).numpy()[pi])
        true_cat.append(gl.to(torch.float64).numpy()[gi])
    n_matched = int(sum(len(p) for p in pred_cat))
    out = {"acc": math.nan, "acc_majority": math.nan, "nmi": math.nan}
    out.update(n_matched=n_matched, n_pred=n_pred, n_gt=n_gt)
    if n_matched:
        p, t = _labels(np.concatenate(pred_cat), np.concatenate(true_cat))
        out["acc"] = _cluster_accuracy(p, t, mapping)
        out["acc_majority"] = _cluster_accuracy(p, t, "majority")
        out["nmi"] = float(normalized_mutual_info_score(t, p))
    return out
