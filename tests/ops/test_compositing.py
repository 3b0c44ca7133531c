import pytest
import torch

from ppl_scenes.ops import composite, composite_windows, fold_windows, spair_where_to_cxcywh


def test_single_opaque_object_replaces_background():
    app = torch.zeros(1, 1, 1, 4, 4)
    app[..., 1:3, 1:3] = 0.7
    alpha = (app > 0).float()
    out = composite(app, alpha, torch.zeros(1, 1), background=0.2)
    expected = torch.full((1, 1, 4, 4), 0.2)
    expected[..., 1:3, 1:3] = 0.7
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_deeper_object_dominates_overlap_and_output_is_convex():
    app = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 0.0)])[None]
    alpha = torch.ones(1, 2, 1, 2, 2)
    front = composite(app, alpha, torch.tensor([[5.0, -5.0]]), background=0.5)
    back = composite(app, alpha, torch.tensor([[-5.0, 5.0]]), background=0.5)
    assert front.min() > 0.99 and back.max() < 0.01
    even = composite(app, alpha, torch.zeros(1, 2), background=0.5)
    torch.testing.assert_close(even, torch.full_like(even, 0.5))


def test_zero_alpha_objects_leave_the_background():
    app = torch.rand(2, 3, 3, 5, 5)
    out = composite(
        app,
        torch.zeros(2, 3, 1, 5, 5),
        torch.randn(2, 3),
        background=torch.tensor([0.1, 0.2, 0.3])[:, None, None],
    )
    torch.testing.assert_close(out, torch.tensor([0.1, 0.2, 0.3])[None, :, None, None].expand(2, 3, 5, 5))


def test_fold_windows_places_each_window_at_its_cell():
    grid, cell, pad = (2, 3), (2, 2), (2, 1)
    windows = torch.zeros(1, 6, 1, 6, 4)
    windows[0, 4, 0, 2:4, 1:3] = 1.0  # the cell's own pixels: cell (1, 1) -> rows 2:4, cols 2:4
    windows[0, 0, 0, 0, 0] = 5.0  # outside the canvas: dropped
    out = fold_windows(windows, grid, cell, pad)
    expected = torch.zeros(1, 1, 4, 6)
    expected[0, 0, 2:4, 2:4] = 1.0
    torch.testing.assert_close(out, expected)


