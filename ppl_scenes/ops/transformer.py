"""Spatial transformer: crop glimpses from boxes and paste glimpses back onto canvases.

One convention throughout (see :mod:`ppl_scenes.ops.boxes`): boxes are absolute-pixel
``(cx, cy, w, h)`` or ``(x1, y1, x2, y2)`` where pixel ``i`` covers ``[i, i + 1)``; sampling uses
``grid_sample(..., align_corners=False)``, whose normalised coordinate -1 is the outer edge of the
first pixel and +1 the outer edge of the last. A glimpse of ``h x w`` pixels covers its box exactly,
so ``paste(crop(image, box), box)`` recovers the box's content when the glimpse has the box's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis_coords(center: Tensor, size: Tensor, extent: int, samples: int) -> Tensor:
    """Image-normalised coordinates of ``samples`` evenly spaced pixel centres across a box side.

    Boxes are axis-aligned, so a glimpse's sampling grid is separable: x depends only on the column
    and y only on the row, which is far cheaper than a general affine grid.
    """
    t = (
        torch.arange(samples, device=center.device, dtype=center.dtype) + 0.5
    ) / samples - 0.5  # in (-0.5, 0.5)
    return (2 * (center[..., None] + t * size[..., None]) / extent) - 1


def crop(images: Tensor, boxes_cxcywh: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Bilinear glimpses of ``out_size`` from each box.

    Args:
        images: ``[B, C, H, W]``.
        boxes_cxcywh: ``[B, N, 4]`` boxes in absolute pixels (centre x, centre y, width, height).
        out_size: glimpse size ``(h, w)``.

    Returns:
        ``[B, N, C, h, w]``; parts of a box outside the image read as zero.
    """
    b, c, hh, ww = images.shape
    n = boxes_cxcywh.shape[1]
    oh, ow = out_size
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    gx = _axis_coords(cx, bw, ww, ow)[:, :, None, :].expand(b, n, oh, ow)
    gy = _axis_coords(cy, bh, hh, oh)[:, :, :, None].expand(b, n, oh, ow)
    # All N glimpses of an image share one grid_sample call: stacking them along the grid's height
    # avoids repeating the image N times in memory.
    grid = torch.stack((gx, gy), -1).reshape(b, n * oh, ow, 2)
    out = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    return out.reshape(b, c, n, oh, ow).permute(0, 2, 1, 3, 4)


def _tent(coords: Tensor, size: int) -> Tensor:
    """Bilinear weights ``max(0, 1 - |u - k|)`` of source index ``k < size`` for each coordinate ``u``.

    Row ``p`` of the result holds the weights with which output ``p`` reads the source pixels: the
    same weights as ``grid_sample(..., mode="bilinear", padding_mode="zeros")``.
    """
    k = torch.arange(size, device=coords.device, dtype=coords.dtype)
    return (1 - (coords[..., None] - k).abs()).clamp(min=0)


def paste(
    glimpses: Tensor, boxes_cxcywh: Tensor, canvas_size: tuple[int, int], min_size: float = 1e-3
) -> Tensor:
    """Place each glimpse at its box on an otherwise empty canvas (the inverse of :func:`crop`).

    Boxes are axis-aligned, so bilinear resampling is separable: ``canvas = W_y @ glimpse @ W_x^T``
    with ``[H, h]`` and ``[W, w]`` interpolation matrices -- the same values and gradients as
    ``grid_sample`` with the convention of this module, at a fraction of its cost.

    Args:
        glimpses: ``[B, N, C, h, w]``.
        boxes_cxcywh: ``[B, N, 4]`` target boxes in the canvas' pixels.
        canvas_size: ``(H, W)``.
        min_size: box sides are clamped below at this many pixels, so the inverse map stays finite.

    Returns:
        ``[B, N, C, H, W]``, zero outside each box.
    """
    gh, gw = glimpses.shape[-2:]
    hh, ww = canvas_size
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    # Canvas pixel centres in the glimpse's pixel-index coordinates (centre of glimpse pixel k is k).
    px = torch.arange(ww, device=cx.device, dtype=cx.dtype) + 0.5
    py = torch.arange(hh, device=cy.device, dtype=cy.dtype) + 0.5
    u = (px - cx[..., None]) / bw.clamp(min=min_size)[..., None] * gw + (gw - 1) / 2
    v = (py - cy[..., None]) / bh.clamp(min=min_size)[..., None] * gh + (gh - 1) / 2
    wx, wy = _tent(u, gw), _tent(v, gh)  # [B, N, W, w], [B, N, H, h]
    return wy.unsqueeze(2) @ glimpses @ wx.unsqueeze(2).transpose(-1, -2)
