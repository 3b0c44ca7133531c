"""Input validation (:mod:`ppl_scenes.checks`): every bad batch is named, wherever the bad value is."""

from __future__ import annotations

import math

import pytest
import torch

from ppl_scenes.checks import check_images


@pytest.mark.parametrize(
    "value, match",
    [(math.nan, "NaN or Inf"), (math.inf, "NaN or Inf"), (-math.inf, "NaN or Inf"), (1.5, "0, 1")],
)
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (2, 0, 5, 6)])
def test_one_bad_pixel_anywhere_is_named(value, match, where):
    x = torch.rand(3, 1, 7, 8)
    x[where] = value
    with pytest.raises(ValueError, match=match):
        check_images(x)
    if match == "0, 1":
        assert check_images(x, check_range=False) is x  # the range alone may be waived
    else:
        with pytest.raises(ValueError, match=match):
            check_images(x, check_range=False)


def test_a_good_batch_passes_unchanged_in_any_layout():
    x = torch.rand(2, 3, 5, 5).to(memory_format=torch.channels_last)
    assert check_images(x) is x
    assert check_images(torch.zeros(1, 1, 0, 4)).shape == (1, 1, 0, 4)  # nothing to range-check
    y = torch.cat((x, torch.full((1, 3, 5, 5), -0.5)))
    y[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match=r"got range \[-0.5, 1\]"):
        check_images(y)
