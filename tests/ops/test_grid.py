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
    width = grid[1] + 2
    written = (
        set(range(width))
        | {r * width for r in range(grid[0] + 1)}
        | {r * width + width - 1 for r in range(grid[0] + 1)}
    )  # the padded border: the outside stand-in
    for cells, neighbours, slots in zip(plan.cells, plan.neighbours, plan.slots):
        assert len(neighbours) == 4 * len(cells)
        if order != "batch":  # every neighbour was written before (or is outside the grid)
            assert set(neighbours.tolist()) <= written
        rows, cols = cells // grid[1], cells % grid[1]
        assert torch.equal(slots, (rows + 1) * width + cols + 1)
        written |= set(slots.tolist())


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
