"""Two-digit cluttered MNIST at any resolution, variational saccading §4.1 (after RAM and DRAM).

Generative story of one scene: draw ``num_digits`` (default two) digit instances and place them
uniformly inside the canvas, their patches overlapping by at most ``max_overlap`` (default: not at
all); scatter ``num_clutter`` fragments, each a ``clutter_size`` square crop (centred on ink) of
another random digit of the same split, uniformly over the canvas; composite with a pixel-wise max.
The task truth is image-level: the multi-hot set of digits present (identification) and their sum.

The canvas is allocated once and every digit and fragment is pasted into a slice of it, so a 1024x1024
or larger scene costs no per-digit full-size arrays.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .scenes import (
    DigitSceneDataset,
    Target,
    check_fits,
    check_fraction,
    check_int,
    check_size,
    paste_max,
    square_boxes,
    to_image,
)

__all__ = ["ClutteredDigits"]

# RAM's cluttered MNIST puts 8 fragments on a 100x100 canvas; other sizes keep that density.
_CLUTTER_PER_PIXEL = 8 / (100 * 100)


class ClutteredDigits(DigitSceneDataset):
    """MNIST digits among clutter fragments on a canvas of any size (variational saccading §4.1).

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` or ``"test"`` MNIST digits (clutter comes from the same split).
        seed: seed of the scene stream.
        canvas_size: side of the canvas, or ``(H, W)``. Default 100; 60, 100 and 1024+ all work.
        num_digits: digits per scene. Default 2 (the two-digit identification and sum tasks).
        digit_size: side of the digits. Default 28 (MNIST's own size, as in RAM/DRAM).
        num_clutter: fragments per scene; default ``None`` keeps RAM's density of 8 per 100x100.
        clutter_size: side of a fragment. Default 8.
        max_overlap: largest overlap of two digit patches, as a fraction of a patch. Default 0.0.
        root, download: digit source, see :func:`~ppl_scenes.data.load_digits`.

    Targets: ``boxes``/``labels``/``patch_boxes``/``digit_indices`` for the digits only, ``count``,
    ``multi_label`` (float32 ``[10]`` multi-hot of the classes present), ``sum`` (int64 scalar, sum of
    the digits) and ``clutter_boxes`` (float32 ``[M, 4]``, where the fragments were pasted).
    """

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        canvas_size: int | tuple[int, int] = 100,
        num_digits: int = 2,
        digit_size: int = 28,
        num_clutter: int | None = None,
        clutter_size: int = 8,
        max_overlap: float = 0.0,
        root: str | None = None,
        download: bool = True,
    ) -> None:
        image_size = check_size(canvas_size, "canvas_size")
        self.num_digits = check_int(num_digits, "num_digits")
        digit_size = check_int(digit_size, "digit_size")
        self.clutter_size = check_int(clutter_size, "clutter_size")
        self.max_overlap = check_fraction(max_overlap, "max_overlap")
        check_fits(digit_size, image_size, "digit_size")
        if self.clutter_size > digit_size:
            raise ValueError(f"clutter_size ({clutter_size}) must not exceed digit_size ({digit_size})")
        if num_clutter is None:
            num_clutter = round(_CLUTTER_PER_PIXEL * image_size[0] * image_size[1])
        self.num_clutter = check_int(num_clutter, "num_clutter", minimum=0)
        super().__init__(num_scenes, split, seed, image_size, digit_size, root, download)

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        bank, side, c = self.bank, self.digit_side, self.clutter_size
        height, width = self.image_size
        n, m = self.num_digits, self.num_clutter
        idx, xy = self.draw_digits(rng, n, max_overlap=self.max_overlap)

        # Fragments come from *other* instances, so no fragment repeats a digit of the scene.
        cidx = rng.integers(0, len(bank), size=m)
        cidx = np.where(np.isin(cidx, idx), (cidx + 1) % len(bank), cidx)
        cink = bank.ink[cidx]
        u = rng.random((m, 4))
        centre_x = cink[:, 0] + (u[:, 0] * (cink[:, 2] - cink[:, 0])).astype(np.int64)
        centre_y = cink[:, 1] + (u[:, 1] * (cink[:, 3] - cink[:, 1])).astype(np.int64)
        src_x = np.clip(centre_x - c // 2, 0, side - c)
        src_y = np.clip(centre_y - c // 2, 0, side - c)
        dst = np.stack([(u[:, 2] * (width - c + 1)), (u[:, 3] * (height - c + 1))], axis=1).astype(np.int64)

        canvas = np.zeros(self.image_size, dtype=np.uint8)
        for k in range(m):
            fragment = bank.images[cidx[k], src_y[k] : src_y[k] + c, src_x[k] : src_x[k] + c]
            paste_max(canvas, fragment, int(dst[k, 0]), int(dst[k, 1]))
        self.paste_digits(canvas, idx, xy)

        labels = bank.labels[idx]
        multi_label = np.zeros(10, dtype=np.float32)
        multi_label[labels] = 1.0
        target = self.digit_target(
            idx, xy, multi_label=multi_label, sum=np.int64(labels.sum()), clutter_boxes=square_boxes(dst, c)
        )
        return to_image(canvas), target
