"""The cell grid: its shape, padding to whole cells, the windows a box can reach, the wavefront."""

import pytest
import torch

from ppl_scenes.ops import (
    cell_groups,
    cell_schedule,
    grid_shape,
    pad_to_grid,
    scalar,
    window_origins,
    window_pad,
)


def test_grid_shape_rounds_up_and_takes_a_size_or_a_batch():
    assert grid_shape((12, 18), (6, 6)) == (2, 3)
    assert grid_shape((13, 18), (6, 6)) == (3, 3)
    assert grid_shape(torch.zeros(2, 1, 13, 17), (6, 4)) == (3, 5)


def test_pad_to_grid_pads_bottom_and_right_with_zeros():
    x = torch.ones(2, 1, 13, 17)
    padded = pad_to_grid(x, (6, 4))
    assert padded.shape == (2, 1, 18, 20)
    assert torch.equal(padded[..., :13, :17], x) and padded[..., 13:, :].abs().sum() == 0
    assert padded[..., 17:].abs().sum() == 0


def test_window_pad_is_the_reach_of_the_largest_box():
    # centre up to 1.5 cells past the origin plus half a 16-pixel anchor: 18 + 8 - 12 = 14 past the cell
    assert window_pad((12, 12), (16.0, 16.0), (-0.5, 1.5)) == (14, 14)
    # a centre kept inside the cell and a small anchor reach only half the anchor out
    assert window_pad((10, 8), (4.0, 2.0), (0.0, 1.0)) == (2, 1)


def test_window_origins_are_the_cell_origins_shifted_by_the_pad():
    origins = window_origins((2, 3), (6, 8), (2, 3))
    assert origins.shape == (6, 2)
    torch.testing.assert_close(origins[0], torch.tensor([-3.0, -2.0]))
    torch.testing.assert_close(origins[5], torch.tensor([2 * 8 - 3.0, 6 - 2.0]))  # cell (1, 2), x then y


def test_raster_groups_visit_one_cell_at_a_time():
    groups = cell_groups((2, 3), "raster")
    assert [g.tolist() for g in groups] == [[0], [1], [2], [3], [4], [5]]
    wave = cell_groups((2, 3), "wavefront")
    assert [g.tolist() for g in wave] == [[0], [1], [2, 3], [4], [5]]


@pytest.mark.parametrize("order", ["wavefront", "raster", "batch"])
def test_cell_schedule_visits_every_cell_once_after_its_neighbours(order):

    grid = (3, 4)
    plan = cell_schedule(grid, order)
    assert plan is cell_schedule(grid, order)  # built once
    n = grid[0] * grid[1]
    assert sorted(plan.order.tolist()) == list(range(n))
    assert torch.equal(plan.order[plan.inverse], torch.arange(n))
    assert torch.equal(torch.cat(plan.cells), plan.order)
    assert [stop - start for start, stop in plan.bounds] == [len(c) for c in plan.cells]
    assert plan.identity == (order != "wavefront")
    gh, gw = grid
    for g, (cells, sources, rows) in enumerate(zip(plan.cells, plan.sources, plan.source_rows)):
        assert len(rows) == 4 * len(cells)
        if order == "batch":
            continue
        assert all(h < g for h in sources)  # every neighbour was visited before (or is outside)
        table = [None] + [int(k) for h in sources for k in plan.cells[h]]  # row -> cell (None: outside)
        for k, four in zip(cells.tolist(), rows.view(-1, 4).tolist()):
            i, j = divmod(k, gw)
            expected = [
                (i + di) * gw + j + dj if 0 <= i + di < gh and 0 <= j + dj < gw else None
                for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1))
            ]
            assert [table[r] for r in four] == expected


def test_cached_constants_survive_inference_mode():

    x = torch.ones(3)
    with torch.inference_mode():
        two = scalar(2.0, x)
    y = torch.ones(3, requires_grad=True)
    (y * scalar(2.0, x)).sum().backward()  # the constant built under inference_mode is an ordinary tensor
    assert scalar(2.0, x) is two and not two.is_inference() and torch.equal(y.grad, torch.full((3,), 2.0))


