"""tighten_boxes: a box shrinks to the drawn part of its glimpse (GMAIR Appendix B.3)."""

import torch

from ppl_scenes.ops import tighten_boxes


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
