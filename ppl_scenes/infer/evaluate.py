"""Evaluation of scene models on datasets with ground truth: detection, counting, reconstruction."""

from __future__ import annotations

import inspect

import torch
from tqdm.auto import tqdm

from ppl_scenes.checks import check_positive, check_positive_int
from ppl_scenes.metrics import (
    COCO_IOU_THRESHOLDS,
    SPAIR_IOU_THRESHOLDS,
    average_precision_range,
    count_accuracy,
    count_mae,
    rmse,
)


def _accepts_score_threshold(model) -> bool:
    try:
        params = inspect.signature(model.parse).parameters
    except (TypeError, ValueError):
        return False
    return "score_threshold" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def parse_dataset(
    model,
    dataset,
    batch_size: int = 64,
    max_scenes: int | None = None,
    score_threshold: float = 0.01,
    progress: bool = False,
):
    """Parse the scenes of ``dataset``; returns (parses, targets, images), one parse per batch.

    Candidates down to ``score_threshold`` are kept (when ``model.parse`` takes a ``score_threshold``)
    so that average precision sees a ranked list; counts use the model's own presence threshold.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    score_threshold = check_positive(score_threshold, "score_threshold")
    if max_scenes is not None:
        max_scenes = check_positive_int(max_scenes, "max_scenes")
    n = len(dataset) if max_scenes is None else min(max_scenes, len(dataset))
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    kwargs = {"score_threshold": score_threshold} if _accepts_score_threshold(model) else {}
    parses, targets, images = [], [], []
    device = model.device
    for start in tqdm(range(0, n, batch_size), desc="evaluating", leave=False, disable=not progress):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        x = torch.stack([im for im, _ in items]).to(device)
        with torch.no_grad():
            parses.append(model.parse(x, **kwargs))
        targets += [t for _, t in items]
        images.append(x.cpu())
    return parses, targets, torch.cat(images)


def evaluate_detection(
    model, dataset, batch_size: int = 64, max_scenes: int | None = None, progress: bool = False
) -> dict[str, float]:
    """Detection, counting and reconstruction scores of ``model`` on ``dataset``.

    Args:
        model: a scene model with ``parse``.
        dataset: ``(image, target)`` pairs whose targets hold ``boxes`` (xyxy pixels) and ``count``.
        batch_size: scenes per ``parse`` call.
        max_scenes: evaluate on the first ``max_scenes`` scenes only.
        progress: show a progress bar.

    Returns:
        ``ap50`` (AP at IoU 0.5), ``ap_spair`` (mean AP over IoU 0.1:0.1:0.9, as SPAIR), ``ap_coco``
        (mean over 0.5:0.05:0.95), each in [0, 1] (NaN when the scenes hold no object at all);
        ``count_accuracy`` in [0, 1]; ``count_mae`` >= 0; ``num_scenes``; and ``rmse`` of the
        reconstructions when the model gives them. Counts are the objects scoring at least the model's
        ``config.score_threshold`` (0.5 when it has none) when ``parse`` takes a ``score_threshold``,
        else all the objects ``parse`` reports.
    """
    parses, targets, images = parse_dataset(model, dataset, batch_size, max_scenes, progress=progress)
    boxes = [b.cpu() for p in parses for b in p.boxes]
    scores = [s.cpu() for p in parses for s in p.scores]
    gt = [t["boxes"] for t in targets]
    if _accepts_score_threshold(model):  # the parses hold low-score candidates too
        threshold = getattr(model.config, "score_threshold", 0.5)
        pred_counts = torch.tensor([int((s >= threshold).sum()) for s in scores])
    else:  # the parses hold the objects the model judged present
        pred_counts = torch.tensor([len(b) for b in boxes])
    true_counts = torch.tensor([int(t["count"]) for t in targets])
    spair = average_precision_range(boxes, scores, gt, SPAIR_IOU_THRESHOLDS)
    coco = average_precision_range(boxes, scores, gt, COCO_IOU_THRESHOLDS)
    results = {
        "ap50": spair["per_threshold"][0.5],
        "ap_spair": spair["mean"],
        "ap_coco": coco["mean"],
        "count_accuracy": count_accuracy(pred_counts, true_counts),
        "count_mae": count_mae(pred_counts, true_counts),
        "num_scenes": len(targets),
    }
    if all(p.reconstruction is not None for p in parses):
        recon = torch.cat([p.reconstruction.cpu() for p in parses])
        results["rmse"] = rmse(images, recon)
    return results
