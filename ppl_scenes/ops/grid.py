"""The cell grid of SPAIR-style models (SPAIR §4.1; GMAIR §2.1 uses the same grid).

An ``H_img x W_img`` image is divided into ``H x W`` cells of ``c_h x c_w`` pixels; a cell's object
is drawn only inside its *window*, the cell grown on every side by the reach of its box.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ppl_scenes.ops.boxes import grid_cell_origins

__all__ = ["cell_groups", "grid_shape", "pad_to_grid", "window_origins", "window_pad"]


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
    """
    shift = torch.tensor([pad[1], pad[0]], dtype=torch.float32, device=device)
    return grid_cell_origins(grid, cell, device=device) - shift


def cell_groups(grid: tuple[int, int], order: str, device: torch.device | str | None = None) -> list[Tensor]:
    """Cells (raster indices, on ``device``) in the order SPAIR's lateral guide visits them (§4.3).

    ``wavefront``: one group per anti-diagonal ``2i + j`` -- a cell's neighbours ``(i-1, j-1),
    (i-1, j), (i-1, j+1), (i, j-1)`` all lie on earlier anti-diagonals; ``raster``: one cell per group.
    """
    gh, gw = grid
    idx = torch.arange(gh * gw, device=device)
    if order == "raster":
        return [idx[k : k + 1] for k in range(gh * gw)]
    key = 2 * (idx // gw) + idx % gw
    return [idx[key == d] for d in range(int(key.max()) + 1)]
