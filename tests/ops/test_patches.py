"""Objects drawn on patches the size of their boxes equal objects drawn on full canvases."""

import pytest
import torch

from ppl_scenes.ops import (
    composite,
    composite_patches,
    fold_patches,
    paste,
    paste_patches,
    patch_overlap,
    patch_size,
    window_origins,
    window_pad,
)

# (cell, anchor, glimpse, image): SPAIR's defaults, the anchor's sizes on a grid, a grid that overhangs
CASES = [((12, 12), (16.0, 16.0), 14, 48), ((12, 12), (48.0, 48.0), 28, 96), ((8, 8), (12.0, 10.0), 10, 36)]


def _objects(cell, anchor, glimpse, image, seed=0):
    """Boxes anywhere their cell lets them be (the extremes included), glimpses, depths."""
    g = torch.Generator().manual_seed(seed)
    grid = (-(-image // cell[0]), -(-image // cell[1]))
    n = grid[0] * grid[1]
    pad = window_pad(cell, anchor, (-0.5, 1.5))
    cells = window_origins(grid, cell, pad) + torch.tensor([pad[1], pad[0]])
    offsets = torch.rand(3, n, 2, generator=g) * 2 - 0.5
    offsets[0, 0], offsets[0, -1] = -0.5, 1.5  # centres at either end of their range, largest boxes
    sizes = torch.rand(3, n, 2, generator=g) * 0.8 + 0.2
    sizes[0, 0] = sizes[0, -1] = 1.0
    centres = cells + offsets * torch.tensor([cell[1], cell[0]], dtype=torch.float)
    boxes = torch.cat((centres, sizes * torch.tensor([anchor[1], anchor[0]])), -1).requires_grad_()
    glimpses = torch.rand(3, n, 2, glimpse, glimpse, generator=g).requires_grad_()
    depth = torch.randn(3, n, generator=g).requires_grad_()
    return boxes, glimpses, depth


@pytest.mark.parametrize("cell, anchor, glimpse, image", CASES)
def test_composite_patches_equals_compositing_full_canvases(cell, anchor, glimpse, image):
    boxes, glimpses, depth = _objects(cell, anchor, glimpse, image)
    full = paste(glimpses, boxes, (image, image))
    want = composite(full[:, :, :1], full[:, :, 1:], depth, 0.2)
    drawn, origins = paste_patches(glimpses, boxes, patch_size(anchor, (glimpse, glimpse)))
    assert origins.dtype == torch.int64 and origins.shape == (*boxes.shape[:2], 2)
    got = composite_patches(drawn, origins, depth, 0.2, (image, image))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    inputs = (boxes, glimpses, depth)
    for a, b in zip(
        torch.autograd.grad(want.square().sum(), inputs), torch.autograd.grad(got.square().sum(), inputs)
    ):
        torch.testing.assert_close(b, a, atol=1e-4 * a.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("cell, anchor, glimpse, image", CASES)
def test_patch_overlap_is_sum_minus_max_over_full_canvases(cell, anchor, glimpse, image):
    boxes, glimpses, _ = _objects(cell, anchor, glimpse, image, seed=1)
    full = paste(glimpses, boxes, (image, image))
    drawn, origins = paste_patches(glimpses, boxes, patch_size(anchor, (glimpse, glimpse)))
    got = patch_overlap(drawn, origins, (image, image))
    torch.testing.assert_close(got, full.sum(1) - full.amax(1), atol=1e-5, rtol=1e-5)


def test_fold_drops_what_falls_off_the_canvas():
    values = torch.ones(1, 2, 1, 3, 3)
    origins = torch.tensor(
        [[[-2, -2], [3, 1]]]
    )  # the first mostly off the top left, the second off the right
    canvas = fold_patches(values, origins, (4, 5))
    want = torch.zeros(1, 1, 4, 5)
    want[..., 0, 0] = 1.0
    want[..., 1:4, 3:5] = 1.0
    assert torch.equal(canvas, want)


def test_patch_size_holds_the_anchor_and_its_fringe():
    assert patch_size((16.0, 16.0), (14, 14)) == (20, 20)
    assert patch_size((48.0, 24.0), (28, 12)) == (52, 28)


def test_channel_major_paste_has_the_same_values_and_gradients():
    boxes, glimpses, _ = _objects((12, 12), (16.0, 16.0), 14, 48)
    plain = paste(glimpses, boxes, (20, 20))
    major = paste(glimpses, boxes, (20, 20), channel_major=True)
    assert major.shape == plain.shape and major.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(major, plain)
    weights = torch.rand(plain.shape)
    for a, b in zip(
        torch.autograd.grad((plain * weights).sum(), (boxes, glimpses)),
        torch.autograd.grad((major * weights).sum(), (boxes, glimpses)),
    ):
        torch.testing.assert_close(b, a)


def test_no_objects_leave_the_background():
    glimpses = torch.rand(2, 0, 2, 14, 14, requires_grad=True)
    drawn, origins = paste_patches(glimpses, torch.rand(2, 0, 4) * 10, (20, 20))
    depth = torch.zeros(2, 0, requires_grad=True)
    canvas = composite_patches(drawn, origins, depth, 0.2, (16, 12))
    assert torch.equal(canvas, torch.full((2, 1, 16, 12), 0.2))
    full = paste(glimpses, torch.rand(2, 0, 4) * 10, (16, 12))
    assert torch.equal(composite(full[:, :, :1], full[:, :, 1:], depth, 0.2), canvas)


@pytest.mark.parametrize("canvas", [(36, 36), (36, 60), (60, 36), (52, 52)])
def test_patches_no_larger_than_the_canvas(canvas):
    """A canvas no longer than a patch along an axis: the patch spans it there, at origin 0 (summed,
    not scattered, where it spans both axes), with the values and gradients of full canvases."""
    cell, anchor, glimpse = (12, 12), (48.0, 48.0), 28
    boxes, glimpses, depth = _objects(cell, anchor, glimpse, max(canvas))
    full = paste(glimpses, boxes, canvas)
    want = composite(full[:, :, :1], full[:, :, 1:], depth, 0.2)
    patch = patch_size(anchor, (glimpse, glimpse))  # 52 x 52
    drawn, origins = paste_patches(glimpses, boxes, patch, canvas=canvas)
    assert drawn.shape[-2:] == tuple(min(p, c) for p, c in zip(patch, canvas))
    for axis, (p, c) in enumerate(zip(patch, canvas)):  # origins are (x, y)
        if p >= c:
            assert not origins[..., 1 - axis].any()
    got = composite_patches(drawn, origins, depth, 0.2, canvas)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    inputs = (boxes, glimpses, depth)
    for a, b in zip(
        torch.autograd.grad(want.square().sum(), inputs), torch.autograd.grad(got.square().sum(), inputs)
    ):
        torch.testing.assert_close(b, a, atol=1e-4 * a.abs().max().item(), rtol=1e-4)
    overlap = patch_overlap(drawn.detach(), origins, canvas)
    torch.testing.assert_close(overlap, full.detach().sum(1) - full.detach().amax(1), atol=1e-5, rtol=1e-5)
