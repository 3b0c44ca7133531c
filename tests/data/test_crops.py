"""RandomCrops: crops are cut from the scene, boxes are clipped, mostly-outside objects dropped."""

import pytest
import torch

from ppl_scenes.data import LargeScatteredDigits, RandomCrops, make_dataset


def test_crops_clip_boxes_and_drop_objects_mostly_outside(offline):
    scenes = LargeScatteredDigits(20, num_digits=(10, 15), **offline)
    crops = RandomCrops(scenes, size=48, seed=1)
    assert len(crops) == 20 and crops.split == "train"
    dropped = clipped_kept = 0
    for i in range(len(crops)):
        full_image, full = scenes[i]
        image, target = crops[i]
        x0, y0, x1, y1 = target["crop_box"].long().tolist()
        assert (x1 - x0, y1 - y0) == (48, 48)
        assert torch.equal(image, full_image[:, y0:y1, x0:x1])

        shifted = full["boxes"] - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        clipped = shifted.clamp(0, 48)
        area = (shifted[:, 2:] - shifted[:, :2]).prod(-1)
        inside = (clipped[:, 2:] - clipped[:, :2]).prod(-1)
        keep = (inside > 0) & (inside >= 0.5 * area)
        assert torch.equal(target["boxes"], clipped[keep])
        assert torch.equal(target["labels"], full["labels"][keep])
        assert torch.equal(target["digit_indices"], full["digit_indices"][keep])
        assert int(target["count"]) == int(keep.sum()) == len(target["patch_boxes"])
        assert (target["patch_boxes"] >= 0).all() and (target["patch_boxes"] <= 48).all()
        dropped += int(((inside > 0) & ~keep).sum())
        clipped_kept += int((keep & (inside < area)).sum())
    # Both branches of the rule were exercised.
    assert dropped > 0 and clipped_kept > 0


def test_crop_positions_depend_on_seed_and_index(offline):
    scenes = LargeScatteredDigits(8, **offline)
    a = [RandomCrops(scenes, seed=0)[i][1]["crop_box"] for i in range(8)]
    b = [RandomCrops(scenes, seed=0)[i][1]["crop_box"] for i in reversed(range(8))][::-1]
    c = [RandomCrops(scenes, seed=5)[i][1]["crop_box"] for i in range(8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    assert len({tuple(x.tolist()) for x in a}) > 1


def test_registry_scattered_crops_uses_six_to_ten_digits(offline):
    crops = make_dataset("scattered-crops", num_scenes=4, **offline)
    assert crops.dataset.num_digits == (6, 10) and crops.crop_size == (48, 48)
    assert crops.dataset.image_size == (84, 84)


@pytest.mark.parametrize("kwargs", [{"size": 100}, {"size": 0}, {"min_visible": 2.0}, {"seed": -3}])
def test_bad_crop_parameters(kwargs, offline):
    with pytest.raises(ValueError):
        RandomCrops(LargeScatteredDigits(2, **offline), **kwargs)
