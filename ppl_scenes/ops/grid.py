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

    Cells are visited group by group (:func:`cell_groups`); the latents of the cells visited so far
    live in a *padded state* of ``(H + 1) x (W + 2)`` slots (one row above the grid, one column on
    each side, holding the learned stand-in for cells outside it), flattened row by row.

    Attributes:
        order: ``[N]`` raster index of each cell in visiting order.
        inverse: ``[N]`` visiting position of each raster cell (``order[inverse] == arange(N)``).
        bounds: per group, the ``(start, stop)`` of its cells in visiting order.
        cells: per group, its cells' raster indices (``order[start:stop]``).
        neighbours: per group, ``[n_g * 4]`` padded-state slots of each cell's neighbours
            ``(i-1, j-1), (i-1, j), (i-1, j+1), (i, j-1)`` (cell by cell).
        slots: per group, ``[n_g]`` padded-state slot of each of its cells.
        identity: the visiting order is the raster order (one group, or a raster visit).
    """

    order: Tensor
    inverse: Tensor
    bounds: tuple[tuple[int, int], ...]
    cells: tuple[Tensor, ...]
    neighbours: tuple[Tensor, ...]
    slots: tuple[Tensor, ...]
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
    bounds, neighbours, slots, start = [], [], [], 0
    for cells in groups:
        bounds.append((start, start + len(cells)))
        start += len(cells)
        rows, cols = cells // gw, cells % gw
        nb_rows = torch.stack((rows, rows, rows, rows + 1), -1)  # padded coordinates of the
        nb_cols = torch.stack((cols, cols + 1, cols + 2, cols), -1)  # four earlier neighbours
        neighbours.append((nb_rows * (gw + 2) + nb_cols).reshape(-1))
        slots.append((rows + 1) * (gw + 2) + cols + 1)
    return CellSchedule(
        order=visit,
        inverse=inverse,
        bounds=tuple(bounds),
        cells=tuple(groups),
        neighbours=tuple(neighbours),
        slots=tuple(slots),
        identity=[k for cells in lists for k in cells] == list(range(gh * gw)),
    )


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
