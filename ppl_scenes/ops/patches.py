"""Objects drawn on patches the size of their boxes, and summed onto the canvas where they lie.

A per-cell window (all the pixels a cell's box can reach, :func:`~ppl_scenes.ops.window_pad`) is
several times the area of any one box: 40x40 pixels for SPAIR's default 16-px boxes on 12-px cells.
A patch holds one box and its bilinear fringe -- ``ceil(s (1 + 1/g)) + 2`` pixels for boxes of side
at most ``s`` drawn from ``g``-pixel glimpses, 20 for the same boxes -- at an integer origin that
follows the box, and is summed onto the canvas by a scatter over the pixels it covers. Unlike a
window, a patch never cuts off the outermost fringe of a box at the edge of its cell's reach.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ppl_scenes.ops.compositing import _as_tensor, blend, depth_weighted_layers
from ppl_scenes.ops.constants import cached_constant
from ppl_scenes.ops.transformer import paste

__all__ = ["composite_patches", "fold_patches", "paste_patches", "patch_overlap", "patch_size"]


def patch_size(max_box: tuple[float, float], glimpse_size: tuple[int, int]) -> tuple[int, int]:
    """``(P_h, P_w)``: pixels of a patch that holds any box of at most ``max_box`` ``(h, w)`` pixels
    pasted from a glimpse of ``glimpse_size``, its bilinear fringe included (half a glimpse pixel
    beyond each edge, plus a pixel for the integer origin)."""
    return tuple(math.ceil(s * (1 + 1 / g)) + 2 for s, g in zip(max_box, glimpse_size))


def paste_patches(
    glimpses: Tensor,
    boxes_cxcywh: Tensor,
    patch: tuple[int, int],
    min_size: float = 1e-3,
    canvas: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`~ppl_scenes.ops.paste` onto a patch per box instead of the whole canvas.

    Args:
        glimpses: ``[B, N, C, h, w]``.
        boxes_cxcywh: ``[B, N, 4]`` in the canvas' pixels, each at most as large as :func:`patch_size`
            allows.
        patch: ``(P_h, P_w)`` from :func:`patch_size`.
        canvas: ``(H, W)``, where known: along an axis on which the patch would be at least as long
            as the canvas, the patch is the canvas' extent at origin 0 instead (what lies on the
            canvas is the same; the rest was never drawn), and a patch as large as the canvas is
            summed onto it rather than scattered (:func:`fold_patches`).

    Returns:
        ``(patches [B, N, C, P_h, P_w], origins [B, N, 2])``: patch pixel ``(i, j)`` is canvas pixel
        ``(origin_y + i, origin_x + j)``; origins are integer ``(x, y)`` (int64), the values those of
        :func:`~ppl_scenes.ops.paste` on the canvas there. The patches lie channel-major in memory
        (``paste(..., channel_major=True)``), as :func:`fold_patches` scatters them.
    """
    gh, gw = glimpses.shape[-2:]
    along = (False, False) if canvas is None else tuple(p >= c for p, c in zip(patch, canvas))
    patch = tuple(c if whole else p for p, c, whole in zip(patch, canvas or patch, along))
    to_origin, half = _origin_map(gh, gw, along, boxes_cxcywh.device, boxes_cxcywh.dtype)
    # ``(x, y, 0, 0)``: the pixel before the first a glimpse reaches (half a glimpse pixel beyond an
    # edge), 0 along an axis the patch spans whole
    origins = torch.floor(boxes_cxcywh.detach() @ to_origin - half)
    drawn = paste(glimpses, boxes_cxcywh - origins, patch, min_size, channel_major=True)
    return drawn, origins[..., :2].long()


@cached_constant
def _origin_map(gh: int, gw: int, whole: tuple[bool, bool], device, dtype) -> tuple[Tensor, Tensor]:
    """``(M [4, 4], half [4])``: ``box @ M - half = (x0 - w / 2g_w - 1/2, y0 - h / 2g_h - 1/2, 0, 0)``,
    whose floor is a patch's origin; zero along the axes ``whole`` ``(rows, columns)``."""
    m = torch.zeros(4, 4, dtype=dtype, device=device)
    half = torch.zeros(4, dtype=dtype, device=device)
    if not whole[1]:
        m[0, 0], m[2, 0], half[0] = 1.0, -(0.5 + 0.5 / gw), 0.5
    if not whole[0]:
        m[1, 1], m[3, 1], half[1] = 1.0, -(0.5 + 0.5 / gh), 0.5
    return m, half


