"""The cell grid of SPAIR-style models (SPAIR §4.1; GMAIR §2.1 uses the same grid).

An ``H_img x W_img`` image is divided into ``H x W`` cells of ``c_h x c_w`` pixels; a cell's object
is drawn only inside its *window*, the cell grown on every side by the reach of its box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ppl_scenes.ops.boxes import grid_cell_origins
from ppl_scenes.ops.constants import cached_constant

__all__ = [
    "CellSchedule",
    "cell_groups",
    "cell_schedule",
    "from_groups",
    "grid_shape",
    "lateral_inputs",
    "pad_to_grid",
    "to_groups",
    "window_origins",
    "window_pad",
]


def grid_shape(x_or_size, cell: tuple[int, int]) -> tuple[int, int]:
    """``(H, W) = (ceil(H_img / c_h), ceil(W_img / c_w))`` for an image batch or an ``(H, W)`` size."""
    h, w = x_or_size.shape[-2:] if isinstance(x_or_size, Tensor) else x_or_size
    return math.ceil(h / cell[0]), math.ceil(w / cell[1])


def pad_to_grid(x: Tensor, cell: tuple[int, int]) -> Tensor:
    """Zero-pad images on the bottom/right to a whole number of cells."""
    gh, gw = grid_shape(x, cell)
    return F.pad(x, (0, gw * cell[1] - x.shape[-1], 0, gh * cell[0] - x.shape[-2]))


def window_pad(
    cell: tuple[int, int], anchor: tuple[float, float], center_bounds: tuple[float, float]
) -> tuple[int, int]:
    """Pixels beyond its own cell that a cell's box can reach, per axis (centre bounds + half anchor).

    A box's centre lies ``b_min..b_max`` cells from its cell's origin and its size is at most the
    ``anchor`` (SPAIR eqs. 2-6). The window is symmetric about the cell, so the larger side decides.
    """
    b_min, b_max = center_bounds
    pads = []
    for size, reach in zip(cell, anchor):
        before = -b_min * size + reach / 2
        after = b_max * size + reach / 2 - size
        pads.append(max(0, math.ceil(max(before, after))))
    return pads[0], pads[1]


def window_origins(grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int], device=None) -> Tensor:
    """Image position ``(x, y)`` of the top-left pixel of every cell's window: ``[H * W, 2]``.

    Args:
        grid: ``(H, W)`` cells; cell: ``(c_h, c_w)`` pixels; pad: the window's margin
            ``(pad_h, pad_w)`` from :func:`window_pad`.

    Built once per grid and device (:func:`~ppl_scenes.ops.constants.cached_constant`): do not modify
    the result in place.
    """
    return _window_origins(
        tuple(grid), tuple(cell), tuple(pad), None if device is None else torch.device(device)
    )


@cached_constant
def _window_origins(grid, cell, pad, device) -> Tensor:
    shift = torch.tensor([pad[1], pad[0]], dtype=torch.float32, device=device)
    return grid_cell_origins(grid, cell, device=device) - shift


def cell_groups(grid: tuple[int, int], order: str, device: torch.device | str | None = None) -> list[Tensor]:
    """Cells (raster indices, on ``device``) in the order SPAIR's lateral guide visits them (§4.3).

    ``wavefront``: one group per anti-diagonal ``2i + j`` -- a cell's neighbours ``(i-1, j-1),
    (i-1, j), (i-1, j+1), (i, j-1)`` all lie on earlier anti-diagonals; ``raster``: one cell per group.
    """
    return [torch.tensor(cells, device=device) for cells in _group_lists(tuple(grid), order)]


def _group_lists(grid: tuple[int, int], order: str) -> list[list[int]]:
    """:func:`cell_groups` as Python lists (no tensor values decide anything: ``torch.compile``
    captures a schedule built from them without a graph break)."""
    gh, gw = grid
    if order == "raster":
        return [[k] for k in range(gh * gw)]
    groups: list[list[int]] = [[] for _ in range(2 * (gh - 1) + gw)]
    for k in range(gh * gw):
        groups[2 * (k // gw) + k % gw].append(k)
    return [cells for cells in groups if cells]  # a one-column grid has no odd anti-diagonals


@dataclass(frozen=True)
class CellSchedule:
    """The order in which SPAIR's lateral guide visits the cells of a grid, with its index tensors.

    Cells are visited group by group (:func:`cell_groups`). A cell reads the latents of its four
    neighbours ``(i-1, j-1), (i-1, j), (i-1, j+1), (i, j-1)``, sampled in earlier groups, or a learned
    stand-in where a neighbour lies outside the grid (:func:`lateral_inputs`).

    Attributes:
        order: ``[N]`` raster index of each cell in visiting order.
        inverse: ``[N]`` visiting position of each raster cell (``order[inverse] == arange(N)``).
        bounds: per group, the ``(start, stop)`` of its cells in visiting order.
        cells: per group, its cells' raster indices (``order[start:stop]``).
        sources: per group, the earlier groups its cells' neighbours lie in, in visiting order.
        source_rows: per group, ``[n_g * 4]``: each cell's four neighbours (cell by cell) as rows of
            the stand-in (row 0) followed by the cells of the ``sources`` groups.
        identity: the visiting order is the raster order (one group, or a raster visit).
    """

    order: Tensor
    inverse: Tensor
    bounds: tuple[tuple[int, int], ...]
    cells: tuple[Tensor, ...]
    sources: tuple[tuple[int, ...], ...]
    source_rows: tuple[Tensor, ...]
    identity: bool


def cell_schedule(
    grid: tuple[int, int], order: str, device: torch.device | str | None = None
) -> CellSchedule:
    """The :class:`CellSchedule` of ``order`` (``wavefront``, ``raster``, or ``batch``: all cells in
    one group) on ``grid``, built once per grid, order and device (do not modify its tensors)."""
    return _cell_schedule(tuple(grid), order, None if device is None else torch.device(device))


@cached_constant
def _cell_schedule(grid, order, device) -> CellSchedule:
    gh, gw = grid
    lists = [list(range(gh * gw))] if order == "batch" else _group_lists(grid, order)
    groups = [torch.tensor(cells, device=device) for cells in lists]
    visit = torch.cat(groups)
    inverse = torch.empty_like(visit)
    inverse[visit] = torch.arange(len(visit), device=device)
    place = {k: (g, p) for g, cells in enumerate(lists) for p, k in enumerate(cells)}  # group, position
    bounds, sources, source_rows, start = [], [], [], 0
    for cells in lists:
        bounds.append((start, start + len(cells)))
        start += len(cells)
        neighbours = [  # (group, position) of each neighbour inside the grid, else None
            place[(i + di) * gw + j + dj] if 0 <= i + di < gh and 0 <= j + dj < gw else None
            for i, j in (divmod(k, gw) for k in cells)
            for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1))
        ]
        groups_read = tuple(sorted({n[0] for n in neighbours if n is not None}))
        offsets, row = {}, 1
        for h in groups_read:
            offsets[h], row = row, row + len(lists[h])
        rows = [0 if n is None else offsets[n[0]] + n[1] for n in neighbours]
        sources.append(groups_read)
        source_rows.append(torch.tensor(rows, dtype=torch.long, device=device))
    return CellSchedule(
        order=visit,
        inverse=inverse,
        bounds=tuple(bounds),
        cells=tuple(groups),
        sources=tuple(sources),
        source_rows=tuple(source_rows),
        identity=[k for cells in lists for k in cells] == list(range(gh * gw)),
    )


def lateral_inputs(
    feats: Tensor, outside: Tensor, samples: list[Tensor], plan: CellSchedule, g: int
) -> Tensor:
    """Group ``g``'s guide inputs (SPAIR §4.3): each cell's features beside its four neighbours'
    latents, ``[B, n_g, F + 4 D]``.

    Args:
        feats: ``[B, n_g, F]`` the group's cell features.
        outside: ``[B, 1, D]`` the stand-in for neighbours outside the grid, contiguous (expanded
            from a parameter once per pass, not per group).
        samples: the latents ``[B, n_h, D]`` of the groups visited so far (at least those of
            ``plan.sources[g]``).
        plan: the schedule; g: the group.

    With a graph to build it is one autograd node whose gradient is one scatter-add (a gather from a
    state rewritten per group costs two zero-filled copies per group, issue 36).
    """
    if any(h >= g for h in plan.sources[g]):  # the "batch" order: one group, neighbours inside it
        raise ValueError(f"group {g} reads cells of its own group: this schedule has no lateral order")
    sources = [samples[h] for h in plan.sources[g]]
    if _one_node(feats, outside, *sources):
        return _LateralInputs.apply(plan.source_rows[g], feats, outside, *sources)
    return _gather_lateral(plan.source_rows[g], feats, outside, sources)


def _gather_lateral(rows: Tensor, feats: Tensor, outside: Tensor, sources) -> Tensor:
    b, n = feats.shape[:2]
    return torch.cat((feats, torch.cat((outside, *sources), 1).index_select(1, rows).view(b, n, -1)), -1)


def to_groups(t: Tensor, plan: CellSchedule) -> tuple[Tensor, ...]:
    """The cells of ``t [B, N, ...]`` in ``plan``'s visiting order, split into its groups.

    One autograd node whose gradient is one concatenation and one inverse permutation (the composed
    ``index_select`` and ``split`` cost a zero-filled scatter and a copy per group, issue 36).
    """
    sizes = [stop - start for start, stop in plan.bounds]
    if plan.identity:
        return t.split(sizes, 1)
    if not _one_node(t):
        return t.index_select(1, plan.order).split(sizes, 1)
    return _ToGroups.apply(t, plan.order, plan.inverse, sizes)


def from_groups(parts: list[Tensor] | tuple[Tensor, ...], plan: CellSchedule) -> Tensor:
    """Inverse of :func:`to_groups`: the groups' rows concatenated and put back in raster order,
    as one autograd node (its gradient: one permutation and one split)."""
    if plan.identity:
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    if not _one_node(*parts):
        return torch.cat(parts, 1).index_select(1, plan.inverse)
    return _FromGroups.apply(plan.order, plan.inverse, *parts)


def _one_node(*tensors: Tensor) -> bool:
    """Whether :func:`to_groups`/:func:`from_groups` build their one-node gradient: a graph is being
    recorded for ``tensors``, outside ``torch.compile`` (which captures the composed operations)."""
    graph = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return graph and not torch.compiler.is_compiling()


class _ToGroups(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, order, inverse, sizes):
        ctx.save_for_backward(inverse)
        return tuple(t.index_select(1, order).split(sizes, 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        (inverse,) = ctx.saved_tensors
        return torch.cat(grads, 1).index_select(1, inverse), None, None, None


class _LateralInputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, feats, outside, *sources):
        ctx.save_for_backward(rows)
        ctx.split = (feats.shape[-1], [1, *(s.shape[1] for s in sources)])
        return _gather_lateral(rows, feats, outside, sources)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        width, sizes = ctx.split
        b = grad.shape[0]
        grad_feats, grad_neighbours = grad.split((width, grad.shape[-1] - width), -1)
        grad_neighbours = grad_neighbours.reshape(b, len(rows), -1)
        grad_state = grad_neighbours.new_zeros(b, sum(sizes), grad_neighbours.shape[-1])
        grad_state.index_add_(1, rows, grad_neighbours)
        return None, grad_feats, *grad_state.split(sizes, 1)


class _FromGroups(torch.autograd.Function):
    @staticmethod
    def forward(ctx, order, inverse, *parts):
        ctx.save_for_backward(order)
        ctx.sizes = [p.shape[1] for p in parts]
        return torch.cat(parts, 1).index_select(1, inverse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (order,) = ctx.saved_tensors
        return None, None, *grad.index_select(1, order).split(ctx.sizes, 1)
