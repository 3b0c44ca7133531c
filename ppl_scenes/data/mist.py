"""MIST's synthetic scenes (§5.1): MNIST easy / hard, and Gabor noise.

* **MNIST easy**: the nine digits 0..8, sorted in raster order on a 3x3 grid, each centre perturbed by
  Gaussian noise whose standard deviation is 1/8 of a cell.
* **MNIST hard**: a random number of digits (repeats allowed) at Poisson-disk positions.
* **Gabor noise**: oriented Gabor kernels convolved with a Poisson impulse process (Lagae et al. 2009).

The paper does not give the canvas size; its code (ubc-vision/mist, ``json/mnist.json``) trains at
``image_size = 80`` with ``k = 9`` patches of anchor size 0.25 (20 px), so the defaults here are an
80x80 canvas with 20x20 digits and 1–9 digits for the hard variant (9 = the paper's K).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import Tensor

from .scenes import (
    DigitSceneDataset,
    SceneDataset,
    Target,
    check_fits,
    check_int,
    check_range,
    check_size,
    clamped_corners,
    draw_count,
    make_target,
    square_boxes,
    to_image,
)

__all__ = ["GaborNoise", "MISTDigits"]

MODES = ("easy", "hard")
_GRID = 3


class MISTDigits(DigitSceneDataset):
    """MIST's MNIST easy / hard scenes (§5.1).

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` or ``"test"`` MNIST digits.
        seed: seed of the scene stream.
        mode: ``"easy"`` (digits 0..8 sorted on a perturbed 3x3 grid) or ``"hard"`` (random identities
            and count at Poisson-disk positions).
        canvas_size: side of the canvas, or ``(H, W)``. Default 80 (the authors' code).
        digit_size: side of the digits. Default 20.
        num_digits: hard mode only: count, an int or inclusive range. Default ``(1, 9)``.
        min_distance: hard mode only: smallest distance between two digits' corners (Poisson-disk
            radius) in pixels. Default ``0.75 * digit_size``, so digits may touch and overlap a
            little, as in the paper's figures, but never coincide.
        root, download: digit source, see :func:`~ppl_scenes.data.load_digits`.

    Easy-mode centres are clamped so every digit stays fully inside the canvas. Targets: ``boxes``
    (tight ink), ``labels``, ``count``, ``patch_boxes``, ``digit_indices``.
    """

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        mode: str = "easy",
        canvas_size: int | tuple[int, int] = 80,
        digit_size: int = 20,
        num_digits: int | tuple[int, int] = (1, 9),
        min_distance: float | None = None,
        root: str | None = None,
        download: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        image_size = check_size(canvas_size, "canvas_size")
        digit_size = check_int(digit_size, "digit_size")
        check_fits(digit_size, image_size, "digit_size")
        self.num_digits = check_range(num_digits, "num_digits")
        if min_distance is None:
            min_distance = 0.75 * digit_size
        if isinstance(min_distance, bool) or not isinstance(min_distance, int | float) or min_distance < 0:
            raise ValueError(f"min_distance must be a number >= 0, got {min_distance!r}")
        self.min_distance = float(min_distance)
        self._by_class: list[np.ndarray] | None = None
        super().__init__(num_scenes, split, seed, image_size, digit_size, root, download)
        if mode == "easy":
            missing = [c for c, pool in enumerate(self._class_pools()[: _GRID * _GRID]) if len(pool) == 0]
            if missing:
                raise ValueError(f"the {split} digits have no instance of class(es) {missing} for MNIST easy")

    def _class_pools(self) -> list[np.ndarray]:
        if self._by_class is None:
            labels = self.bank.labels
            self._by_class = [np.flatnonzero(labels == c) for c in range(10)]
        return self._by_class

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_by_class"] = None
        return state

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        height, width = self.image_size
        if self.mode == "easy":
            pools = self._class_pools()
            n = _GRID * _GRID
            idx = np.array([pools[c][rng.integers(len(pools[c]))] for c in range(n)], dtype=np.int64)
            row, col = np.divmod(np.arange(n), _GRID)
            cell_w, cell_h = width / _GRID, height / _GRID
            cx = (col + 0.5) * cell_w + rng.normal(0.0, cell_w / 8, size=n)
            cy = (row + 0.5) * cell_h + rng.normal(0.0, cell_h / 8, size=n)
            xy = clamped_corners(cx, cy, self.digit_side, self.image_size)
        else:
            idx, xy = self.draw_digits(rng, draw_count(rng, self.num_digits), min_distance=self.min_distance)
        canvas = self.paste_digits(np.zeros(self.image_size, dtype=np.uint8), idx, xy)
        return to_image(canvas), self.digit_target(idx, xy)


@lru_cache(maxsize=16)
def gabor_kernels(size: int, num_orientations: int, wavelength: float, sigma: float) -> np.ndarray:
    """Gabor kernels ``[num_orientations, size, size]`` (float32, peak 1), orientation ``k * pi / n``.

    ``g(u, v) = exp(-(u^2 + v^2) / (2 sigma^2)) * cos(2 pi (u cos t + v sin t) / wavelength)`` with
    ``(u, v)`` measured from the kernel's centre pixel.
    """
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    v, u = np.meshgrid(r, r, indexing="ij")
    theta = np.arange(num_orientations)[:, None, None] * np.pi / num_orientations
    envelope = np.exp(-(u**2 + v**2) / (2 * sigma**2))
    carrier = np.cos(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta)) / wavelength)
    kernels = (envelope * carrier).astype(np.float32)
    kernels.setflags(write=False)
    return kernels


class GaborNoise(SceneDataset):
    """Procedural Gabor noise (MIST §5.1): oriented Gabor kernels at Poisson impulses.

    The image is ``clip(0.5 + amplitude * sum_i g_{o_i}(p - p_i), 0, 1)``: a mid-grey background plus
    one kernel per impulse. Impulses are a Poisson process conditioned to keep every kernel inside the
    canvas: their number is ``Poisson(mean_impulses)`` limited to ``[1, max_impulses]`` (or drawn
    from ``num_impulses`` when given), their positions uniform, their orientations uniform.

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` or ``"test"``; selects an independent scene stream.
        seed: seed of the scene stream.
        canvas_size: side of the canvas, or ``(H, W)``. Default 80 (as the MNIST scenes).
        kernel_size: side of a kernel (odd, so it has a centre pixel). Default 17.
        num_orientations: orientations ``k * pi / n``, ``k = 0..n-1``; labels are ``k``. Default 4.
        mean_impulses: mean of the Poisson count. Default 10.
        max_impulses: cap on the Poisson count. Default 30.
        num_impulses: fixed count or inclusive range instead of the Poisson count (MIST is told K).
        wavelength, sigma: carrier wavelength and envelope width in pixels; default size/3 and size/6.
        amplitude: scale of a kernel in the image; overlapping kernels that leave [0, 1] are clipped.

    Targets: ``boxes`` (the kernel's square, float32 ``[N, 4]``), ``labels`` (orientation index),
    ``count``, ``patch_boxes`` (= ``boxes``), ``points`` (float32 ``[N, 2]`` impulse (x, y) at the
    centre of the kernel's centre pixel) and ``angles`` (float32 ``[N]`` radians).
    """

    object_keys = ("boxes", "labels", "patch_boxes", "points", "angles")

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        canvas_size: int | tuple[int, int] = 80,
        kernel_size: int = 17,
        num_orientations: int = 4,
        mean_impulses: float = 10.0,
        max_impulses: int = 30,
        num_impulses: int | tuple[int, int] | None = None,
        wavelength: float | None = None,
        sigma: float | None = None,
        amplitude: float = 0.5,
    ) -> None:
        image_size = check_size(canvas_size, "canvas_size")
        super().__init__(num_scenes, split, seed, image_size)
        self.kernel_size = check_int(kernel_size, "kernel_size", minimum=3)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the kernel has a centre pixel, got {kernel_size}")
        if self.kernel_size > min(image_size):
            raise ValueError(f"kernel_size {kernel_size} does not fit on a canvas of {image_size}")
        self.num_orientations = check_int(num_orientations, "num_orientations")
        self.max_impulses = check_int(max_impulses, "max_impulses")
        self.mean_impulses = _positive(mean_impulses, "mean_impulses")
        self.num_impulses = None if num_impulses is None else check_range(num_impulses, "num_impulses")
        self.wavelength = _positive(self.kernel_size / 3 if wavelength is None else wavelength, "wavelength")
        self.sigma = _positive(self.kernel_size / 6 if sigma is None else sigma, "sigma")
        self.amplitude = _positive(amplitude, "amplitude")

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        k = self.kernel_size
        height, width = self.image_size
        if self.num_impulses is not None:
            n = draw_count(rng, self.num_impulses)
        else:
            n = int(np.clip(rng.poisson(self.mean_impulses), 1, self.max_impulses))
        orientation = rng.integers(0, self.num_orientations, size=n)
        u = rng.random((n, 2))
        xy = (u * np.array([width - k + 1, height - k + 1])).astype(np.int64)
        kernels = gabor_kernels(k, self.num_orientations, self.wavelength, self.sigma)
        field = np.zeros(self.image_size, dtype=np.float32)
        for j in range(n):
            x, y = int(xy[j, 0]), int(xy[j, 1])
            field[y : y + k, x : x + k] += kernels[orientation[j]]
        image = np.clip(0.5 + self.amplitude * field, 0.0, 1.0)
        boxes = square_boxes(xy, k)
        target = make_target(
            boxes,
            orientation,
            patch_boxes=boxes.copy(),
            points=xy.astype(np.float32) + k / 2,
            angles=(orientation * np.pi / self.num_orientations).astype(np.float32),
        )
        return to_image(image), target


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)
