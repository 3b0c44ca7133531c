"""Pure tensor functions shared by the models: boxes, spatial transformer, compositing, heatmaps."""

from ppl_scenes.ops.boxes import (
    box_convert,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    drawn_boxes,
    grid_cell_origins,
    nms,
    spair_where_to_cxcywh,
    tighten_boxes,
    xyxy_to_cxcywh,
)
from ppl_scenes.ops.compositing import (
    blend,
    blend_windows,
    composite,
    composite_windows,
    depth_weighted_layers,
    depth_weights,
    fold_windows,
    window_overlap,
)
from ppl_scenes.ops.heatmaps import (
    extract_top_k,
    local_maxima,
    local_spatial_softmax,
    scale_pool,
    soft_argmax,
    target_heatmap,
)
from ppl_scenes.ops.transformer import crop, crop_localized, localized_window, paste

__all__ = [
    "blend",
    "blend_windows",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "composite",
    "composite_windows",
    "crop",
    "crop_localized",
    "cxcywh_to_xyxy",
    "depth_weighted_layers",
    "drawn_boxes",
    "depth_weights",
    "extract_top_k",
    "fold_windows",
    "grid_cell_origins",
    "local_maxima",
    "local_spatial_softmax",
    "localized_window",
    "nms",
    "paste",
    "scale_pool",
    "soft_argmax",
    "spair_where_to_cxcywh",
    "target_heatmap",
    "tighten_boxes",
    "window_overlap",
    "xyxy_to_cxcywh",
]
