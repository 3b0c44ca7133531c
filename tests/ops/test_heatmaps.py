import math

import pytest
import torch

from ppl_scenes.ops import (
    extract_top_k,
    local_maxima,
    local_spatial_softmax,
    nearest_pixel,
    scale_pool,
    target_heatmap,
)


def _loop_local_softmax(h: torch.Tensor, window: int, border: str = "clip") -> torch.Tensor:
    """Direct definition: exp(h(p)) over the sum of exp(h(q)) for the q of p's window -- the in-image
    ones ("clip"), or all of them with indices clamped to the image ("replicate")."""
    b, s, height, width = h.shape
    r = window // 2
    out = torch.empty_like(h)
    for i in range(b):
        for j in range(s):
            for y in range(height):
                for x in range(width):
                    total = 0.0
                    for qy in range(y - r, y + r + 1):
                        for qx in range(x - r, x + r + 1):
                            inside = 0 <= qy < height and 0 <= qx < width
                            if border == "clip" and not inside:
                                continue
                            cy, cx = min(max(qy, 0), height - 1), min(max(qx, 0), width - 1)
                            total += math.exp(h[i, j, cy, cx].item())
                    out[i, j, y, x] = math.exp(h[i, j, y, x].item()) / total
    return out


@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_softmax_matches_double_loop_including_borders(window):
    h = torch.randn(2, 2, 5, 7, dtype=torch.float64) * 2
    torch.testing.assert_close(local_spatial_softmax(h, window), _loop_local_softmax(h, window))


def test_local_softmax_window_covering_the_image_is_a_global_softmax():
    h = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    expected = torch.softmax(h.flatten(2), dim=-1).view_as(h)
    torch.testing.assert_close(local_spatial_softmax(h, 15), expected)


def test_local_softmax_of_a_constant_map_counts_only_in_image_pixels():
    out = local_spatial_softmax(torch.zeros(1, 1, 4, 5), window=3)
    counts = torch.tensor([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [4, 6, 6, 6, 4]])
    torch.testing.assert_close(out[0, 0], 1.0 / counts.float())


@pytest.mark.parametrize("window", [3, 5])
def test_replicate_border_matches_double_loop_and_keeps_flat_maps_flat(window):
    h = torch.randn(2, 1, 5, 6, dtype=torch.float64) * 2
    out = local_spatial_softmax(h, window, border="replicate")
    torch.testing.assert_close(out, _loop_local_softmax(h, window, border="replicate"))
    flat = local_spatial_softmax(torch.zeros(1, 1, 4, 5), window, border="replicate")
    torch.testing.assert_close(flat, torch.full((1, 1, 4, 5), 1.0 / window**2))
    assert torch.autograd.gradcheck(
        lambda x: local_spatial_softmax(x, 3, border="replicate"), (h[:1].clone().requires_grad_(True),)
    )
    with pytest.raises(ValueError, match="border"):
        local_spatial_softmax(h, 3, border="zeros")


def test_local_softmax_is_stable_for_huge_logits():
    h = torch.full((1, 1, 9, 9), -1e4)
    h[0, 0, 1, 1] = 1e4
    out = local_spatial_softmax(h, window=3)
    assert torch.isfinite(out).all()
    assert out[0, 0, 1, 1] == 1.0
    assert out[0, 0, :3, :3].sum() == 1.0  # the peak's neighbours vanish
    torch.testing.assert_close(out[0, 0, 5, 5], torch.tensor(1 / 9))  # far from the peak: uniform
    h64 = h.double()  # shift invariance (in float64: float32 logits of 4e4 keep only ~3 decimals)
    torch.testing.assert_close(local_spatial_softmax(h64 + 5e4, 3), local_spatial_softmax(h64, 3))


def test_local_softmax_and_scale_pool_are_differentiable():
    h = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: local_spatial_softmax(x, 3), (h,))
    assert torch.autograd.gradcheck(lambda x: scale_pool(local_spatial_softmax(x, 3)), (h,))


def test_scale_pool_matches_direct_computation():
    h = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    h[0, :, 0, 0] = 0.0  # all scales zero: eps keeps it finite
    per_scale, pooled = scale_pool(h)
    expected = torch.empty_like(h)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                denom = sum(h[b, t, y, x].item() + 1e-6 for t in range(3))
                for s in range(3):
                    expected[b, s, y, x] = h[b, s, y, x] * h[b, s, y, x] / denom
    torch.testing.assert_close(per_scale, expected)
    torch.testing.assert_close(pooled, expected.sum(1))
    assert per_scale[0, :, 0, 0].eq(0).all()


