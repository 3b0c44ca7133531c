"""covered_fraction: how much of each box lies inside each window."""

import torch

from ppl_scenes.ops import box_iou, covered_fraction


def test_covered_fraction_against_torchvision_intersections():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 40]])
    windows = torch.tensor([[5.0, 0, 15, 10], [0, 0, 100, 100], [50, 50, 60, 60]])
    got = covered_fraction(boxes, windows)
    expected = torch.tensor([[0.5, 1.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(got, expected)
    # as torchvision's IoU implies: intersection = iou * union, over the box's area
    iou = box_iou(boxes, windows)
    area_b = (boxes[:, 2:] - boxes[:, :2]).prod(-1)[:, None]
    area_w = (windows[:, 2:] - windows[:, :2]).prod(-1)[None]
    inter = iou * (area_b + area_w) / (1 + iou)
    torch.testing.assert_close(got, inter / area_b)
