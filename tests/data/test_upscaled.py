"""Upscaled: the same scene on a larger canvas, its boxes scaled with it."""

import pytest
import torch

from ppl_scenes.data import ClutteredDigits, Upscaled, make_dataset


def test_image_and_boxes_scale_together(offline):
    scenes = ClutteredDigits(4, seed=2, canvas_size=60, **offline)
    large = Upscaled(scenes, 240)
    assert len(large) == 4 and large.image_size == (240, 240)
    for i in range(4):
        small_image, small_target = scenes[i]
        image, target = large[i]
        assert image.shape == (1, 240, 240) and 0 <= image.min() and image.max() <= 1
        for key in ("boxes", "patch_boxes", "clutter_boxes"):
            torch.testing.assert_close(target[key], small_target[key] * 4)
        for key in ("labels", "count", "multi_label", "sum"):
            assert torch.equal(target[key], small_target[key])
        # shrinking it back by area averaging gives the scene again (bilinear upsampling by 4)
        back = torch.nn.functional.avg_pool2d(image[None], 4)[0]
        assert float((back - small_image).abs().mean()) < 0.02
        # the ink sits inside the scaled boxes: a digit's box holds the brightest pixels of its area
        x1, y1, x2, y2 = target["boxes"][0].round().long().tolist()
        assert image[0, y1:y2, x1:x2].max() > 0.5


def test_non_square_size_and_errors(offline):
    scenes = ClutteredDigits(2, seed=0, canvas_size=60, **offline)
    image, target = Upscaled(scenes, (90, 120))[1]
    assert image.shape == (1, 90, 120)
    torch.testing.assert_close(target["boxes"], scenes[1][1]["boxes"] * torch.tensor([2.0, 1.5, 2.0, 1.5]))
    with pytest.raises(ValueError, match="size"):
        Upscaled(scenes, 0)
    with pytest.raises(ValueError, match="map-style"):
        Upscaled(object(), 10)
    with pytest.raises(TypeError, match="integer"):
        Upscaled(scenes, 80)[0.5]


def test_registered_as_cluttered_large(offline):
    ds = make_dataset("cluttered-large", num_scenes=2, seed=1, canvas_size=60, size=120, **offline)
    assert isinstance(ds, Upscaled) and ds[0][0].shape == (1, 120, 120)
    assert ds.split == "train"
