"""Evaluation of scene models on datasets with ground truth: detection, counting, reconstruction."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ppl_scenes.metrics import (
    COCO_IOU_THRESHOLDS,
    SPAIR_IOU_THRESHOLDS,
    average_precision_range,
    count_accuracy,
    count_mae,
    rmse,
)


def parse_dataset(
    model,
    dataset,
    batch_size: int = 64,
    max_scenes: int | None = None,
    score_threshold: float = 0.01,
    progress: bool = False,
):
    """Parse the scenes of ``dataset``; returns (parses, targets, images), one parse per batch.

    Candidates down to ``score_threshold`` are kept so that average precision sees a ranked list;
    counts use the model's own presence threshold.
    """
    n = len(dataset) if max_scenes is None else min(max_scenes, len(dataset))
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    parses, targets, images = [], [], []
    device = model.device
    for start in tqdm(range(0, n, batch_size), desc="evaluating", leave=False, disable=not progress):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        x = torch.stack([im for im, _ in items]).to(device)
        parses.append(model.parse(x, score_threshold=score_threshold))
        targets += [t for _, t in items]
        images.append(x.cpu())
    return parses, targets, torch.cat(images)


def evaluate_detection(
    model, dataset, batch_size: int = 64, max_scenes: int | None = None, progress: bool = False
) -> dict[str, float]:
    """AP (IoU 0.5, mean over 0.1:0.1:0.9 as SPAIR, mean over 0.5:0.05:0.95 as COCO), count accuracy,
    mean absolute count error and reconstruction RMSE of ``model`` on ``dataset``."""
    parses, targets, images = parse_dataset(model, dataset, batch_size, max_scenes, progress=progress)
    boxes = [b.cpu() for p in parses for b in p.boxes]
    scores = [s.cpu() for p in parses for s in p.scores]
    gt = [t["boxes"] for t in targets]
    threshold = getattr(model.config, "score_threshold", 0.5)
    pred_counts = torch.tensor([int((s >= threshold).sum()) for s in scores])
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
    if parses[0].reconstruction is not None:
        recon = torch.cat([p.reconstruction.cpu() for p in parses])
        results["rmse"] = rmse(images, recon)
    return results
