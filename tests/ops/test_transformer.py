import pytest
import torch

from ppl_scenes.ops import crop, cxcywh_to_xyxy, paste, paste_support, paste_with_support, xyxy_to_cxcywh


def test_crop_reads_the_box_exactly_when_sizes_match():
    img = torch.rand(2, 3, 20, 24)
    box = torch.tensor([[[4.0, 6.0, 12.0, 16.0]], [[0.0, 0.0, 8.0, 10.0]]])  # xyxy, pixel aligned
    g = crop(img, xyxy_to_cxcywh(box), (10, 8))
    assert g.shape == (2, 1, 3, 10, 8)
    torch.testing.assert_close(g[0, 0], img[0, :, 6:16, 4:12])
    torch.testing.assert_close(g[1, 0], img[1, :, 0:10, 0:8])


def test_paste_of_crop_recovers_box_content_and_is_zero_outside():
    img = torch.rand(1, 1, 16, 16)
    box = xyxy_to_cxcywh(torch.tensor([[[3.0, 5.0, 11.0, 9.0]]]))
    back = paste(crop(img, box, (4, 8)), box, (16, 16))[:, 0]
    torch.testing.assert_close(back[..., 5:9, 3:11], img[..., 5:9, 3:11])
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[5:9, 3:11] = False
    assert back[0, 0][mask].abs().max() < 1e-5


def test_crop_of_larger_glimpse_upsamples_and_outside_reads_zero():
    img = torch.ones(1, 1, 8, 8)
    box = xyxy_to_cxcywh(torch.tensor([[[-8.0, 0.0, 8.0, 8.0]]]))  # left half outside the image
    g = crop(img, box, (8, 16))[0, 0, 0]
    assert g[:, :7].abs().max() == 0
    assert torch.allclose(g[:, 9:], torch.ones(8, 7))


def test_box_conversions_round_trip():
    b = torch.rand(5, 4) * 10
    b[:, 2:] += b[:, :2]
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)


def test_crop_and_paste_are_differentiable_in_boxes():
    img = torch.rand(1, 1, 12, 12)
    box = torch.tensor([[[6.0, 6.0, 5.0, 5.0]]], requires_grad=True)
    (crop(img, box, (5, 5)).sum() + paste(torch.rand(1, 1, 1, 5, 5), box, (12, 12)).sum()).backward()
    assert torch.isfinite(box.grad).all() and box.grad.abs().sum() > 0


def _grid_sample_paste(glimpses, boxes, canvas_size):
    """The textbook spatial-transformer paste: a full sampling grid through ``grid_sample``."""
    b, n, c, gh, gw = glimpses.shape
    hh, ww = canvas_size
    cx, cy, bw, bh = boxes.unbind(-1)
    px = torch.arange(ww, dtype=cx.dtype) + 0.5
    py = torch.arange(hh, dtype=cy.dtype) + 0.5
    gx = (2 * (px - cx[..., None]) / bw[..., None])[:, :, None, :].expand(b, n, hh, ww)
    gy = (2 * (py - cy[..., None]) / bh[..., None])[:, :, :, None].expand(b, n, hh, ww)
    grid = torch.stack((gx, gy), -1).reshape(b * n, hh, ww, 2)
    out = torch.nn.functional.grid_sample(glimpses.reshape(b * n, c, gh, gw), grid, align_corners=False)
    return out.reshape(b, n, c, hh, ww)


def test_separable_paste_matches_grid_sample_in_values_and_gradients():
    g = torch.Generator().manual_seed(1)
    glimpses = torch.rand(2, 4, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    centres = torch.rand(2, 4, 2, generator=g, dtype=torch.float64) * 34 - 2  # some boxes cross the edge
    sizes = torch.rand(2, 4, 2, generator=g, dtype=torch.float64) * 12 + 1
    boxes = torch.cat((centres, sizes), -1).requires_grad_()
    ours, ref = paste(glimpses, boxes, (30, 33)), _grid_sample_paste(glimpses, boxes, (30, 33))
    torch.testing.assert_close(ours, ref)
    weights = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad((ours * weights).sum(), (glimpses, boxes)),
        torch.autograd.grad((ref * weights).sum(), (glimpses, boxes)),
    ):
        torch.testing.assert_close(a, b)


def test_paste_support_is_the_paste_of_ones_in_values_and_gradients():
    g = torch.Generator().manual_seed(2)
    centres = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 34 - 2  # some boxes cross the edge
    sizes = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 12 + 0.5
    boxes = torch.cat((centres, sizes), -1).requires_grad_()
    ours = paste_support(boxes, (6, 7), (30, 33))
    ref = paste(torch.ones(2, 5, 1, 6, 7, dtype=torch.float64), boxes, (30, 33))
    torch.testing.assert_close(ours, ref)
    weights = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    (a,) = torch.autograd.grad((ours * weights).sum(), boxes)
    (b,) = torch.autograd.grad((ref * weights).sum(), boxes)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("size", [(5, 5), (4, 6)])
