"""Multi-scale scattered digits, SSDIR §4 and its ablation (§4.3).

Generative story of one scene (SSDIR's "drawing random cells in a preset grid and inserting a
random-sized MNIST digit inside it with a random offset"): draw a grid side ``g`` uniformly from
``grid_size``; fill a random non-empty subset of the ``g x g`` cells (each cell with probability 1/2,
redrawn while empty); for each filled cell draw a digit instance and a side uniformly in
``[min_size, max_size]``, put the digit's centre uniformly inside the cell, then shift it just enough
to keep the whole digit inside the canvas; composite with a pixel-wise max. One digit per cell bounds
how many digits can crowd one place; large digits in a fine grid still overlap, which is the occlusion
SSDIR's ablation varies.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .digits import ink_boxes, resize_digits
from .scenes import (
    DigitSceneDataset,
    Target,
    check_range,
    check_sides,
    check_size,
    clamped_corners,
    draw_count,
    paste_max,
    to_image,
)

__all__ = ["MultiScaleDigits"]


class MultiScaleDigits(DigitSceneDataset):
    """Digits of widely varying sizes on a random grid (SSDIR §4.3), at CPU scale by default.

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` or ``"test"`` MNIST digits.
        seed: seed of the scene stream.
        canvas_size: side of the canvas, or ``(H, W)``. Default 128.
        grid_size: grid side ``g``, an int or an inclusive range drawn per scene. Default ``(2, 4)``.
        min_size, max_size: range of digit sides in pixels, drawn uniformly per digit. Default 16–64.
        root, download: digit source, see :func:`~ppl_scenes.data.load_digits`.

    Targets: ``boxes`` (tight ink boxes), ``labels``, ``count``, ``patch_boxes``, ``digit_indices``,
    ``cells`` (row-major cell index of each digit) and ``grid_size`` (int64 scalar ``g``).
    """

    object_keys = (*DigitSceneDataset.object_keys, "cells")

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        canvas_size: int | tuple[int, int] = 128,
        grid_size: int | tuple[int, int] = (2, 4),
        min_size: int = 16,
        max_size: int = 64,
        root: str | None = None,
        download: bool = True,
    ) -> None:
        image_size = check_size(canvas_size, "canvas_size")
        self.grid_size = check_range(grid_size, "grid_size")
        self.min_size, self.max_size = check_sides(min_size, max_size, image_size, minimum=2)
        if self.grid_size[1] > min(image_size):
            raise ValueError(f"grid_size {grid_size} has more cells per side than the canvas has pixels")
        # Digits are resized per scene from the raw 28x28 bank: one bank per side would cost 49 banks.
        super().__init__(num_scenes, split, seed, image_size, 28, root, download)

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        bank = self.bank
        height, width = self.image_size
        g = draw_count(rng, self.grid_size)
        filled = rng.random(g * g) < 0.5
        while not filled.any():
            filled = rng.random(g * g) < 0.5
        cells = np.flatnonzero(filled)
        n = len(cells)
        idx = rng.integers(0, len(bank), size=n)
        sides = rng.integers(self.min_size, self.max_size + 1, size=n)
        row, col = np.divmod(cells, g)
        cx = (col + rng.random(n)) * (width / g)
        cy = (row + rng.random(n)) * (height / g)
        xy = clamped_corners(cx, cy, sides, self.image_size)

        canvas = np.zeros(self.image_size, dtype=np.uint8)
        ink = np.zeros((n, 4), dtype=np.int64)
        for k in range(n):
            patch = resize_digits(bank.images[idx[k]], int(sides[k]))[0]
            ink[k] = ink_boxes(patch)[0]
            paste_max(canvas, patch, int(xy[k, 0]), int(xy[k, 1]))
        target = self.digit_target(
            idx, xy, ink=ink, sides=sides, cells=cells.astype(np.int64), grid_size=np.int64(g)
        )
        return to_image(canvas), target
