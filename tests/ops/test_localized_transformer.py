import pytest
import torch

from ppl_scenes.ops import crop, crop_localized, localized_window


def _boxes(hh: int = 9, ww: int = 11) -> torch.Tensor:
    """[2, 3, 4] float64 boxes: inside, partly/fully outside, sub-pixel, larger than the image."""
    g = torch.Generator().manual_seed(0)
    cases = [
        [ww / 2, hh / 2, 4.3, 3.7],  # inside
        [0.6, hh - 1.2, 5.5, 4.1],  # partly outside (left/bottom)
        [ww + 6.0, -5.0, 3.0, 2.0],  # fully outside
        [3.3, 4.7, 0.4, 0.6],  # sub-pixel
        [ww / 2 + 0.3, hh / 2 - 0.2, 2.5 * ww, 1.7 * hh],  # larger than the image
        [ww - 0.4, 0.3, 3.9, 6.2],  # partly outside (right/top)
    ]
    boxes = torch.tensor(cases, dtype=torch.float64)
    boxes = boxes + 0.1 * torch.rand(boxes.shape, generator=g, dtype=torch.float64)
    return boxes.reshape(2, 3, 4)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("out_size", [(1, 1), (4, 4), (3, 7), (8, 5)])
def test_crop_localized_equals_crop(c, out_size):
    img = torch.rand(2, c, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    boxes = _boxes()
    for perm in (torch.arange(6), torch.tensor([3, 4, 5, 0, 1, 2])):  # each case in both images
        bx = boxes.reshape(6, 4)[perm].reshape(2, 3, 4)
        out = crop_localized(img, bx, out_size)
        assert out.shape == (2, 3, c, *out_size)
        torch.testing.assert_close(out, crop(img, bx, out_size))


def test_crop_localized_equals_crop_for_random_boxes():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(2, 3, 13, 10, dtype=torch.float64, generator=g)
    boxes = torch.rand(2, 3, 4, dtype=torch.float64, generator=g) * torch.tensor([16.0, 19.0, 12.0, 12.0]) - 3
    boxes[..., 2:] = boxes[..., 2:].abs() + 0.05
    torch.testing.assert_close(crop_localized(img, boxes, (5, 6)), crop(img, boxes, (5, 6)))


def test_crop_localized_gradients_equal_crops():
    img = torch.rand(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    boxes = _boxes().requires_grad_(True)
    weights = torch.rand(2, 3, 3, 4, 6, dtype=torch.float64)
    grads = [
        torch.autograd.grad((fn(img, boxes, (4, 6)) * weights).sum(), (img, boxes))
        for fn in (crop, crop_localized)
    ]
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])
    assert grads[1][1].abs().sum() > 0


def test_crop_localized_float32_and_empty_boxes():
    img = torch.rand(2, 1, 9, 11)
    boxes = _boxes().float()
    torch.testing.assert_close(crop_localized(img, boxes, (3, 3)), crop(img, boxes, (3, 3)))
    assert crop_localized(img, boxes[:, :0], (3, 3)).shape == (2, 0, 1, 3, 3)


def test_localized_window_is_small_and_contains_the_box():
    boxes = torch.tensor([[[500.0, 400.0, 10.0, 10.0], [123.37, 871.61, 10.0, 10.0]]])
    x0, y0, w, h = localized_window(boxes, (1000, 1000))
    assert x0.dtype == torch.int64 and x0.shape == (1, 2)
    assert (w <= 12).all() and (h <= 12).all()
    cx, cy, bw, bh = boxes.unbind(-1)
    assert (x0 <= cx - bw / 2).all() and (x0 + w >= cx + bw / 2).all()
    assert (y0 <= cy - bh / 2).all() and (y0 + h >= cy + bh / 2).all()


def test_localized_window_is_clamped_to_the_image():
    boxes = torch.tensor([[[-50.0, 5.0, 10.0, 10.0], [5.0, 5.0, 100.0, 100.0], [0.0, 0.0, 4.0, 4.0]]])
    x0, y0, w, h = localized_window(boxes, (10, 20))
    assert w[0, 0] == 0  # fully outside: empty window
    assert (x0[0, 1], y0[0, 1], w[0, 1], h[0, 1]) == (0, 0, 20, 10)  # larger than the image
    assert (x0[0, 2], y0[0, 2], w[0, 2], h[0, 2]) == (0, 0, 3, 3)  # touches pixels 0..2 only


def test_crop_localized_rejects_bad_inputs():
    img, boxes = torch.rand(2, 1, 8, 8), torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="images must be"):
        crop_localized(img[0], boxes, (4, 4))
    with pytest.raises(ValueError, match="boxes_cxcywh must be"):
        crop_localized(img, boxes[..., :3], (4, 4))
    with pytest.raises(ValueError, match="boxes_cxcywh must be"):
        crop_localized(img, boxes[:1], (4, 4))
    with pytest.raises(ValueError, match="boxes_cxcywh must be"):
        crop_localized(img, boxes[0], (4, 4))
    with pytest.raises(ValueError, match="out_size must be"):
        crop_localized(img, boxes, (0, 4))
    with pytest.raises(ValueError, match="out_size must be"):
        crop_localized(img, boxes, (4, -1))
