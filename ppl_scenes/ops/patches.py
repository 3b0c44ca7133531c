"""Objects drawn on patches the size of their boxes, and summed onto the canvas where they lie.

A per-cell window (:func:`~ppl_scenes.ops.fold_windows`) must hold every box its cell can reach, so
it is several times the area of any one box: 40x40 pixels for SPAIR's default 16-px boxes on 12-px
cells. A patch holds one box and its bilinear fringe -- ``ceil(s (1 + 1/g)) + 2`` pixels for boxes of
side at most ``s`` drawn from ``g``-pixel glimpses, 20 for the same boxes -- at an integer origin that
follows the box, and is summed onto the canvas by a scatter over the pixels it covers. Unlike a
window, a patch never cuts off the outermost fringe of a box at the edge of its cell's reach.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ppl_scenes.ops.compositing import _as_tensor, blend, depth_weighted_layers
from ppl_scenes.ops.transformer import _paste_coords, _tent

__all__ = ["composite_patches", "fold_patches", "paste_patches", "patch_overlap", "patch_size"]


def patch_size(max_box: tuple[float, float], glimpse_size: tuple[int, int]) -> tuple[int, int]:
    """``(P_h, P_w)``: pixels of a patch that holds any box of at most ``max_box`` ``(h, w)`` pixels
    pasted from a glimpse of ``glimpse_size``, its bilinear fringe included (half a glimpse pixel
    beyond each edge, plus a pixel for the integer origin)."""
    return tuple(math.ceil(s * (1 + 1 / g)) + 2 for s, g in zip(max_box, glimpse_size))


def paste_patches(
    glimpses: Tensor, boxes_cxcywh: Tensor, patch: tuple[int, int], min_size: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """:func:`~ppl_scenes.ops.paste` onto a patch per box instead of the whole canvas.

    Args:
        glimpses: ``[B, N, C, h, w]``.
        boxes_cxcywh: ``[B, N, 4]`` in the canvas' pixels, each at most as large as :func:`patch_size`
            allows.
        patch: ``(P_h, P_w)`` from :func:`patch_size`.

    Returns:
        ``(patches [B, N, C, P_h, P_w], origins [B, N, 2])``: patch pixel ``(i, j)`` is canvas pixel
        ``(origin_y + i, origin_x + j)``; origins are integer ``(x, y)`` (int64), the values those of
        :func:`~ppl_scenes.ops.paste` on the canvas there.
    """
    gh, gw = glimpses.shape[-2:]
    cx, cy, bw, bh = boxes_cxcywh.detach().unbind(-1)
    # the first canvas pixel a glimpse can reach: its centre half a glimpse pixel beyond the left edge
    fringe_x, fringe_y = bw.clamp(min=min_size) / (2 * gw), bh.clamp(min=min_size) / (2 * gh)
    origins = torch.stack(
        (torch.floor(cx - bw / 2 - fringe_x - 0.5), torch.floor(cy - bh / 2 - fringe_y - 0.5)), -1
    )
    centres, sizes = boxes_cxcywh.split((2, 2), -1)
    local = torch.cat((centres - origins, sizes), -1)
    u, v = _paste_coords(local, (gh, gw), patch, min_size)
    wx, wy = _tent(u, gw), _tent(v, gh)
    return wy.unsqueeze(2) @ glimpses @ wx.unsqueeze(2).transpose(-1, -2), origins.long()


def _patch_pixels(origins: Tensor, patch: tuple[int, int], canvas: tuple[int, int], channels: int) -> Tensor:
    """``[B, C, N * P_h * P_w]``: each patch pixel's flat index into a ``[B, C, H * W + 1]`` canvas;
    pixels off the canvas go to the extra last slot, which is then dropped."""
    (ph, pw), (height, width) = patch, canvas
    b, n = origins.shape[:2]
    rows = origins[..., 1, None] + torch.arange(ph, device=origins.device)  # [B, N, P_h]
    cols = origins[..., 0, None] + torch.arange(pw, device=origins.device)  # [B, N, P_w]
    on = ((rows >= 0) & (rows < height))[..., :, None] & ((cols >= 0) & (cols < width))[..., None, :]
    flat = torch.where(on, rows[..., :, None] * width + cols[..., None, :], height * width)
    return flat.reshape(b, 1, n * ph * pw).expand(b, channels, -1)


def _as_rows(values: Tensor) -> Tensor:
    """``[B, N, C, P_h, P_w]`` as ``[B, C, N * P_h * P_w]`` (the order of :func:`_patch_pixels`)."""
    b, n, c = values.shape[:3]
    return values.transpose(1, 2).reshape(b, c, -1)


def fold_patches(values: Tensor, origins: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Sum patches onto an empty canvas: ``[B, C, H, W]``; what falls off the canvas is dropped.

    Args:
        values: ``[B, N, C, P_h, P_w]``; origins: ``[B, N, 2]`` integer ``(x, y)`` of each patch's
            first pixel (:func:`paste_patches`); canvas: ``(H, W)``.
    """
    b, _, c, ph, pw = values.shape
    height, width = canvas
    index = _patch_pixels(origins, (ph, pw), canvas, c)
    flat = values.new_zeros(b, c, height * width + 1).scatter_add(-1, index, _as_rows(values))
    return flat[..., :-1].reshape(b, c, height, width)


def patch_overlap(values: Tensor, origins: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Per canvas pixel, the sum minus the maximum of the objects' patches (GMAIR §2.3), as
    :func:`~ppl_scenes.ops.window_overlap` for windows: ``[B, C, H, W]``; ``values`` non-negative."""
    b, _, c, ph, pw = values.shape
    height, width = canvas
    index = _patch_pixels(origins, (ph, pw), canvas, c)
    rows = _as_rows(values)
    flat = values.new_zeros(b, c, height * width + 1)
    excess = flat.scatter_add(-1, index, rows) - flat.scatter_reduce(
        -1, index, rows, reduce="amax", include_self=True
    )
    return excess[..., :-1].reshape(b, c, height, width)


def composite_patches(
    drawn: Tensor, origins: Tensor, depth: Tensor, background: Tensor | float, canvas: tuple[int, int]
) -> Tensor:
    """Composite one object per patch over the background (SPAIR §4.4): ``[B, C, H, W]``.

    The same image as :func:`~ppl_scenes.ops.composite` of the objects pasted on full canvases.

    Args:
        drawn: ``[B, N, C + 1, P_h, P_w]`` appearance, then opacity (times presence).
        origins: ``[B, N, 2]`` from :func:`paste_patches`; depth: ``[B, N]``.
        background: a float, or a tensor broadcastable to ``[B, C, H, W]``.
    """
    c = drawn.shape[2] - 1
    appearance, alpha = drawn.split((c, 1), 2)  # one node, not two slices
    sums = fold_patches(depth_weighted_layers(appearance, alpha, depth), origins, canvas)
    color, alpha_sum, weight = sums.split((c, 1, 1), 1)
    return blend(color, alpha_sum, weight, _as_tensor(background, drawn))