@pytest.mark.parametrize("order", ["wavefront", "raster", "batch"])
def test_to_groups_and_from_groups_permute_cells_and_gradients_exactly(order, monkeypatch):
    """The one-node permutations equal ``index_select`` + ``split`` / ``cat`` + ``index_select``
    exactly, in values and gradients, with and without a graph and under ``torch.compile``'s path."""
    from ppl_scenes.ops import cell_schedule, from_groups, to_groups

    plan = cell_schedule((3, 4), order)
    sizes = [stop - start for start, stop in plan.bounds]
    torch.manual_seed(0)
    t = torch.randn(2, 12, 5, requires_grad=True)
    got = to_groups(t, plan)
    want = t.index_select(1, plan.order).split(sizes, 1)
    assert len(got) == len(sizes) and all(torch.equal(a, b) for a, b in zip(got, want))
    weights = [torch.randn_like(p) for p in want]
    (g_got,) = torch.autograd.grad(sum((p * w).sum() for p, w in zip(got, weights)), t)
    (g_want,) = torch.autograd.grad(sum((p * w).sum() for p, w in zip(want, weights)), t)
    assert torch.equal(g_got, g_want)
    parts = [p.detach().clone().requires_grad_() for p in want]
    back = from_groups(parts, plan)
    assert torch.equal(back, t)  # the round trip
    g = torch.randn_like(back)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            torch.autograd.grad(back, parts, g),
            torch.autograd.grad(torch.cat(parts, 1).index_select(1, plan.inverse), parts, g),
        )
    )
    with torch.no_grad():
        assert torch.equal(from_groups(to_groups(t, plan), plan), t)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(from_groups(to_groups(t, plan), plan), t)


@pytest.mark.parametrize("order", ["wavefront", "raster"])
@pytest.mark.parametrize("graph", [True, False])
def test_lateral_inputs_read_the_neighbours_of_a_padded_state(order, graph):
    """Each cell's inputs are its features beside its four neighbours' latents (the stand-in outside
    the grid), as read from a padded state rewritten group by group; gradients agree too."""
    from ppl_scenes.ops import cell_schedule, lateral_inputs

    grid, b, f, d = (3, 4), 2, 3, 2
    gh, gw = grid
    plan = cell_schedule(grid, order)
    torch.manual_seed(0)
    feats = [torch.randn(b, len(cells), f, dtype=torch.float64) for cells in plan.cells]
    latents = torch.randn(b, gh * gw, d, dtype=torch.float64)  # one latent per raster cell
    outside = torch.randn(d, dtype=torch.float64)

    def reference(feats, samples, outside):
        state = outside.expand(b, (gh + 1) * (gw + 2), d)  # padded: a row above, a column each side
        out = []
        for g, cells in enumerate(plan.cells):
            rows, cols = cells // gw, cells % gw
            slots = torch.stack((rows * (gw + 2) + cols, rows * (gw + 2) + cols + 1,
                                 rows * (gw + 2) + cols + 2, (rows + 1) * (gw + 2) + cols), -1)  # fmt: skip
            nb = state.index_select(1, slots.reshape(-1)).view(b, len(cells), -1)
            out.append(torch.cat((feats[g], nb), -1))
            state = state.index_copy(1, (rows + 1) * (gw + 2) + cols + 1, samples[g])
        return out

    def ours(feats, samples, outside):
        rows = outside.expand(b, 1, d).contiguous()
        return [lateral_inputs(feats[g], rows, samples[:g], plan, g) for g in range(len(plan.cells))]

    results = []
    for fn in (reference, ours):
        leaves = [t.clone().requires_grad_(graph) for t in feats]
        lat = latents.clone().requires_grad_(graph)
        out_leaf = outside.clone().requires_grad_(graph)
        samples = [lat[:, cells] for cells in plan.cells]
        out = fn(leaves, samples, out_leaf)
        if not graph:
            results.append((out, None))
            continue
        weights = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=weights, dtype=o.dtype)).sum() for o in out)
        loss.backward()
        results.append((out, [t.grad for t in leaves] + [lat.grad, out_leaf.grad]))
    for a, b_ in zip(results[0][0], results[1][0]):
        assert torch.equal(a, b_)
    if graph:
        for a, b_ in zip(results[0][1], results[1][1]):
            torch.testing.assert_close(a, b_)


def test_vector_and_indices_are_built_once_per_device():
    from ppl_scenes.ops import indices, vector

    assert vector((0.0, 1.0)) is vector([0, 1]) and vector((0.0, 1.0)).dtype == torch.get_default_dtype()
    assert torch.equal(indices(4, "cpu"), torch.arange(4))
    assert indices(4, "cpu") is indices(4, torch.device("cpu"))


def test_lateral_inputs_need_a_lateral_order():
    from ppl_scenes.ops import cell_schedule, lateral_inputs

    plan = cell_schedule((2, 3), "batch")
    with pytest.raises(ValueError, match="no lateral order"):
        lateral_inputs(torch.zeros(1, 6, 2), torch.zeros(1, 1, 3), [], plan, 0)


def test_multiply_keeps_numbers_numbers_and_drops_a_unit_factor():
    from ppl_scenes.ops import multiply

    t = torch.tensor([0.5, 2.0])
    assert multiply(3.0, 2) == 6.0 and not torch.is_tensor(multiply(3.0, 2))
    assert multiply(t, 1) is t and multiply(1.0, t) is t
    assert torch.equal(multiply(3.0, t), t * 3.0) and torch.equal(multiply(t, t), t * t)
