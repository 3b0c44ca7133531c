"""Scattered-digit scenes: SPAIR §5.1 and §5.2, and GMAIR's MultiMNIST (§4).

Generative story of one scene: draw a count uniformly from ``num_digits``; draw that many digit
instances uniformly from the split's digits; resize each to ``digit_size`` (done once for the whole
bank); place them uniformly inside the canvas, rejecting positions whose patch would overlap an earlier
patch by more than ``max_overlap`` of a patch's area; composite white-on-black with a pixel-wise max.
"""

from __future__ import annotations

from functools import partialmethod

import numpy as np
from torch import Tensor

from .scenes import (
    DigitSceneDataset,
    Target,
    check_fits,
    check_fraction,
    check_int,
    check_range,
    check_size,
    draw_count,
    to_image,
)

__all__ = ["LargeScatteredDigits", "MultiMNIST", "ScatteredDigits"]


class ScatteredDigits(DigitSceneDataset):
    """Scattered MNIST digits, white on black (SPAIR §5.1: 48x48 canvas, 14x14 digits, 1 to 9 digits).

    Args:
        num_scenes: length of the dataset.
        split: ``"train"`` draws MNIST training digits, ``"test"`` MNIST test digits.
        seed: seed of the scene stream (scene ``i`` depends only on seed, split, ``i`` and parameters).
        canvas_size: side of the square canvas, or ``(H, W)``. Default 48.
        digit_size: side the 28x28 digits are resized to (antialiased). Default 14.
        num_digits: digits per scene, an int or an inclusive ``(lo, hi)`` range drawn uniformly per
            scene. Default ``(1, 9)``, the range of SPAIR's training conditions.
        max_overlap: largest allowed overlap of two digit patches, as a fraction of a patch's area.
            Default 0.5 ("no more than half a digit"); 1.0 places digits independently.
        root, download: digit source, see :func:`~ppl_scenes.data.load_digits`.

    Targets: ``boxes`` (tight ink boxes), ``labels`` (digit classes), ``count``, ``patch_boxes`` (the
    pasted squares) and ``digit_indices`` (index of each digit in ``load_digits(split)``).

    Raises:
        ValueError: a bad parameter; :class:`~ppl_scenes.data.scenes.PlacementError` (a ValueError) from
            ``dataset[i]`` when the digits cannot be placed under the overlap rule.
    """

    def __init__(
        self,
        num_scenes: int = 10_000,
        split: str = "train",
        seed: int = 0,
        *,
        canvas_size: int | tuple[int, int] = 48,
        digit_size: int = 14,
        num_digits: int | tuple[int, int] = (1, 9),
        max_overlap: float = 0.5,
        root: str | None = None,
        download: bool = True,
    ) -> None:
        image_size = check_size(canvas_size, "canvas_size")
        self.num_digits = check_range(num_digits, "num_digits", minimum=0)
        self.max_overlap = check_fraction(max_overlap, "max_overlap")
        check_fits(check_int(digit_size, "digit_size"), image_size, "digit_size")
        super().__init__(num_scenes, split, seed, image_size, digit_size, root, download)

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        n = draw_count(rng, self.num_digits)
        idx, xy = self.draw_digits(rng, n, max_overlap=self.max_overlap)
        canvas = self.paste_digits(np.zeros(self.image_size, dtype=np.uint8), idx, xy)
        return to_image(canvas), self.digit_target(idx, xy)


class LargeScatteredDigits(ScatteredDigits):
    """Large scattered-digit scenes for SPAIR's generalisation study (§5.2): 84x84, 1 to 20 digits.

    The same generator as :class:`ScatteredDigits` with SPAIR §5.2's defaults: an 84x84 canvas with
    14x14 digits; training used 1–5, 6–10 or 11–15 digits (seen through 48x48
    :class:`~ppl_scenes.data.RandomCrops`), testing 1–20 digits on full images, the default here.
    """

    __init__ = partialmethod(ScatteredDigits.__init__, canvas_size=84, num_digits=(1, 20))


class MultiMNIST(ScatteredDigits):
    """GMAIR's MultiMNIST (§4): 1 to 10 MNIST digits at random positions on a 128x128 canvas.

    GMAIR places "small images randomly chosen from MNIST", i.e. the 28x28 digits as they are, so
    ``digit_size`` defaults to 28; the paper states no overlap rule, and the default keeps SPAIR's
    (at most half a digit) so that clustering is judged on recognisable digits. The CPU-scale variant
    used by the models is ``MultiMNIST(canvas_size=64, num_digits=(1, 5), digit_size=...)``. Labels are
    digit classes (what GMAIR's clustering ACC/NMI are scored against).
    """

    __init__ = partialmethod(ScatteredDigits.__init__, canvas_size=128, digit_size=28, num_digits=(1, 10))