def test_crop_grid_equals_the_per_axis_grid(size):
    """The sampling grid is one matrix product of the boxes; it is the per-axis grid to rounding."""
    import torch.nn.functional as F

    from ppl_scenes.ops.transformer import _axis_coords

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 30, generator=g)
    boxes = torch.rand(2, 4, 4, generator=g) * torch.tensor([30.0, 20.0, 12.0, 9.0]) + 0.5
    boxes.requires_grad_(True)
    (b, n), (kh, kw) = (2, 4), size
    cx, cy, bw, bh = boxes.unbind(-1)
    gx = _axis_coords(cx, bw, 30, kw)[:, :, None, :].expand(b, n, kh, kw)
    gy = _axis_coords(cy, bh, 20, kh)[:, :, :, None].expand(b, n, kh, kw)
    grid = torch.stack((gx, gy), -1).reshape(b, n * kh, kw, 2)
    reference = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    reference = reference.reshape(b, 3, n, kh, kw).permute(0, 2, 1, 3, 4)
    out = crop(images, boxes, size)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    w = torch.rand_like(out)
    (g1,) = torch.autograd.grad((out * w).sum(), boxes)
    (g2,) = torch.autograd.grad((reference * w).sum(), boxes)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_spair_glimpse_grid_map_equals_cropping_the_converted_boxes():
    """SPAIR's glimpses straight from sigmoid(z_where) are crop(spair_where_to_cxcywh(z_where)),
    for all cells or some, and with a depth column riding along."""
    from ppl_scenes.ops import sample_glimpses, spair_glimpse_grid_map, spair_where_to_cxcywh

    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 1, 24, 36, generator=g)
    grid, cell, anchor, bounds, size = (2, 3), (12, 12), (20.0, 16.0), (-0.5, 1.5), (5, 7)
    z = torch.randn(2, 6, 5, generator=g, requires_grad=True)  # (z_y, z_x, z_h, z_w, z_depth)
    cells = torch.tensor([4, 1])
    for chosen in (None, cells):
        zs = z if chosen is None else z[:, :2]
        boxes = spair_where_to_cxcywh(zs[..., :4], grid, cell, anchor, bounds, cells=chosen)
        want = crop(images, boxes, size)
        weights, bias = spair_glimpse_grid_map(grid, cell, anchor, bounds, size, (24, 36), 5, None, z.dtype)
        bias = bias if chosen is None else bias.index_select(0, chosen)
        got = sample_glimpses(images, torch.sigmoid(zs) @ weights + bias, size)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        w = torch.rand_like(got)
        (g1,) = torch.autograd.grad((got * w).sum(), z)
        (g2,) = torch.autograd.grad((want * w).sum(), z)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)
        assert not g1[..., 4].any()  # the depth column does not move the glimpse


def test_paste_with_support_is_paste_and_its_support_with_their_gradients():
    torch.manual_seed(7)
    glimpses = torch.rand(2, 3, 1, 5, 4, requires_grad=True)
    boxes = torch.tensor([[[8.0, 6, 7, 5], [3, 4, 2, 9], [12, 1, 6, 6]]] * 2, requires_grad=True)
    placed, support = paste_with_support(glimpses, boxes, (11, 15))
    want_placed, want_support = paste(glimpses, boxes, (11, 15)), paste_support(boxes, (5, 4), (11, 15))
    torch.testing.assert_close(placed, want_placed, rtol=0, atol=0)
    torch.testing.assert_close(support, want_support, rtol=0, atol=0)
    w, s = torch.randn_like(placed), torch.randn_like(support)
    got = torch.autograd.grad((placed * w).sum() + (support * s).sum(), [glimpses, boxes])
    want = torch.autograd.grad((want_placed * w).sum() + (want_support * s).sum(), [glimpses, boxes])
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def test_box_conversions_round_trip_and_keep_their_shapes():
    boxes = torch.tensor([[[1.0, 2, 5, 9], [0, 0, 3, 3]]])
    centred = xyxy_to_cxcywh(boxes)
    torch.testing.assert_close(centred, torch.tensor([[[3.0, 5.5, 4, 7], [1.5, 1.5, 3, 3]]]))
    torch.testing.assert_close(cxcywh_to_xyxy(centred), boxes)
    assert xyxy_to_cxcywh(torch.tensor([1, 2, 3, 4])).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError):
        xyxy_to_cxcywh(torch.zeros(2, 6))
