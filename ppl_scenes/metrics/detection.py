"""Single-class detection metrics: average precision (PASCAL VOC all-point) and box matching.

SPAIR (Crawford & Pineau 2019, §5.1) reports AP averaged over IoU thresholds 0.1:0.1:0.9, GMAIR
(Zhu et al. 2021, App. C) AP at IoU 0.5 "by the calculation method from the VOC" (Everingham et al.
2010); COCO averages over 0.5:0.05:0.95.

Conventions used throughout:

* boxes are float tensors ``[N, 4]`` in absolute pixels, ``(x1, y1, x2, y2)``; IoU comes from
  :func:`torchvision.ops.box_iou`;
* a detection matches a ground-truth box when their IoU is *strictly greater* than the threshold, as
  in the VOC devkit (``ovmax > minoverlap``) and GMAIR App. C ("IoU(PB, GB) > 0.5").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

from ppl_scenes.metrics._validation import (
    check_boxes,
    check_list,
    check_same_length,
    check_threshold,
    check_vector,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "SPAIR_IOU_THRESHOLDS",
    "RankedDetections",
    "average_precision",
    "average_precision_range",
    "match_detections",
]

#: IoU thresholds 0.1, 0.2, ..., 0.9 over which SPAIR averages AP (SPAIR §5.1, footnote 3).
SPAIR_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 2) for k in range(1, 10))

#: IoU thresholds 0.5, 0.55, ..., 0.95 of the COCO detection benchmark.
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def _pairwise_iou(pred: Tensor, gt: Tensor) -> np.ndarray:
    """IoU matrix ``[N_pred, N_gt]`` as float64 numpy; 0 where both boxes have zero area."""
    if pred.shape[0] == 0 or gt.shape[0] == 0:
        return np.zeros((pred.shape[0], gt.shape[0]))
    # Two zero-area boxes give 0/0; they do not overlap in any useful sense.
    return torch.nan_to_num(box_iou(pred, gt), nan=0.0).numpy()


def _prepare(
    pred_boxes: Sequence[Tensor], pred_scores: Sequence[Tensor], gt_boxes: Sequence[Tensor]
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Validate the per-image lists; return per-image IoU matrices, scores and the number of truths."""
    pred_boxes = check_list(pred_boxes, "pred_boxes")
    pred_scores = check_list(pred_scores, "pred_scores")
    gt_boxes = check_list(gt_boxes, "gt_boxes")
    check_same_length(pred_boxes=pred_boxes, pred_scores=pred_scores, gt_boxes=gt_boxes)
    ious, scores, n_gt = [], [], 0
    for i, (pb, ps, gb) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        pb = check_boxes(pb, f"pred_boxes[{i}]")
        gb = check_boxes(gb, f"gt_boxes[{i}]")
        ps = check_vector(ps, f"pred_scores[{i}]", length=pb.shape[0])
        ious.append(_pairwise_iou(pb, gb))
        scores.append(ps.to(torch.float64).numpy())
        n_gt += gb.shape[0]
    return ious, scores, n_gt