def test_scale_pool_favours_the_dominant_scale():
    h = torch.zeros(1, 3, 1, 1)
    h[0, :, 0, 0] = torch.tensor([0.8, 0.1, 0.1])
    per_scale, pooled = scale_pool(h)
    torch.testing.assert_close(per_scale[0, :, 0, 0], torch.tensor([0.64, 0.01, 0.01]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, torch.tensor([[[0.66]]]), atol=1e-5, rtol=0)


def test_local_maxima_suppresses_neighbours_and_plateaus():
    m = torch.full((1, 6, 8), -1.0)
    m[0, 1, 2] = 5.0  # peak
    m[0, 1, 3] = 4.0  # its neighbour: suppressed
    m[0, 4, 5] = m[0, 4, 6] = 3.0  # plateau: only the first in raster order survives
    m[0, 1, 5] = 2.0  # weaker peak two columns from the neighbour: kept
    expected = torch.zeros(1, 6, 8, dtype=torch.bool)
    expected[0, 1, 2] = expected[0, 4, 5] = expected[0, 1, 5] = True
    expected[0, 0, 0] = True  # the constant background is one plateau seen from its first pixel
    assert torch.equal(local_maxima(m, 3), expected)

    wide = local_maxima(m, 5)  # the weaker peak is now within reach of the neighbour
    assert wide[0, 1, 2] and wide[0, 4, 5] and not wide[0, 1, 5] and not wide[0, 4, 6]
    assert local_maxima(m, 1).all()

    vertical = torch.zeros(1, 4, 4)
    vertical[0, 1, 1] = vertical[0, 2, 1] = vertical[0, 2, 2] = 1.0  # L-shaped plateau
    assert local_maxima(vertical, 3)[0].nonzero().tolist() == [[1, 1]]


def test_extract_top_k_on_hand_made_heatmap():
    values = [1.0, 2.0, 4.0]
    h = torch.zeros(1, 3, 8, 8)
    h[0, :, 1, 1] = torch.tensor([0.0, 0.6, 0.2])  # (x, y) = (1, 1): score 0.8, scale 2.5
    h[0, :, 1, 2] = torch.tensor([0.5, 0.0, 0.0])  # neighbour of the above: suppressed
    h[0, :, 4, 5] = torch.tensor([0.3, 0.3, 0.0])  # plateau with (6, 4): score 0.6, scale 1.5
    h[0, :, 4, 6] = torch.tensor([0.3, 0.3, 0.0])
    h[0, :, 6, 2] = torch.tensor([0.0, 0.0, 0.4])  # (2, 6): score 0.4, scale 4
    positions, scales = extract_top_k(h, values, k=3)
    torch.testing.assert_close(positions, torch.tensor([[[1.5, 1.5], [5.5, 4.5], [2.5, 6.5]]]))
    torch.testing.assert_close(scales, torch.tensor([[2.5, 1.5, 4.0]]))


def test_extract_top_k_fills_missing_maxima_with_the_best_other_pixels():
    h = torch.arange(12.0).view(1, 1, 3, 4)  # increasing in raster order: the last pixel is the only maximum
    positions, scales = extract_top_k(h, [3.0], k=3)
    torch.testing.assert_close(positions, torch.tensor([[[3.5, 2.5], [2.5, 2.5], [1.5, 2.5]]]))
    torch.testing.assert_close(scales, torch.full((1, 3), 3.0))
    _, zero_scale = extract_top_k(torch.zeros(1, 2, 3, 3), [1.0, 3.0], k=1)
    torch.testing.assert_close(zero_scale, torch.tensor([[2.0]]))  # no response: the mean scale value


def test_target_heatmap_rounds_positions_and_splits_scales():
    values = [1.0, 2.0, 4.0, 8.0]
    positions = torch.tensor([[[2.99, 0.2], [3.0, 4.5], [-0.3, 9.7], [1.0, 1.0]]])
    scales = torch.tensor([[3.0, 0.5, 20.0, 4.0]], requires_grad=True)
    target = target_heatmap(positions, scales, values, (5, 6))
    assert target.shape == (1, 4, 5, 6)
    expected = torch.zeros(1, 4, 5, 6)
    expected[0, 1, 0, 2] = expected[0, 2, 0, 2] = 0.5  # 3 = (2 + 4) / 2
    expected[0, 0, 4, 2] = 1.0  # below the range: smallest scale; x = 3.0 is on an edge: to even 2
    expected[0, 3, 4, 0] = 1.0  # outside the image and above the range: clamped
    expected[0, 2, 0, 0] = 1.0  # exactly a scale value; (1.0, 1.0) on edges: to even (0, 0)
    torch.testing.assert_close(target, expected)
    (target * torch.arange(4.0)[:, None, None]).sum().backward()
    torch.testing.assert_close(scales.grad, torch.tensor([[0.5, 0.0, 0.0, 0.25]]))  # d/ds of the mass split


def test_target_heatmap_with_a_single_scale_puts_unit_mass():
    target = target_heatmap(torch.tensor([[[1.2, 0.7]]]), torch.tensor([[5.0]]), [2.0], (2, 3))
    expected = torch.zeros(1, 1, 2, 3)
    expected[0, 0, 0, 1] = 1.0
    torch.testing.assert_close(target, expected)


def test_nearest_pixel_takes_the_nearest_centre_and_rounds_half_steps_alike_both_ways():
    coords = torch.tensor([0.0, 0.4, 0.99, 1.2, 2.51, 3.7, -0.2])
    assert nearest_pixel(coords).tolist() == [0, 0, 0, 1, 2, 3, -1]
    centres = torch.arange(10).float() + 0.5
    for step in (0.5, 1.0, 1.5):  # a move of `step` px right and the same move left: mirrored targets
        right = nearest_pixel(centres + step) - torch.arange(10)
        left = nearest_pixel(centres - step) - torch.arange(10)
        assert torch.equal(right, -left)
    # the pixel that contains the coordinate (floor) moves half a step right and never half a step left
    assert (torch.floor(centres + 0.5) - torch.arange(10)).eq(1).all()
    assert (torch.floor(centres - 0.5) - torch.arange(10)).eq(0).all()


def test_target_heatmap_has_no_drift_under_symmetric_half_pixel_moves():
    """Refined positions half a pixel either side of the found centres: the targets' mean move is 0."""
    torch.manual_seed(0)
    found = torch.randint(2, 18, (4, 6, 2)).float() + 0.5
    moves = 0.5 * torch.tensor([-1.0, 1.0])[torch.randint(0, 2, (4, 6, 2))]
    moved = torch.cat((found + moves, found - moves), dim=1)
    target = target_heatmap(moved, torch.ones(4, 12), [1.0], (20, 20))[:, 0]
    rows, cols = torch.arange(20.0)[:, None], torch.arange(20.0)
    mass = target.sum((1, 2))
    centre_x = (target * (cols + 0.5)).sum((1, 2)) / mass
    centre_y = (target * (rows + 0.5)).sum((1, 2)) / mass
    torch.testing.assert_close(centre_x, found[..., 0].mean(1))
    torch.testing.assert_close(centre_y, found[..., 1].mean(1))


def test_target_heatmap_mask_leaves_objects_out():
    positions = torch.tensor([[[1.5, 1.5], [4.5, 2.5], [2.5, 3.5]]]).repeat(2, 1, 1)
    scales = torch.tensor([[1.5, 2.0, 1.0]]).repeat(2, 1)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    full = target_heatmap(positions, scales, [1.0, 2.0], (5, 6))
    masked = target_heatmap(positions, scales, [1.0, 2.0], (5, 6), mask)
    only = target_heatmap(positions[:1, [0, 2]], scales[:1, [0, 2]], [1.0, 2.0], (5, 6))
    torch.testing.assert_close(masked[0], only[0])
    assert masked[1].eq(0).all() and full[1].sum() == 3
    with pytest.raises(ValueError, match="mask must be"):
        target_heatmap(positions, scales, [1.0, 2.0], (5, 6), mask[:, :2])


@pytest.mark.parametrize("nms_window", [3, 5])
def test_extract_top_k_inverts_target_heatmap(nms_window):
    torch.manual_seed(3)
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    b, k, cell, grid = 2, 5, 6, 4  # one object per 6 x 6 cell, kept 3 pixels from the cell's border
    cells = torch.stack([torch.randperm(grid * grid)[:k] for _ in range(b)])
    origin = torch.stack((cells % grid, cells // grid), dim=-1).float() * cell
    positions = origin + 1.5 + 3 * torch.rand(b, k, 2)
    scales = 1 + 7 * torch.rand(b, k)
    size = (grid * cell, grid * cell)

    target = target_heatmap(positions, scales, values, size)
    torch.testing.assert_close(target.sum((1, 2, 3)), torch.full((b,), float(k)))
    found_pos, found_scale = extract_top_k(target, values, k, nms_window=nms_window)

    def by_pixel(pos, sc):
        order = (pos[..., 1] * 1000 + pos[..., 0]).argsort(dim=1)
        return pos.gather(1, order[..., None].expand_as(pos)), sc.gather(1, order)

    want_pos, want_scale = by_pixel(positions.floor() + 0.5, scales)
    got_pos, got_scale = by_pixel(found_pos, found_scale)
    torch.testing.assert_close(got_pos, want_pos)
    torch.testing.assert_close(got_scale, want_scale)


def test_full_pipeline_runs_and_backpropagates():
    logits = torch.randn(2, 3, 12, 12, requires_grad=True)
    per_scale, pooled = scale_pool(local_spatial_softmax(logits, 5))
    positions, scales = extract_top_k(per_scale, [8.0, 16.0, 32.0], k=4)
    assert positions.shape == (2, 4, 2) and scales.shape == (2, 4)
    assert ((scales >= 8) & (scales <= 32)).all()
    (pooled.sum() + scales.sum()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


H4 = torch.zeros(1, 2, 4, 4)
POS = torch.zeros(1, 2, 2)
SC = torch.ones(1, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: local_spatial_softmax(torch.zeros(2, 4, 4)),
        lambda: local_spatial_softmax(torch.zeros(1, 1, 4, 4, dtype=torch.long)),
        lambda: local_spatial_softmax(H4, window=4),
        lambda: local_spatial_softmax(H4, window=0),
        lambda: local_spatial_softmax(H4, window=-3),
        lambda: scale_pool(torch.zeros(4, 4)),
        lambda: scale_pool(H4, eps=-1.0),
        lambda: local_maxima(H4),
        lambda: local_maxima(H4[:, 0], window=2),
        lambda: extract_top_k(H4[0], [1.0, 2.0], k=1),
        lambda: extract_top_k(H4, [1.0, 2.0], k=17),
        lambda: extract_top_k(H4, [1.0, 2.0], k=0),
        lambda: extract_top_k(H4, [], k=1),
        lambda: extract_top_k(H4, [2.0, 1.0], k=1),
        lambda: extract_top_k(H4, [1.0, 1.0], k=1),
        lambda: extract_top_k(H4, [1.0, math.nan], k=1),
        lambda: extract_top_k(H4, torch.tensor([2.0, 1.0]), k=1),
        lambda: extract_top_k(H4, torch.tensor([1.0, math.inf]), k=1),
        lambda: extract_top_k(H4, [1.0, 2.0, 3.0], k=1),
        lambda: extract_top_k(H4, [1.0, 2.0], k=1, nms_window=2),
        lambda: target_heatmap(torch.zeros(1, 2, 3), SC, [1.0, 2.0], (4, 4)),
        lambda: target_heatmap(torch.zeros(2, 2), SC, [1.0, 2.0], (4, 4)),
        lambda: target_heatmap(POS, torch.ones(1, 3), [1.0, 2.0], (4, 4)),
        lambda: target_heatmap(POS, SC, [], (4, 4)),
        lambda: target_heatmap(POS, SC, [1.0, 3.0, 2.0], (4, 4)),
        lambda: target_heatmap(POS, SC, [1.0, 2.0], (0, 4)),
        lambda: target_heatmap(POS.long(), SC, [1.0, 2.0], (4, 4)),
    ],
)
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_soft_argmax_finds_a_peak_and_the_centre_of_a_flat_map():
    from ppl_scenes.ops import soft_argmax

    logits = torch.zeros(1, 2, 6, 8)
    logits[0, 0, 4, 1] = 50.0  # a sharp peak at row 4, column 1
    positions, peaks = soft_argmax(logits)
    torch.testing.assert_close(positions[0, 0], torch.tensor([1.5, 4.5]))
    torch.testing.assert_close(positions[0, 1], torch.tensor([4.0, 3.0]))  # flat: the image centre
    assert peaks[0, 0] == pytest.approx(1.0) and peaks[0, 1] == pytest.approx(1 / 48)
    logits.requires_grad_(True)
    soft_argmax(logits)[0].sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="logits"):
        soft_argmax(torch.zeros(2, 3))
