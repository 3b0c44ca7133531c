"""SPAIR's ConnComp baseline on hand-made images."""

import pytest
import torch

from ppl_scenes.baselines import ConnComp, conncomp_detect
from ppl_scenes.metrics import average_precision


def _two_blobs():
    img = torch.zeros(1, 1, 12, 16)
    img[0, 0, 2:5, 1:4] = 1.0  # rows 2-4, cols 1-3: 9 pixels
    img[0, 0, 6:11, 9:15] = 0.8  # rows 6-10, cols 9-14: 30 pixels
    img[0, 0, 0, 15] = 0.3  # faint speck below the threshold
    return img


def test_two_blobs_give_two_exact_boxes():
    boxes, scores = conncomp_detect(_two_blobs())
    assert len(boxes) == len(scores) == 1
    assert boxes[0].dtype == scores[0].dtype == torch.float32
    assert boxes[0].tolist() == [[1, 2, 4, 5], [9, 6, 15, 11]]
    assert scores[0].tolist() == [9.0, 30.0]
    _, const = conncomp_detect(_two_blobs(), score="constant")
    assert const[0].tolist() == [1.0, 1.0]
    # Boxes are in the ground truth's pixel-edge convention: a perfect AP on its own scene.
    assert average_precision(boxes, scores, [torch.tensor([[1.0, 2, 4, 5], [9, 6, 15, 11]])]) == 1.0


def test_single_pixel_box_and_min_area():
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 5, 2] = 1.0  # row y=5, column x=2
    img[0, 0, 0:2, 0:2] = 1.0
    boxes, _ = conncomp_detect(img)
    assert [2.0, 5.0, 3.0, 6.0] in boxes[0].tolist()
    boxes, _ = conncomp_detect(img, min_area=2)
    assert boxes[0].tolist() == [[0, 0, 2, 2]]


def test_diagonal_touch_depends_on_connectivity():
    img = torch.zeros(1, 1, 6, 6)
    img[0, 0, 1, 1] = img[0, 0, 2, 2] = img[0, 0, 3, 3] = 1.0
    boxes8, scores8 = conncomp_detect(img, connectivity=8)
    assert boxes8[0].tolist() == [[1, 1, 4, 4]] and scores8[0].tolist() == [3.0]
    boxes4, _ = conncomp_detect(img, connectivity=4)
    assert boxes4[0].tolist() == [[1, 1, 2, 2], [2, 2, 3, 3], [3, 3, 4, 4]]


def test_threshold_background_and_rgb():
    img = torch.full((2, 3, 8, 8), 0.5)
    img[0, :, 1:3, 1:3] = torch.tensor([1.0, 0.5, 0.5]).view(3, 1, 1)  # channel-sum difference 0.5
    img[1, :, 4:7, 2:5] = torch.tensor([0.0, 0.0, 0.5]).view(3, 1, 1)  # difference 1.0
    boxes, _ = conncomp_detect(img, threshold=0.4, background=[0.5, 0.5, 0.5])
    assert boxes[0].tolist() == [[1, 1, 3, 3]]
    assert boxes[1].tolist() == [[2, 4, 5, 7]]
    boxes, _ = conncomp_detect(img, threshold=0.7, background=torch.tensor(0.5))
    assert boxes[0].shape == (0, 4)
    assert boxes[1].tolist() == [[2, 4, 5, 7]]
    # Against a black background everything (sum 1.5) is foreground: one image-sized box.
    boxes, _ = conncomp_detect(img, threshold=0.4)
    assert boxes[0].tolist() == [[0, 0, 8, 8]]


def test_empty_image_gives_empty_tensors():
    boxes, scores = conncomp_detect(torch.zeros(2, 1, 4, 4))
    assert [b.shape for b in boxes] == [(0, 4), (0, 4)]
    assert [s.shape for s in scores] == [(0,), (0,)]


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.zeros(1, 4, 4), {}, "rank 4"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.float64), {}, "float32"),
        (torch.full((1, 1, 4, 4), float("nan")), {}, "NaN"),
        (torch.full((1, 1, 4, 4), 2.0), {}, r"\[0, 1\]"),
        (torch.zeros(0, 1, 4, 4), {}, "empty"),
        (torch.zeros(1, 1, 4, 4), {"threshold": 1.0}, "threshold"),
        (torch.zeros(1, 1, 4, 4), {"threshold": -0.1}, "threshold"),
        (torch.zeros(1, 1, 4, 4), {"background": 1.5}, "background"),
        (torch.zeros(1, 3, 4, 4), {"background": [0.0, 0.0]}, "channels"),
        (torch.zeros(1, 1, 4, 4), {"min_area": 0}, "min_area"),
        (torch.zeros(1, 1, 4, 4), {"connectivity": 6}, "connectivity"),
        (torch.zeros(1, 1, 4, 4), {"score": "mean"}, "score"),
    ],
)
def test_bad_inputs(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conncomp_detect(images, **kwargs)


def test_conncomp_parse_surface():
    detector = ConnComp(threshold=0.2)
    parse = detector.parse(_two_blobs())
    boxes, scores = conncomp_detect(_two_blobs(), threshold=0.2)
    assert parse.boxes[0].tolist() == boxes[0].tolist() and parse.scores[0].tolist() == scores[0].tolist()
    assert parse.reconstruction is None and parse.counts.tolist() == [3]  # the speck counts at tau 0.2
    assert ConnComp(threshold=0.2, min_area=2).parse(_two_blobs()).counts.tolist() == [2]
    assert detector.device == torch.device("cpu") and "threshold=0.2" in repr(detector)
    scene = (_two_blobs()[0], {"boxes": torch.tensor([[1.0, 2, 4, 5], [9, 6, 15, 11]]), "count": 2})
    scores = ConnComp().evaluate([scene])
    assert scores["ap50"] == 1.0 and scores["count_accuracy"] == 1.0 and "rmse" not in scores
    with pytest.raises(ValueError, match="threshold"):
        ConnComp(threshold=2.0).parse(_two_blobs())