def _voc_ap(tp: np.ndarray, n_gt: int) -> float:
    """Area under the VOC all-point interpolated precision-recall curve of a ranked TP/FP list."""
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / n_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    # Precision envelope: at each recall, the best precision reachable at that recall or beyond.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _image_true_positives(iou: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """One image's detections, each 1.0 if a true positive at ``threshold`` (in their given order).

    The detections take their truths greedily in descending score order (ties: the given order), as
    in the dataset-wide ranking of :func:`average_precision`: a detection's outcome depends only on
    the higher-ranked detections of its own image, so each image can be matched on its own.
    """
    tp = np.zeros(len(scores))
    if iou.shape[1] == 0:
        return tp
    for j in np.argsort(-scores, kind="stable"):
        row = iou[j]
        g = int(np.argmax(row))
        if row[g] > threshold:
            tp[j] = 1.0
            iou[:, g] = -1.0  # taken
    return tp


class RankedDetections:
    """Per-image detection outcomes at several IoU thresholds, matched once, for the AP of any
    subset of the images (a bootstrap resample, repeats allowed) without matching again.

    ``ap(threshold, images)`` equals :func:`average_precision` of those images' lists exactly; one
    ranking of the subset serves every threshold (:meth:`aps`).

    Args:
        pred_boxes, pred_scores, gt_boxes: as :func:`average_precision`.
        thresholds: the IoU thresholds to prepare.
    """

    def __init__(
        self,
        pred_boxes: Sequence[Tensor],
        pred_scores: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        thresholds: Sequence[float],
    ):
        ious, scores, _ = _prepare(pred_boxes, pred_scores, gt_boxes)
        self.thresholds = [check_threshold(t, "thresholds entry") for t in thresholds]
        self.gt_counts = np.array([iou.shape[1] for iou in ious], dtype=np.int64)
        self.counts = np.array([len(s) for s in scores], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.scores = np.concatenate(scores) if scores else np.zeros(0)
        #: ``[thresholds, detections]``: 1.0 where the detection is a true positive at the threshold
        self.true_positives = np.stack(
            [
                np.concatenate([_image_true_positives(iou.copy(), s, t) for iou, s in zip(ious, scores)])
                if scores
                else np.zeros(0)
                for t in self.thresholds
            ]
        )

    def aps(self, images: Sequence[int] | None = None) -> dict[float, float]:
        """AP at every prepared threshold over ``images`` (default: all, in order; repeats allowed)."""
        if images is None:
            flat, n_gt = np.arange(len(self.scores)), int(self.gt_counts.sum())
        else:
            pick = np.asarray(images, dtype=np.int64)
            lengths = self.counts[pick]
            # the detections of the picked images, image after image: one flat index per detection
            shift = self.starts[pick] - np.cumsum(lengths) + lengths
            flat = np.repeat(shift, lengths) + np.arange(lengths.sum())
            n_gt = int(self.gt_counts[pick].sum())
        if n_gt == 0:
            return dict.fromkeys(self.thresholds, math.nan)
        order = flat[np.argsort(-self.scores[flat], kind="stable")]
        ranked = self.true_positives[:, order]
        return {t: _voc_ap(tp, n_gt) for t, tp in zip(self.thresholds, ranked)}

    def ap(self, threshold: float, images: Sequence[int] | None = None) -> float:
        """AP at ``threshold`` (one of the prepared ones) over ``images`` (see :meth:`aps`)."""
        if threshold not in self.thresholds:
            raise ValueError(f"threshold {threshold} was not prepared; prepared: {self.thresholds}")
        return self.aps(images)[threshold]


def average_precision(
    pred_boxes: Sequence[Tensor],
    pred_scores: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    iou_threshold: float = 0.5,
) -> float:
    """Single-class detection AP over a dataset, PASCAL VOC all-point interpolation.

    Detections of all images are ranked together by score (ties keep image order, then the order
    within the image). Walking down the ranking, each detection is matched to the unmatched
    ground-truth box *of its own image* with the highest IoU; it is a true positive when that IoU is
    strictly greater than ``iou_threshold``, otherwise a false positive — so a second detection of an
    already-matched object (a duplicate) is a false positive. Picking the best *unmatched* truth is
    the COCO rule; the VOC devkit instead takes the best truth overall and counts a hit on an
    already-matched one as a false positive. The two differ only when ground-truth boxes overlap each
    other by more than the threshold.

    AP is the area under the precision-recall step curve after replacing each precision by the
    maximum precision at any higher recall (the monotone envelope), recall being measured against all
    ground-truth boxes, so missed objects cap the curve below recall 1.

    Args:
        pred_boxes: per image, predicted boxes ``[N_i, 4]`` xyxy in pixels.
        pred_scores: per image, detection scores ``[N_i]`` (higher = more confident).
        gt_boxes: per image, ground-truth boxes ``[M_i, 4]`` xyxy in pixels.
        iou_threshold: IoU a match must exceed, in (0, 1).

    Returns:
        AP in [0, 1]. ``0.0`` when there is ground truth but no detection. ``nan`` when the whole set
        has no ground-truth box: recall, hence AP, is undefined there whatever was predicted (COCO and
        torchmetrics signal the same case with -1).

    Raises:
        ValueError: on lists of different or zero length, boxes not shaped ``[N, 4]`` or not xyxy,
            scores not matching their boxes, NaN/Inf, or a threshold outside (0, 1).
    """
    threshold = check_threshold(iou_threshold)
    return RankedDetections(pred_boxes, pred_scores, gt_boxes, (threshold,)).ap(threshold)


def average_precision_range(
    pred_boxes: Sequence[Tensor],
    pred_scores: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    thresholds: Sequence[float] = SPAIR_IOU_THRESHOLDS,
) -> dict:
    """AP (see :func:`average_precision`) at several IoU thresholds and its mean.

    IoUs are computed once and reused for every threshold.

    Args:
        pred_boxes: per image, predicted boxes ``[N_i, 4]`` xyxy in pixels.
        pred_scores: per image, detection scores ``[N_i]``.
        gt_boxes: per image, ground-truth boxes ``[M_i, 4]``.
        thresholds: IoU thresholds in (0, 1); :data:`SPAIR_IOU_THRESHOLDS` (0.1:0.1:0.9) by default,
            :data:`COCO_IOU_THRESHOLDS` (0.5:0.05:0.95) for COCO's AP.

    Returns:
        ``{"per_threshold": {threshold: AP, ...}, "mean": mean AP}`` (``nan`` entries and mean when
        there is no ground truth at all).

    Raises:
        ValueError: as :func:`average_precision`, or on an empty ``thresholds``.
    """
    if isinstance(thresholds, int | float):
        thresholds = (thresholds,)
    if len(thresholds) == 0:
        raise ValueError("thresholds is empty: give at least one IoU threshold")
    per = RankedDetections(pred_boxes, pred_scores, gt_boxes, thresholds).aps()
    return {"per_threshold": per, "mean": float(np.mean(list(per.values())))}


def match_detections(
    pred_boxes: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """One-to-one matching of one image's detections to its ground truth (Hungarian on IoU).

    Pairs at or below the threshold are given zero weight before the assignment
    (:func:`scipy.optimize.linear_sum_assignment`, maximising), so they never displace a valid pair;
    the assignment then maximises the summed IoU of the pairs that exceed the threshold, and only
    those pairs are returned. Scores play no part.

    Args:
        pred_boxes: predicted boxes ``[N, 4]`` xyxy in pixels.
        gt_boxes: ground-truth boxes ``[M, 4]`` xyxy in pixels.
        iou_threshold: IoU a pair must exceed, in (0, 1).

    Returns:
        ``(pred_idx, gt_idx)``: int64 tensors of equal length K <= min(N, M), sorted by ``pred_idx``;
        ``pred_boxes[pred_idx[k]]`` matches ``gt_boxes[gt_idx[k]]``.

    Raises:
        ValueError: on boxes not shaped ``[N, 4]`` or not xyxy, NaN/Inf, or a threshold outside (0, 1).
    """
    threshold = check_threshold(iou_threshold)
    iou = _pairwise_iou(check_boxes(pred_boxes, "pred_boxes"), check_boxes(gt_boxes, "gt_boxes"))
    if iou.size == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    weight = np.where(iou > threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    keep = iou[rows, cols] > threshold
    return torch.as_tensor(rows[keep], dtype=torch.int64), torch.as_tensor(cols[keep], dtype=torch.int64)
