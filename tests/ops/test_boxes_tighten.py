"""tighten_boxes: a box shrinks to the drawn part of its glimpse (GMAIR Appendix B.3); drawn_boxes:
the truth boxes' rule on image-aligned windows."""

import pytest
import torch

from ppl_scenes.ops import drawn_boxes, tighten_boxes


def test_box_shrinks_to_the_drawn_rows_and_columns():
    boxes = torch.tensor([[10.0, 20.0, 20.0, 30.0], [0.0, 0.0, 4.0, 8.0]])
    alpha = torch.zeros(2, 1, 10, 4)
    alpha[0, 0, 2:5, 1:3] = 0.9  # rows 2..4 of 10 (1 px each), columns 1..2 of 4 (2.5 px each)
    alpha[1, 0, 3, 0] = 0.05  # below the threshold: nothing drawn, the box stays
    tight = tighten_boxes(boxes, alpha, threshold=0.1)
    torch.testing.assert_close(tight[0], torch.tensor([12.5, 22.0, 17.5, 25.0]))
    torch.testing.assert_close(tight[1], boxes[1])


def test_fully_drawn_glimpse_keeps_its_box_and_batch_shapes_pass_through():
    boxes = torch.rand(3, 5, 4) * 10
    boxes[..., 2:] += boxes[..., :2] + 1
    tight = tighten_boxes(boxes, torch.ones(3, 5, 6, 7))
    torch.testing.assert_close(tight, boxes)


def test_drawn_boxes_box_the_pixels_above_the_threshold_with_exclusive_ends():
    visible = torch.zeros(2, 3, 5, 6)
    visible[0, 0, 1:3, 2:5] = 0.5  # rows 1-2, columns 2-4
    visible[0, 1, 4, 0] = 0.9  # one pixel
    visible[0, 2, 0, 0] = 0.05  # at the threshold: not drawn
    visible[1, :, 2, 3] = 1.0
    origins = torch.tensor([[10.0, 20.0], [0.0, 0.0], [-2.0, 3.0]]).expand(2, 3, 2)
    boxes, found = drawn_boxes(visible, origins, threshold=0.05)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([12.0, 21.0, 15.0, 23.0]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.0, 4.0, 1.0, 5.0]))
    assert found.tolist() == [[True, True, False], [True, True, True]]
    torch.testing.assert_close(boxes[0, 2], torch.tensor([-2.0, 3.0, 4.0, 8.0]))  # nothing: the whole window
    torch.testing.assert_close(boxes[1, 2], torch.tensor([1.0, 5.0, 2.0, 6.0]))


def test_drawn_boxes_match_the_generators_ink_boxes():
    from ppl_scenes.data.digits import INK_THRESHOLD, ink_boxes

    g = torch.Generator().manual_seed(0)
    patches = (torch.rand(4, 9, 7, generator=g) ** 4 * 255).to(torch.uint8)
    expected = torch.as_tensor(ink_boxes(patches.numpy())).float()
    # the generators' rule: a uint8 value counts as ink from floor(threshold * 255) + 1 on
    visible = (patches.float() + 0.5) / 255
    boxes, _ = drawn_boxes(visible, torch.zeros(4, 2), threshold=INK_THRESHOLD)
    torch.testing.assert_close(boxes, expected)


def test_drawn_boxes_reject_mismatched_origins():
    with pytest.raises(ValueError, match="origins"):
        drawn_boxes(torch.zeros(2, 3, 4, 4), torch.zeros(2, 2), 0.1)
    with pytest.raises(ValueError, match="origins"):
        drawn_boxes(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3), 0.1)