def test_windowed_compositing_equals_full_canvas_compositing():
    from ppl_scenes.ops import paste

    torch.manual_seed(1)
    grid, cell, anchor, pad = (3, 4), (6, 6), (10.0, 10.0), (8, 8)
    b, n = 2, 12
    z_where = torch.randn(b, n, 4)
    boxes = spair_where_to_cxcywh(z_where, grid, cell, anchor)
    glimpse = torch.rand(b, n, 2, 5, 5)
    depth = torch.randn(b, n)
    canvas = (grid[0] * cell[0], grid[1] * cell[1])
    full = paste(glimpse, boxes, canvas)
    ref = composite(full[:, :, :1], full[:, :, 1:], depth, 0.3)
    k = cell[0] + 2 * pad[0]
    origins = torch.stack(
        [(torch.arange(n) % grid[1]) * cell[1] - pad[1], (torch.arange(n) // grid[1]) * cell[0] - pad[0]], -1
    ).float()
    local = boxes.clone()
    local[..., :2] -= origins
    win = paste(glimpse, local, (k, k))
    out = composite_windows(win[:, :, :1], win[:, :, 1:], depth, 0.3, grid, cell, pad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_window_overlap_is_sum_minus_max_over_full_canvases():
    from ppl_scenes.ops import window_overlap

    grid, cell, pad = (2, 3), (4, 4), (3, 2)
    g = torch.Generator().manual_seed(1)
    windows = torch.rand(2, 6, 1, 10, 8, generator=g, requires_grad=True)
    # each window on a full canvas of its own, by folding one window at a time
    full = torch.stack(
        [
            fold_windows(windows * (torch.arange(6) == k).float()[None, :, None, None, None], grid, cell, pad)
            for k in range(6)
        ],
        1,
    )
    expected = full.sum(1) - full.max(1).values
    got = window_overlap(windows, grid, cell, pad)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert windows.grad is not None and torch.isfinite(windows.grad).all()
    # a single object never overlaps anything
    alone = windows.detach() * (torch.arange(6) == 2).float()[None, :, None, None, None]
    assert window_overlap(alone, grid, cell, pad).abs().max() == 0


@pytest.mark.parametrize(
    ("grid", "cell", "pad"),
    [((4, 4), (12, 12), (14, 14)), ((2, 3), (4, 5), (3, 1)), ((1, 2), (6, 6), (0, 0))],
)
def test_fold_windows_is_col2im_in_values_and_gradients(grid, cell, pad):
    """The block-wise sum equals ``F.fold`` (col2im) exactly in float64, forward and backward,
    for square and oblong cells, windows of several blocks and none."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    kh, kw = cell[0] + 2 * pad[0], cell[1] + 2 * pad[1]
    windows = torch.randn(2, grid[0] * grid[1], 3, kh, kw, dtype=torch.float64, requires_grad=True)
    cols = windows.permute(0, 2, 3, 4, 1).reshape(2, 3 * kh * kw, -1)
    size = (grid[0] * cell[0], grid[1] * cell[1])
    want = F.fold(cols, output_size=size, kernel_size=(kh, kw), stride=cell, padding=pad)
    got = fold_windows(windows, grid, cell, pad)
    assert torch.equal(got, want)
    g = torch.randn_like(want)
    (grad_want,) = torch.autograd.grad(want, windows, g)
    (grad_got,) = torch.autograd.grad(got, windows, g)
    assert torch.equal(grad_got, grad_want)
    with pytest.raises(ValueError, match="windows for a grid"):
        fold_windows(windows[:, :1], grid if grid[0] * grid[1] > 1 else (2, 2), cell, pad)


@pytest.mark.parametrize(
    ("grid", "cell", "pad", "channels"),
    [((4, 4), (12, 12), (14, 14), 1), ((2, 3), (4, 5), (3, 1), 3), ((3, 2), (5, 3), (0, 2), 2)],
)
def test_window_layer_sums_equal_folded_depth_weighted_layers(grid, cell, pad, channels, monkeypatch):
    """The one-node sums (hand-written gradient) equal folding the composed layers, in values and in
    the gradients of drawn windows and depths, for grey and colour windows; under ``torch.compile``
    the composed path is taken, with the same values."""
    from ppl_scenes.ops import depth_weighted_layers, window_layer_sums

    torch.manual_seed(0)
    kh, kw = cell[0] + 2 * pad[0], cell[1] + 2 * pad[1]
    n = grid[0] * grid[1]
    drawn = torch.rand(2, n, channels + 1, kh, kw, dtype=torch.float64, requires_grad=True)
    depth = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
    want = fold_windows(depth_weighted_layers(drawn[:, :, :-1], drawn[:, :, -1:], depth), grid, cell, pad)
    got = window_layer_sums(drawn, depth, grid, cell, pad)
    assert got.shape == (2, channels + 2, grid[0] * cell[0], grid[1] * cell[1])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    for w, q in zip(
        torch.autograd.grad(want, (drawn, depth), g), torch.autograd.grad(got, (drawn, depth), g)
    ):
        torch.testing.assert_close(q, w, rtol=1e-10, atol=1e-12)
    strided = drawn.detach().transpose(3, 4).contiguous().transpose(3, 4)  # same values, other strides
    torch.testing.assert_close(
        window_layer_sums(strided, depth, grid, cell, pad), want, rtol=1e-12, atol=1e-12
    )
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(window_layer_sums(drawn, depth, grid, cell, pad), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="do not match cell"):
        window_layer_sums(drawn[..., 1:], depth, grid, cell, pad)
