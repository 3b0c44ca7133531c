"""Scoring scene models on datasets with ground truth: detection, counting, reconstruction, labels.

Everything here works on what ``parse`` returns (:class:`ppl_scenes.scene.SceneParse`) and the scenes'
targets; it imports no model. Whether a model's parse can keep ranked candidates, and whether it needs
keyword arguments from the targets, are read from the capabilities of :mod:`ppl_scenes.scene`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from ppl_scenes.checks import check_positive, check_positive_int
from ppl_scenes.data.scenes import image_targets
from ppl_scenes.metrics.clustering import detection_clustering_scores
from ppl_scenes.metrics.counts import count_accuracy, count_mae
from ppl_scenes.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    SPAIR_IOU_THRESHOLDS,
    RankedDetections,
    average_precision,
    match_detections,
)
from ppl_scenes.metrics.intervals import bootstrap_interval
from ppl_scenes.metrics.reconstruction import rmse
from ppl_scenes.scene import RankedParse, TargetedParse

__all__ = [
    "detection_scores",
    "evaluate_by_count",
    "evaluate_detection",
    "evaluate_image_labels",
    "evaluate_instances",
    "image_label_correct",
    "image_label_metrics",
    "matched_codes",
    "parse_dataset",
    "parse_options",
]


def parse_options(model, targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Keyword arguments ``model.parse`` needs from the scenes' targets: a
    :class:`~ppl_scenes.scene.TargetedParse`'s ``parse_options``, else none."""
    return model.parse_options(list(targets)) if isinstance(model, TargetedParse) else {}


