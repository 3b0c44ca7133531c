"""``object_size``: each model's cell, anchor, glimpse, patch and window sizes from one object side."""

import pytest
import torch

import ppl_scenes.baselines  # noqa: F401  (registers MIST's baselines)
from ppl_scenes.models import MODELS
from ppl_scenes.sizing import (
    ObjectSizeError,
    ObjectSizeNotApplicable,
    default_crop,
    object_size_overrides,
)


def test_defaults_are_reproduced_at_their_object_sizes():
    spair = object_size_overrides("spair", 14)  # SPAIR's defaults: 14-pixel digits
    assert spair["cell_size"] == (12, 12) and spair["object_size"] == spair["glimpse_size"] == (14, 14)
    assert spair["anchor"] == (16.8, 16.8)
    gmair = object_size_overrides("gmair", 20)  # GMAIR's: 20-pixel digits
    assert gmair["cell_size"] == (16, 16) and gmair["anchor"] == (24.0, 24.0)
    assert gmair["object_size"] == (20, 20)
    mist = object_size_overrides("mist", 20)  # MIST's: 20-pixel digits on 80-pixel scenes
    assert mist == {"patch_side": 20.0, "patch_size": 20, "softmax_window": 15, "nms_window": 9}
    assert default_crop(20) == 80 and default_crop(14) == 56 and default_crop(2) == 32


def test_ssdir_works_at_the_crop_with_boxes_around_the_object():
    ov = object_size_overrides("ssdir", 10, image_size=48)
    assert ov["image_size"] == (48, 48) and ov["detector_classes"] == 1
    assert ov["min_ratio"] == pytest.approx(5 / 48, abs=1e-4) and ov["max_ratio"] == pytest.approx(
        20 / 48, abs=1e-4
    )
    assert ov["patch_size"] == 8 and ov["pyramid_levels"] == 3  # 4 levels need 64 pixels
    assert object_size_overrides("ssdir", 20)["image_size"] == (80, 80)  # the default crop
    assert object_size_overrides("ssdir", 20)["pyramid_levels"] == 4
    with pytest.raises(ObjectSizeError, match="too small for SSDIR's backbone"):
        object_size_overrides("ssdir", 3, image_size=6)


@pytest.mark.parametrize("name", ["spair", "gmair", "ssdir", "mist", "mist_grid", "mist_channelwise"])
@pytest.mark.parametrize("size", [3, 7.5, 14, 33, 100])
def test_every_object_model_builds_with_its_overrides(name, size):
    crop = max(32, 4 * round(size))
    ov = object_size_overrides(name, size, image_size=crop)
    model = MODELS[name](**ov)
    for key, value in ov.items():
        assert getattr(model.config, key) == value, key


def test_spair_parses_a_crop_at_the_derived_scale():
    ov = object_size_overrides("spair", 8, overrides={"what_dim": 4, "hidden_dim": 16, "feature_dim": 16})
    model = MODELS["spair"](**ov)
    parse = model.parse(torch.rand(1, 1, 32, 32))
    assert model.config.cell_size == (6, 6) and parse.reconstruction.shape == (1, 1, 32, 32)


def test_explicit_overrides_win_and_shape_the_rest():
    ov = object_size_overrides("spair", 14, overrides={"cell_size": (6, 6)})
    assert ov["cell_size"] == (6, 6) and ov["anchor"] == (16.8, 16.8)
    mist = object_size_overrides("mist", 20, overrides={"task_levels": "3"})
    assert mist["patch_size"] % 8 == 0 and mist["task_levels"] == "3"
    MODELS["mist"](**mist)
    ssdir = object_size_overrides("ssdir", 10, image_size=64, overrides={"pyramid_levels": 2})
    assert ssdir["pyramid_levels"] == 2 and ssdir["image_size"] == (64, 64)
    MODELS["ssdir"](**ssdir)


@pytest.mark.parametrize("name", ["saccade", "resnet"])
def test_image_level_models_say_it_does_not_apply(name):
    with pytest.raises(ObjectSizeNotApplicable, match=f"does not apply to '{name}'.*image-level"):
        object_size_overrides(name, 10)


def test_bad_sizes_and_names():
    for bad in (0, -1, float("inf"), float("nan"), "12", None, True):
        with pytest.raises(ObjectSizeError, match="positive number of pixels"):
            object_size_overrides("spair", bad)
        with pytest.raises(ObjectSizeError, match="positive number of pixels"):
            default_crop(bad)
    with pytest.raises(ObjectSizeError, match=r"larger than the images \(40x40\)"):
        object_size_overrides("spair", 50, image_size=40)
    with pytest.raises(ObjectSizeError, match="unknown model 'air'; known models: .*spair"):
        object_size_overrides("air", 10)
    assert issubclass(ObjectSizeError, ValueError)
