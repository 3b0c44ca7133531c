"""Procedural RGB scenes of coloured shapes: fully offline, known classes, varied sizes and colours.

Generative story of one scene: a dark background colour (each channel uniform in ``[0, background]``);
a count drawn from ``num_shapes``; for each shape a class, a side uniform in ``[min_size, max_size]``,
a saturated colour (hue uniform, saturation in [0.6, 1], value in [0.7, 1]) and a position uniform
inside the canvas such that its square overlaps earlier ones by at most ``max_overlap`` of the smaller
square; shapes are painted in order, later ones over earlier ones (opaque, as objects occlude).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import Tensor

from .digits import ink_boxes
from .scenes import (
    SceneDataset,
    Target,
    check_fraction,
    check_range,
    check_sides,
    check_size,
    draw_count,
    make_target,
    place_squares,
    square_boxes,
    to_image,
)

__all__ = ["SHAPE_NAMES", "Shapes", "shape_mask"]

#: Shape classes; a shape's label is its index here.
SHAPE_NAMES = ("square", "circle", "triangle", "diamond", "cross")


@lru_cache(maxsize=512)
def shape_mask(name: str, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a shape filling its square (read-only, cached)."""
    if name not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {name!r}; known shapes: {SHAPE_NAMES}")
    # Pixel centres in [0, 1] coordinates of the square.
    t = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(t, t, indexing="ij")
    du, dv = np.abs(u - 0.5), np.abs(v - 0.5)
    if name == "square":
        mask = np.ones((size, size), dtype=bool)
    elif name == "circle":
        mask = du**2 + dv**2 <= 0.25
    elif name == "triangle":
        mask = du <= v / 2
    elif name == "diamond":
        mask = du + dv <= 0.5
    else:
        mask = (du <= 1 / 6) | (dv <= 1 / 6)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=512)
def _mask_box(name: str, size: int) -> np.ndarray:
    return ink_boxes(shape_mask(name, size).astype(np.uint8) * 255)[0]


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for rows ``[N, 3]`` in [0, 1]."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


class Shapes(SceneDataset):
    """Coloured shapes on a dark background (RGB).

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` or ``"test"``; selects an independent scene stream.
        seed: seed of the scene stream.
        canvas_size: side of the canvas, or ``(H, W)``. Default 64.
        num_shapes: shapes per scene, an int or an inclusive range. Default ``(1, 5)``.
        min_size, max_size: range of shape sides in pixels. Default 10–24.
        shapes: the classes to draw from (names in :data:`SHAPE_NAMES`); labels stay the index in
            :data:`SHAPE_NAMES` whatever subset is used. Default all five.
        max_overlap: largest overlap of two shapes' squares, as a fraction of the smaller. Default 0.25.
        background: largest background intensity per channel. Default 0.15.

    Targets: ``boxes`` (tight box of each shape's mask), ``labels`` (shape index), ``count``,
    ``patch_boxes`` (the shape's square) and ``colors`` (float32 ``[N, 3]`` RGB).
    """

    object_keys = ("boxes", "labels", "patch_boxes", "colors")
    channels = 3

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        canvas_size: int | tuple[int, int] = 64,
        num_shapes: int | tuple[int, int] = (1, 5),
        min_size: int = 10,
        max_size: int = 24,
        shapes: tuple[str, ...] = SHAPE_NAMES,
        max_overlap: float = 0.25,
        background: float = 0.15,
    ) -> None:
        image_size = check_size(canvas_size, "canvas_size")
        super().__init__(num_scenes, split, seed, image_size)
        self.num_shapes = check_range(num_shapes, "num_shapes", minimum=0)
        self.min_size, self.max_size = check_sides(min_size, max_size, image_size, minimum=3)
        if isinstance(shapes, str) or len(shapes) == 0 or any(s not in SHAPE_NAMES for s in shapes):
            raise ValueError(
                f"shapes must be a non-empty sequence of names from {SHAPE_NAMES}, got {shapes!r}"
            )
        self.shapes = tuple(shapes)
        self._classes = np.array([SHAPE_NAMES.index(s) for s in self.shapes], dtype=np.int64)
        self.max_overlap = check_fraction(max_overlap, "max_overlap")
        self.background = check_fraction(background, "background")

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        height, width = self.image_size
        n = draw_count(rng, self.num_shapes)
        labels = self._classes[rng.integers(0, len(self._classes), size=n)]
        sides = rng.integers(self.min_size, self.max_size + 1, size=n)
        hsv = np.column_stack([rng.random(n), rng.uniform(0.6, 1.0, n), rng.uniform(0.7, 1.0, n)])
        colors = _hsv_to_rgb(hsv).astype(np.float32)
        back = (rng.random(3) * self.background).astype(np.float32)
        xy = place_squares(rng, sides, self.image_size, self.max_overlap, what="shapes")

        canvas = np.empty((3, height, width), dtype=np.float32)
        canvas[:] = back[:, None, None]
        boxes = np.zeros((n, 4), dtype=np.float32)
        for k in range(n):
            name, s = SHAPE_NAMES[labels[k]], int(sides[k])
            x, y = int(xy[k, 0]), int(xy[k, 1])
            region = canvas[:, y : y + s, x : x + s]
            region[:, shape_mask(name, s)] = colors[k][:, None]
            boxes[k] = _mask_box(name, s) + np.array([x, y, x, y])
        target = make_target(boxes, labels, patch_boxes=square_boxes(xy, sides), colors=colors)
        return to_image(canvas), target
