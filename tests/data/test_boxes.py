"""Truth boxes are the tight boxes of each digit's ink, and no ink lies outside them."""

import pytest
import torch

from ppl_scenes.data import (
    ClutteredDigits,
    LargeScatteredDigits,
    MISTDigits,
    MultiMNIST,
    MultiScaleDigits,
    ScatteredDigits,
)
from ppl_scenes.data.digits import INK_THRESHOLD

CASES = {
    "scattered": (ScatteredDigits, {}),
    "large-scattered": (LargeScatteredDigits, {"num_digits": (5, 12)}),
    "multimnist": (MultiMNIST, {"canvas_size": 64, "num_digits": (1, 5)}),
    "multiscale": (MultiScaleDigits, {"canvas_size": 64, "min_size": 8, "max_size": 40}),
    "mist-easy": (MISTDigits, {"mode": "easy"}),
    "mist-hard": (MISTDigits, {"mode": "hard"}),
}


def check_tight_ink_boxes(image, boxes):
    """Each box holds ink on each of its four edges (so it is tight) and returns the covered mask."""
    img = image[0]
    covered = torch.zeros_like(img, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.round().long().tolist():
        assert img[y1:y2, x1:x2].max() >= INK_THRESHOLD
        assert img[y1, x1:x2].max() >= INK_THRESHOLD and img[y2 - 1, x1:x2].max() >= INK_THRESHOLD
        assert img[y1:y2, x1].max() >= INK_THRESHOLD and img[y1:y2, x2 - 1].max() >= INK_THRESHOLD
        covered[y1:y2, x1:x2] = True
    return covered


@pytest.mark.parametrize("name", sorted(CASES))
def test_boxes_hold_all_the_ink(name, offline):
    cls, kwargs = CASES[name]
    ds = cls(8, seed=1, **kwargs, **offline)
    for i in range(len(ds)):
        image, target = ds[i]
        covered = check_tight_ink_boxes(image, target["boxes"])
        if (~covered).any():
            assert image[0][~covered].max() < INK_THRESHOLD
        patches, boxes = target["patch_boxes"], target["boxes"]
        assert (boxes[:, :2] >= patches[:, :2]).all() and (boxes[:, 2:] <= patches[:, 2:]).all()
        h, w = image.shape[1:]
        assert (patches[:, :2] >= 0).all() and (patches[:, 2] <= w).all() and (patches[:, 3] <= h).all()


def test_cluttered_digit_boxes_hold_their_digit(offline):
    ds = ClutteredDigits(6, canvas_size=80, **offline)
    for i in range(len(ds)):
        image, target = ds[i]
        check_tight_ink_boxes(image, target["boxes"])
