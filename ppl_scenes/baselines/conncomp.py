"""ConnComp: the connected-components detection baseline of SPAIR (Crawford & Pineau 2019, §5.1).

"For each pixel, ConnComp computes the absolute difference between the color at that pixel and the
background color (which is given to it). All pixels for which this difference is greater than a
threshold τ are assigned a label of 1, the rest are assigned 0. Each connected cluster of pixels that
have label 1 is taken to be an object." Its success measures how easy a dataset is to segment: it
does well exactly when objects neither overlap nor touch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ppl_scenes.checks import check_images, check_positive_int
from ppl_scenes.metrics.scoring import evaluate_detection
from ppl_scenes.scene import SceneParse

__all__ = ["ConnComp", "conncomp_detect"]

_STRUCTURES = {
    4: ndimage.generate_binary_structure(2, 1),  # edge neighbours only
    8: ndimage.generate_binary_structure(2, 2),  # edge and corner neighbours
}


def _background(background: float | Sequence[float] | Tensor, channels: int) -> np.ndarray:
    """Background colour as a ``[C, 1, 1]`` array with values in [0, 1]."""
    if isinstance(background, bool):
        raise ValueError(f"background must be a number or one value per channel, got {background!r}")
    if isinstance(background, Tensor):
        bg = background.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            bg = np.asarray(background, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"background must be a number or one value per channel, got {background!r}"
            ) from None
    bg = bg.reshape(-1)
    if bg.size == 1:
        bg = np.repeat(bg, channels)
    if bg.size != channels:
        raise ValueError(f"background has {bg.size} values but the images have {channels} channels")
    if not np.isfinite(bg).all() or (bg < 0).any() or (bg > 1).any():
        raise ValueError(f"background values must lie in [0, 1], got {bg.tolist()}")
    return bg.reshape(channels, 1, 1)


def conncomp_detect(
    images: Tensor,
    threshold: float = 0.5,
    background: float | Sequence[float] | Tensor = 0.0,
    min_area: int = 1,
    connectivity: Literal[4, 8] = 8,
    score: Literal["area", "constant"] = "area",
) -> tuple[list[Tensor], list[Tensor]]:
    """Detect objects as connected components of pixels that differ from the background.

    A pixel is foreground when ``sum_c |image[c] - background[c]| > threshold``; each connected
    component of foreground pixels with at least ``min_area`` pixels gives one box, the tight box
    around it with exclusive upper corner (a single pixel at column x, row y gives
    ``(x, y, x + 1, y + 1)``), so boxes are in the same pixel-edge coordinates as ground truth that
    covers whole pixels.

    Args:
        images: ``[B, C, H, W]`` float32 in [0, 1], C = 1 or 3.
        threshold: τ, in channel-summed intensity units, so ``0 <= threshold < C``.
        background: background colour, one value for all channels or one per channel, in [0, 1].
        min_area: smallest component kept, in pixels (1 keeps everything, as in the paper; larger
            values suppress noise specks).
        connectivity: 8 (default) joins pixels that touch at a corner — digit strokes often do;
            4 joins only pixels sharing an edge.
        score: ``"area"`` (default): a box's score is its component's pixel count, so larger blobs
            rank first in AP; ``"constant"``: every box scores 1.0 (AP then depends on tie order).
            The paper does not say how it ranked ConnComp's boxes.

    Returns:
        ``(boxes, scores)``: per image, float32 boxes ``[N_i, 4]`` xyxy and scores ``[N_i]`` on the
        images' device, components in raster order of their first pixel.

    Raises:
        ValueError: on images that are not a valid batch (see :func:`ppl_scenes.checks.check_images`)
            or arguments outside their ranges.
    """
    check_images(images)
    channels = images.shape[1]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or not 0 <= threshold < channels
    ):
        raise ValueError(
            f"threshold must be a number in [0, {channels}) for {channels}-channel images, got {threshold!r}"
        )
    min_area = check_positive_int(min_area, "min_area")
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if score not in ("area", "constant"):
        raise ValueError(f"score must be 'area' or 'constant', got {score!r}")
    bg = _background(background, channels)

    diff = np.abs(images.detach().cpu().numpy().astype(np.float64) - bg[None]).sum(axis=1)
    all_boxes: list[Tensor] = []
    all_scores: list[Tensor] = []
    for mask in diff > threshold:
        labels, n = ndimage.label(mask, structure=_STRUCTURES[connectivity])
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        boxes, scores = [], []
        for k, sl in enumerate(ndimage.find_objects(labels)):
            if sl is None or areas[k] < min_area:
                continue
            rows, cols = sl
            boxes.append((cols.start, rows.start, cols.stop, rows.stop))
            scores.append(float(areas[k]) if score == "area" else 1.0)
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(images.device))
        all_scores.append(torch.tensor(scores, dtype=torch.float32).to(images.device))
    return all_boxes, all_scores


class ConnComp:
    """:func:`conncomp_detect` behind the scene models' ``parse`` surface, for the same evaluation.

    ``ConnComp().parse(images)`` returns a :class:`~ppl_scenes.models.base.SceneParse` holding every
    component found (boxes and scores; no codes, no reconstruction), so
    :func:`ppl_scenes.metrics.scoring.evaluate_detection` and
    :func:`~ppl_scenes.metrics.scoring.evaluate_by_count` score it exactly as they score a model: its
    count is the number of components.

    Args:
        threshold, background, min_area, connectivity, score: as :func:`conncomp_detect` (same
            defaults).

    Raises:
        ValueError: from ``parse``, on invalid images or arguments (checked by :func:`conncomp_detect`).
    """

    name = "conncomp"
    device = torch.device("cpu")

    def __init__(
        self,
        threshold: float = 0.5,
        background: float | Sequence[float] | Tensor = 0.0,
        min_area: int = 1,
        connectivity: Literal[4, 8] = 8,
        score: Literal["area", "constant"] = "area",
    ):
        self.threshold = threshold
        self.background = background
        self.min_area = min_area
        self.connectivity = connectivity
        self.score = score

    def parse(self, images: Tensor):
        """Connected components of ``images`` ``[B, C, H, W]`` as a ``SceneParse``."""
        boxes, scores = conncomp_detect(
            images,
            threshold=self.threshold,
            background=self.background,
            min_area=self.min_area,
            connectivity=self.connectivity,
            score=self.score,
        )
        return SceneParse(boxes=boxes, scores=scores)

    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        max_scenes: int | None = None,
        progress: bool = False,
        intervals: int = 0,
    ) -> dict[str, Any]:
        """Detection and counting scores on ``dataset`` (see ``evaluate_detection``; ``intervals``:
        bootstrap resamples)."""
        return evaluate_detection(
            self,
            dataset,
            batch_size=batch_size,
            max_scenes=max_scenes,
            progress=progress,
            intervals=intervals,
        )

    def __repr__(self) -> str:
        return (
            f"ConnComp(threshold={self.threshold}, background={self.background!r}, "
            f"min_area={self.min_area}, connectivity={self.connectivity}, score={self.score!r})"
        )
