"""Evaluation metrics: detection AP, object counts, clustering ACC/NMI, reconstruction RMSE, linear probe,
and the scoring of models on scene datasets (:mod:`ppl_scenes.metrics.scoring`).

Boxes are float tensors ``[N, 4]`` in absolute pixels, ``(x1, y1, x2, y2)``; dataset-level metrics
take per-image lists of tensors.
"""

from ppl_scenes.metrics.clustering import (
    cluster_accuracy,
    cluster_class_map,
    contingency_table,
    detection_clustering_scores,
    normalized_mutual_info,
)
from ppl_scenes.metrics.counts import count_accuracy, count_mae, count_metrics_by_true_count
from ppl_scenes.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    SPAIR_IOU_THRESHOLDS,
    RankedDetections,
    average_precision,
    average_precision_range,
    match_detections,
)
from ppl_scenes.metrics.intervals import bootstrap_interval
from ppl_scenes.metrics.probe import linear_probe
from ppl_scenes.metrics.reconstruction import mse, per_image_rmse, rmse
from ppl_scenes.metrics.scoring import (
    detection_scores,
    evaluate_by_count,
    evaluate_detection,
    evaluate_image_labels,
    evaluate_instances,
    image_label_correct,
    image_label_metrics,
    matched_codes,
    parse_dataset,
    parse_options,
)

__all__ = [
    "RankedDetections",
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
    "COCO_IOU_THRESHOLDS",
    "SPAIR_IOU_THRESHOLDS",
    "average_precision",
    "average_precision_range",
    "bootstrap_interval",
    "cluster_accuracy",
    "cluster_class_map",
    "contingency_table",
    "count_accuracy",
    "count_mae",
    "count_metrics_by_true_count",
    "detection_clustering_scores",
    "linear_probe",
    "match_detections",
    "mse",
    "normalized_mutual_info",
    "per_image_rmse",
    "rmse",
]