def parse_dataset(
    model,
    dataset,
    batch_size: int = 64,
    max_scenes: int | None = None,
    score_threshold: float | None = 0.01,
    progress: bool = False,
    keep_images: bool = True,
):
    """Parse the scenes of ``dataset``; returns (parses, targets, images), one parse per batch.

    Candidates down to ``score_threshold`` are kept (when ``model.parse`` takes a ``score_threshold``)
    so that average precision sees a ranked list; counts use the model's own presence threshold.
    ``score_threshold=None`` keeps the objects the model itself reports (its own threshold). Each
    batch is parsed with :func:`parse_options`. ``keep_images=False`` returns ``None`` for the images
    (large scenes need not be kept).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if max_scenes is not None:
        max_scenes = check_positive_int(max_scenes, "max_scenes")
    n = len(dataset) if max_scenes is None else min(max_scenes, len(dataset))
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    if score_threshold is not None:
        score_threshold = check_positive(score_threshold, "score_threshold")
    pass_threshold = score_threshold is not None and isinstance(model, RankedParse)
    kwargs = {"score_threshold": score_threshold} if pass_threshold else {}
    parses, targets, images = [], [], []
    device = model.device
    for start in tqdm(range(0, n, batch_size), desc="evaluating", leave=False, disable=not progress):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batch_targets = [t for _, t in items]
        x = torch.stack([im for im, _ in items]).to(device)
        with torch.no_grad():
            parses.append(model.parse(x, **kwargs, **parse_options(model, batch_targets)))
        targets += batch_targets
        if keep_images:
            images.append(x.cpu())
    return parses, targets, torch.cat(images) if keep_images else None


def detection_scores(
    boxes: Sequence[Tensor],
    scores: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    pred_counts: Sequence[int] | Tensor,
    true_counts: Sequence[int] | Tensor,
) -> dict[str, float]:
    """Detection and counting scores of per-image detections against the truth.

    Args:
        boxes: per image, detected boxes ``[N_i, 4]`` xyxy pixels (low-score candidates included:
            average precision ranks them by score).
        scores: per image, detection scores ``[N_i]``.
        gt_boxes: per image, true boxes ``[M_i, 4]``.
        pred_counts: predicted number of objects per image.
        true_counts: true number of objects per image.

    Returns:
        ``ap50``, ``ap_spair`` (mean over IoU 0.1:0.1:0.9), ``ap_coco`` (mean over 0.5:0.05:0.95) --
        NaN when the images hold no object at all -- ``count_accuracy``, ``count_mae`` and
        ``num_scenes``.

    Raises:
        ValueError: on lists of different lengths, malformed boxes or invalid counts.
    """
    ranking = RankedDetections(boxes, scores, gt_boxes, AP_THRESHOLDS)
    return {**_ranked_scores(ranking, None, pred_counts, true_counts), "num_scenes": len(gt_boxes)}


#: Every IoU threshold :func:`detection_scores` needs.
AP_THRESHOLDS = tuple(sorted(set(SPAIR_IOU_THRESHOLDS) | set(COCO_IOU_THRESHOLDS)))


def _ranked_scores(ranking: RankedDetections, pick: list[int] | None, pred_counts, true_counts) -> dict:
    """:func:`detection_scores` of the images ``pick`` (None: all) from outcomes matched once."""

    aps = ranking.aps(pick)

    def mean_ap(thresholds) -> float:
        return float(np.mean([aps[t] for t in thresholds]))

    if pick is not None:
        pred_counts, true_counts = pred_counts[pick], true_counts[pick]
    return {
        "ap50": aps[0.5],
        "ap_spair": mean_ap(SPAIR_IOU_THRESHOLDS),
        "ap_coco": mean_ap(COCO_IOU_THRESHOLDS),
        "count_accuracy": count_accuracy(pred_counts, true_counts),
        "count_mae": count_mae(pred_counts, true_counts),
    }


def _detections(model, dataset, batch_size: int, max_scenes: int | None, progress: bool) -> dict[str, Any]:
    """Parse ``dataset`` and gather what the scores need: boxes, scores, counts, truth, images."""
    parses, targets, images = parse_dataset(model, dataset, batch_size, max_scenes, progress=progress)
    boxes = [b.cpu() for p in parses for b in p.boxes]
    scores = [s.cpu() for p in parses for s in p.scores]
    if isinstance(model, RankedParse):  # the parses hold low-score candidates too
        present = [s >= model.presence_threshold for s in scores]
    else:  # the parses hold the objects the model judged present
        present = [torch.ones(len(b), dtype=torch.bool) for b in boxes]
    recon = None
    if all(p.reconstruction is not None for p in parses):
        recon = torch.cat([p.reconstruction.cpu() for p in parses])
    labels = None
    if all(p.labels is not None for p in parses):
        labels = [lab.cpu() for p in parses for lab in p.labels]
    return {
        "labels": labels,
        "gt_labels": [t["labels"] for t in targets] if all("labels" in t for t in targets) else None,
        "boxes": boxes,
        "scores": scores,
        "gt_boxes": [t["boxes"] for t in targets],
        "present": present,
        "pred_counts": torch.tensor([int(k.sum()) for k in present]),
        "true_counts": torch.tensor([int(t["count"]) for t in targets]),
        "images": images,
        "reconstruction": recon,
    }


def evaluate_detection(
    model,
    dataset,
    batch_size: int = 64,
    max_scenes: int | None = None,
    progress: bool = False,
    intervals: int = 0,
) -> dict[str, Any]:
    """Detection, counting and reconstruction scores of ``model`` on ``dataset``.

    Args:
        model: a scene model with ``parse`` (or any object with ``parse(images) -> SceneParse`` and a
            ``device``, such as :class:`ppl_scenes.baselines.ConnComp`).
        dataset: ``(image, target)`` pairs whose targets hold ``boxes`` (xyxy pixels) and ``count``.
        batch_size: scenes per ``parse`` call.
        max_scenes: evaluate on the first ``max_scenes`` scenes only.
        progress: show a progress bar.

    Returns:
        ``ap50`` (AP at IoU 0.5), ``ap_spair`` (mean AP over IoU 0.1:0.1:0.9, as SPAIR), ``ap_coco``
        (mean over 0.5:0.05:0.95), each in [0, 1] (NaN when the scenes hold no object at all);
        ``count_accuracy`` in [0, 1]; ``count_mae`` >= 0; ``num_scenes``; and ``rmse`` of the
        reconstructions when the model gives them; ``acc`` and ``nmi`` of the objects' ``labels``
        (clustering accuracy under a one-to-one cluster-to-class map, and NMI, over present objects
        matched to a true box at IoU > 0.5), ``acc_majority`` (each cluster mapped to its most
        frequent class, GMAIR's Eq. 16 as written) and
        ``num_clustered`` when the parses carry labels and the targets classes. Counts are the
        objects scoring at least the model's ``config.score_threshold`` (0.5 when it has none) when
        ``parse`` takes a ``score_threshold``, else all the objects ``parse`` reports. With
        ``intervals`` > 0, ``intervals`` holds the 95 % bootstrap interval of each detection,
        counting and clustering score over that many resamples of the scenes
        (:func:`ppl_scenes.metrics.bootstrap_interval`).
    """
    d = _detections(model, dataset, batch_size, max_scenes, progress)
    ranking = RankedDetections(d["boxes"], d["scores"], d["gt_boxes"], AP_THRESHOLDS)  # matched once
    results: dict[str, Any] = {
        **_ranked_scores(ranking, None, d["pred_counts"], d["true_counts"]),
        "num_scenes": len(d["gt_boxes"]),
    }
    if d["reconstruction"] is not None:
        results["rmse"] = rmse(d["images"], d["reconstruction"])
    results.update(_clustering(d))
    if intervals:
        results["intervals"] = bootstrap_interval(
            lambda idx: _detection_statistic(d, ranking, idx), len(d["gt_boxes"]), intervals
        )
    return results


def _detection_statistic(d: dict[str, Any], ranking: RankedDetections, idx) -> dict[str, float]:
    """The detection, counting and clustering scores of the scenes ``idx`` (repeats allowed)."""
    pick = [int(i) for i in idx]
    sub = {k: [v[i] for i in pick] if isinstance(v, list) else v for k, v in d.items()}
    scores = _ranked_scores(ranking, pick, d["pred_counts"], d["true_counts"])
    clustering = _clustering(sub)
    clustering.pop("num_clustered", None)
    return {**scores, **clustering}


def _clustering(d: dict[str, Any]) -> dict[str, float]:
    """ACC and NMI of the labels of the objects judged present, when the parses and targets have labels.

    Scored over the detections whose best IoU with a true box exceeds 0.5 (GMAIR Appendix C).
    """
    if d["labels"] is None or d["gt_labels"] is None:
        return {}
    scores = detection_clustering_scores(
        [b[k] for b, k in zip(d["boxes"], d["present"])],
        [lab[k] for lab, k in zip(d["labels"], d["present"])],
        d["gt_boxes"],
        d["gt_labels"],
        iou_threshold=0.5,
    )
    return {
        "acc": scores["acc"],
        "acc_majority": scores["acc_majority"],
        "nmi": scores["nmi"],
        "num_clustered": scores["n_matched"],
    }


def evaluate_by_count(
    model, dataset, batch_size: int = 64, max_scenes: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Detection and counting scores per true number of objects (SPAIR Fig. 3 and Fig. 7).

    The dataset is parsed once; the scores of :func:`detection_scores` are then computed over all
    scenes and, separately, over the scenes holding each number of objects.

    Args:
        model, dataset, batch_size, max_scenes, progress: as :func:`evaluate_detection`.

    Returns:
        ``{"overall": {...}, "by_count": {count: {...}}}``: ``overall`` is what
        :func:`evaluate_detection` returns; ``by_count`` maps each true count that occurs (ascending)
        to ``ap50``, ``ap_spair``, ``ap_coco``, ``count_accuracy``, ``count_mae`` and ``num_scenes``
        of the scenes with that many objects (AP is NaN for scenes without objects).
    """
    d = _detections(model, dataset, batch_size, max_scenes, progress)
    overall = detection_scores(d["boxes"], d["scores"], d["gt_boxes"], d["pred_counts"], d["true_counts"])
    if d["reconstruction"] is not None:
        overall["rmse"] = rmse(d["images"], d["reconstruction"])
    by_count: dict[int, dict[str, float]] = {}
    true_counts = d["true_counts"]
    for count in sorted(set(true_counts.tolist())):
        idx = [i for i, c in enumerate(true_counts.tolist()) if c == count]
        by_count[int(count)] = detection_scores(
            [d["boxes"][i] for i in idx],
            [d["scores"][i] for i in idx],
            [d["gt_boxes"][i] for i in idx],
            d["pred_counts"][idx],
            true_counts[idx],
        )
    return {"overall": overall, "by_count": by_count}


def evaluate_instances(
    model,
    dataset,
    batch_size: int = 64,
    max_scenes: int | None = None,
    progress: bool = False,
    iou_threshold: float = 0.5,
    box_key: str = "patch_boxes",
    intervals: int = 0,
) -> dict[str, Any]:
    """MIST's scores (Tables 1 and 2): synthesis RMSE and instance-level detection and classification.

    Each image's reported patches are matched one-to-one to its true objects (Hungarian on IoU,
    :func:`ppl_scenes.metrics.match_detections`); a true object is *detected* when its match has an
    IoU above ``iou_threshold``, *classified* when the matched patch's label equals its label.

    Args:
        model: a model whose ``parse`` returns patches (MIST or its baselines); when its config has
            ``count_from_labels``, each image's true count is passed to ``parse``.
        dataset: ``(image, target)`` pairs; targets hold ``labels``, ``count`` and ``box_key``.
        batch_size, max_scenes, progress: as :func:`parse_dataset`.
        iou_threshold: IoU a detection must exceed (0.5 in the paper).
        box_key: the target boxes to match: ``"patch_boxes"`` (the pasted digit's square, the same
            shape as MIST's patches; default) or ``"boxes"`` (tight ink boxes).
        intervals: bootstrap resamples of the scenes for 95 % intervals of the rates (0: none).

    Returns:
        ``detection_rate`` (detected objects / true objects), ``classification_accuracy`` (correctly
        classified / detected) and ``detected_and_classified`` (both / true objects) -- the last two
        only when the parses carry labels -- ``ap50`` (AP of the patches ranked by heatmap score),
        ``rmse`` of the synthesis when the parses give one, ``num_scenes`` and ``num_objects``; and
        ``intervals`` (``{rate: [low, high]}``) when asked.
    """
    parses, targets, images = parse_dataset(model, dataset, batch_size, max_scenes, progress=progress)
    if any(box_key not in t for t in targets):
        raise ValueError(f"the dataset's targets have no {box_key!r}: pass box_key='boxes'")
    boxes = [b.cpu() for p in parses for b in p.boxes]
    scores = [sc.cpu() for p in parses for sc in p.scores]
    labels = []
    for p in parses:
        labels += [None] * len(p.boxes) if p.labels is None else [lab.cpu() for lab in p.labels]
    recon = [p.reconstruction.cpu() for p in parses if p.reconstruction is not None]

    gt_boxes = [torch.as_tensor(t[box_key], dtype=torch.float32).reshape(-1, 4) for t in targets]
    # Per scene: true objects, detected ones, detected and rightly classified ones.
    tally = np.zeros((len(targets), 3), dtype=np.int64)
    for i, (pred, lab, gt, t) in enumerate(zip(boxes, labels, gt_boxes, targets)):
        pred_idx, gt_idx = match_detections(pred, gt, iou_threshold)
        tally[i, :2] = len(gt), len(pred_idx)
        if lab is not None and len(pred_idx):
            tally[i, 2] = int((lab[pred_idx] == torch.as_tensor(t["labels"])[gt_idx]).sum())
    with_labels = all(lab is not None for lab in labels)
    results: dict[str, Any] = {
        **_instance_rates(tally, with_labels),
        "ap50": average_precision(boxes, scores, gt_boxes, iou_threshold),
    }
    if recon:
        results["rmse"] = rmse(images, torch.cat(recon))
    results.update(num_scenes=len(targets), num_objects=int(tally[:, 0].sum()))
    if intervals:
        results["intervals"] = bootstrap_interval(
            lambda idx: _instance_rates(tally[idx], with_labels), len(targets), intervals
        )
    return results


def _instance_rates(tally: np.ndarray, with_labels: bool) -> dict[str, float]:
    """Detection rate (and classification scores) from per-scene (objects, detected, classified)."""
    num_objects, detected, classified = (int(v) for v in tally.sum(0))
    nan = float("nan")
    rates = {"detection_rate": detected / num_objects if num_objects else nan}
    if with_labels:
        rates["classification_accuracy"] = classified / detected if detected else nan
        rates["detected_and_classified"] = classified / num_objects if num_objects else nan
    return rates


def evaluate_image_labels(
    model,
    dataset,
    task: str,
    batch_size: int = 64,
    max_scenes: int | None = None,
    progress: bool = False,
    intervals: int = 0,
) -> dict[str, Any]:
    """Accuracy of image-level predictions (``parse(x).image_labels``) on ``dataset``.

    Args:
        model: anything with ``parse(images) -> SceneParse`` giving ``image_labels`` and a ``device``.
        dataset: ``(image, target)`` pairs whose targets hold ``multi_label`` (identify) or ``sum``.
        task: ``"identify"`` (a prediction is correct when its multi-hot set equals the truth) or
            ``"sum"`` (when the predicted sum equals it).
        batch_size, max_scenes, progress: as :func:`parse_dataset`.
        intervals: bootstrap resamples of the scenes for 95 % intervals (0: none).

    Returns:
        ``accuracy`` and ``num_scenes``; for ``"identify"`` also ``label_accuracy``, the mean per-class
        accuracy of the multi-hot prediction; ``intervals`` (``{"accuracy": [low, high]}``) when asked.
    """
    parses, targets, _ = parse_dataset(
        model, dataset, batch_size, max_scenes, progress=progress, keep_images=False
    )
    return image_label_metrics(parses, targets, task, intervals)


def _predictions_and_truth(parses: Sequence, targets: Sequence[dict], task: str) -> tuple[Tensor, Tensor]:

    pred = torch.cat([p.image_labels.cpu() for p in parses])
    return pred, image_targets(task, list(targets)).long()


def _exactly_right(pred: Tensor, truth: Tensor, task: str) -> Tensor:
    return (pred == truth).all(-1) if task == "identify" else pred == truth


def image_label_correct(parses: Sequence, targets: Sequence[dict], task: str) -> Tensor:
    """``[N]`` booleans: whether each scene's prediction (``image_labels``) equals its truth exactly."""
    return _exactly_right(*_predictions_and_truth(parses, targets, task), task)


def image_label_metrics(
    parses: Sequence, targets: Sequence[dict], task: str, intervals: int = 0
) -> dict[str, Any]:
    """:func:`evaluate_image_labels`'s scores of given parses (one per batch) against the targets."""
    pred, truth = _predictions_and_truth(parses, targets, task)
    n = len(targets)
    correct = _exactly_right(pred, truth, task).double().numpy()
    results: dict[str, Any] = {"accuracy": float(correct.sum()) / n, "num_scenes": n}
    if task == "identify":
        results["label_accuracy"] = float((pred == truth).float().mean(-1).sum()) / n
    if intervals:
        results["intervals"] = bootstrap_interval(
            lambda idx: {"accuracy": float(correct[idx].mean())}, n, intervals
        )
    return results


def matched_codes(
    model, dataset, max_scenes: int | None = 1000, iou_threshold: float = 0.5, batch_size: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``what`` codes of the detections that hit a true object, with the model's and the true labels.

    Each reported object (``parse(x)`` at the model's own threshold) takes the label of the true box
    it overlaps most (SSDIR §4.2, GMAIR's matched detections); it counts when that IoU exceeds
    ``iou_threshold``. This is what a linear probe or a t-SNE of the codes is run on.

    Args:
        model: a scene model whose parses carry ``what`` (and perhaps ``labels``).
        dataset: ``(image, target)`` pairs whose targets hold ``boxes`` and ``labels``.
        max_scenes: use the first ``max_scenes`` scenes (None: all).
        iou_threshold: the IoU a detection must exceed to be labelled.
        batch_size: scenes per ``parse`` call.

    Returns:
        ``(codes [N, A], model_labels [N] (-1 where the parse has no labels), true_labels [N])``.
    """
    parses, targets, _ = parse_dataset(
        model, dataset, batch_size, max_scenes, score_threshold=None, keep_images=False
    )
    pairs = [(p, i) for p in parses for i in range(len(p.boxes))]
    codes, labels, truth = [], [], []
    for (parse, i), target in zip(pairs, targets):
        if parse.what is None:
            raise ValueError(f"{type(model).__name__}.parse gives no 'what' codes to match")
        boxes = parse.boxes[i].cpu()
        if len(boxes) == 0 or len(target["boxes"]) == 0:
            continue
        best, which = box_iou(boxes, torch.as_tensor(target["boxes"], dtype=boxes.dtype)).max(1)
        hit = best > iou_threshold
        codes.append(parse.what[i].cpu()[hit])
        own = parse.labels[i].cpu()[hit] if parse.labels is not None else torch.full((int(hit.sum()),), -1)
        labels.append(own.long())
        truth.append(torch.as_tensor(target["labels"])[which[hit]].long())
    if not codes:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, 0), empty, empty
    return torch.cat(codes), torch.cat(labels), torch.cat(truth)