def _patch_pixels(origins: Tensor, patch: tuple[int, int], canvas: tuple[int, int], channels: int) -> Tensor:
    """``[B, C, N * P_h * P_w]``: each patch pixel's flat index into a ``[B, C, (H + 2) (W + 2)]``
    canvas with a one-pixel border, where every pixel off the canvas lands (and is dropped)."""
    (ph, pw), (height, width) = patch, canvas
    b, n = origins.shape[:2]
    rows_ahead, cols_ahead = _offsets(ph, pw, origins.device)
    rows = (origins[..., 1:] + rows_ahead).clamp_(-1, height).add_(1).mul_(width + 2)  # [B, N, P_h]
    cols = (origins[..., :1] + cols_ahead).clamp_(-1, width).add_(1)  # [B, N, P_w]
    return (rows[..., :, None] + cols[..., None, :]).reshape(b, 1, n * ph * pw).expand(b, channels, -1)


@cached_constant
def _offsets(ph: int, pw: int, device) -> tuple[Tensor, Tensor]:
    """``(arange(P_h), arange(P_w))``."""
    return torch.arange(ph, device=device), torch.arange(pw, device=device)


def _on_canvas(flat: Tensor, canvas: tuple[int, int]) -> Tensor:
    """The canvas ``[B, C, H, W]`` inside :func:`_patch_pixels`' bordered ``[B, C, (H + 2) (W + 2)]``."""
    height, width = canvas
    return flat.view(*flat.shape[:2], height + 2, width + 2)[..., 1:-1, 1:-1]


def _scatter_onto(values: Tensor, origins: Tensor, canvas: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """What a scatter of patches ``[B, N, C, P_h, P_w]`` onto the canvas takes: the index
    (:func:`_patch_pixels`), the values as ``[B, C, N * P_h * P_w]`` in its order, and the empty
    bordered canvas ``[B, C, (H + 2) (W + 2)]``."""
    b, _, c, ph, pw = values.shape
    height, width = canvas
    index = _patch_pixels(origins, (ph, pw), canvas, c)
    rows = values.transpose(1, 2).reshape(b, c, -1)
    return index, rows, values.new_zeros(b, c, (height + 2) * (width + 2))


def _spans_canvas(values: Tensor, canvas: tuple[int, int]) -> bool:
    """Whether patches ``[..., P_h, P_w]`` are exactly the canvas' size: then they lie at the origin
    (:func:`paste_patches` given the canvas) and are summed onto it, not scattered."""
    return tuple(values.shape[-2:]) == tuple(canvas)


def fold_patches(values: Tensor, origins: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Sum patches onto an empty canvas: ``[B, C, H, W]``; what falls off the canvas is dropped.

    Args:
        values: ``[B, N, C, P_h, P_w]``; origins: ``[B, N, 2]`` integer ``(x, y)`` of each patch's
            first pixel (:func:`paste_patches`); canvas: ``(H, W)``. Patches exactly as large as the
            canvas lie at the origin (as :func:`paste_patches` draws them when given the canvas): they
            are summed, their origins not read.
    """
    if _spans_canvas(values, canvas):
        return values.sum(1)
    index, rows, empty = _scatter_onto(values, origins, canvas)
    return _on_canvas(empty.scatter_add(-1, index, rows), canvas)


def patch_overlap(values: Tensor, origins: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Per canvas pixel, the sum minus the maximum of the objects' patches (GMAIR §2.3): zero where at
    most one object draws, growing with every further one; ``[B, C, H, W]``, ``values`` non-negative
    (patches as large as the canvas lie at the origin, as in :func:`fold_patches`)."""
    if _spans_canvas(values, canvas):
        return values.sum(1) - values.amax(1)
    index, rows, empty = _scatter_onto(values, origins, canvas)
    excess = empty.scatter_add(-1, index, rows) - empty.scatter_reduce(
        -1, index, rows, reduce="amax", include_self=True
    )
    return _on_canvas(excess, canvas)


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
    sums = fold_patches(depth_weighted_layers(drawn, depth), origins, canvas)
    color, alpha_sum, weight = sums.split((c, 1, 1), 1)
    return blend(color, alpha_sum, weight, _as_tensor(background, drawn))
