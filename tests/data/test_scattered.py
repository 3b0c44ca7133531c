"""Scattered digits: the overlap rule, placement failure, and the train/test digit split."""

import numpy as np
import pytest
import torch

from ppl_scenes.data import PlacementError, ScatteredDigits
from ppl_scenes.data.digits import digit_bank


def pairwise_intersections(boxes):
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    return inter[~torch.eye(len(boxes), dtype=torch.bool)]


@pytest.mark.parametrize("max_overlap, num_digits", [(0.0, 6), (0.5, 9)])
def test_patches_overlap_at_most_the_allowed_fraction(max_overlap, num_digits, offline):
    ds = ScatteredDigits(10, num_digits=num_digits, max_overlap=max_overlap, **offline)
    for i in range(len(ds)):
        target = ds[i][1]
        assert int(target["count"]) == num_digits
        assert (pairwise_intersections(target["patch_boxes"]) <= max_overlap * 14 * 14).all()


def test_num_digits_range_is_inclusive(offline):
    ds = ScatteredDigits(60, num_digits=(2, 4), **offline)
    counts = {int(ds[i][1]["count"]) for i in range(len(ds))}
    assert counts == {2, 3, 4}


def test_impossible_scene_raises_a_clear_error(offline):
    ds = ScatteredDigits(2, num_digits=40, max_overlap=0.0, **offline)
    with pytest.raises(PlacementError, match="could not place 40 digits"):
        ds[0]
    assert issubclass(PlacementError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_scenes": 0},
        {"split": "validation"},
        {"seed": -1},
        {"num_digits": (5, 2)},
        {"num_digits": "3"},
        {"digit_size": 60},
        {"digit_size": 0},
        {"max_overlap": 1.5},
        {"canvas_size": 0},
        {"canvas_size": (64, 64, 1)},
    ],
)
def test_bad_parameters(kwargs, offline):
    with pytest.raises(ValueError):
        ScatteredDigits(**{**offline, **kwargs})


def test_scenes_draw_digits_from_their_own_mnist_split(data_root):
    banks = {split: digit_bank(split, 14, data_root, False) for split in ("train", "val", "test")}
    assert len(banks["train"]) == 50_000 and len(banks["val"]) == len(banks["test"]) == 10_000
    for split, other in (("train", "test"), ("test", "train"), ("val", "train"), ("train", "val")):
        ds = ScatteredDigits(3, split=split, num_digits=1, root=data_root, download=False)
        for i in range(len(ds)):
            image, target = ds[i]
            x1, y1, x2, y2 = target["patch_boxes"][0].long().tolist()
            patch = (image[0, y1:y2, x1:x2] * 255).round().to(torch.uint8).numpy()
            own = (banks[split].images == patch).all(axis=(1, 2))
            assert own[int(target["digit_indices"][0])]
            assert int(target["labels"][0]) == banks[split].labels[int(target["digit_indices"][0])]
            assert not (banks[other].images == patch).all(axis=(1, 2)).any()
    assert np.array_equal(banks["train"].labels[:5], [5, 0, 4, 1, 9])
