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


def _box_to_affine(boxes_cxcywh: Tensor, size: tuple[int, int]) -> Tensor:
    """Affine maps ``[..., 2, 3]`` from glimpse-normalised to image-normalised coordinates."""
    h, w = size
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    zeros = torch.zeros_like(cx)
    row_x = torch.stack((bw / w, zeros, 2 * cx / w - 1), dim=-1)
    row_y = torch.stack((zeros, bh / h, 2 * cy / h - 1), dim=-1)
    return torch.stack((row_x, row_y), dim=-2)


def _unit_grid(out_size: tuple[int, int], device, dtype) -> Tensor:
    """Pixel-centre coordinates of an ``h x w`` grid in [-1, 1] (align_corners=False): ``[h, w, 2]``."""
    oh, ow = out_size
    ys = (torch.arange(oh, device=device, dtype=dtype) + 0.5) / oh * 2 - 1
    xs = (torch.arange(ow, device=device, dtype=dtype) + 0.5) / ow * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), dim=-1)


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
    theta = _box_to_affine(boxes_cxcywh, (hh, ww))  # [B, N, 2, 3]
    base = _unit_grid(out_size, images.device, images.dtype)  # [oh, ow, 2]
    # All N glimpses of an image share one grid_sample call: stacking them along the grid's height
    # avoids repeating the image N times in memory.
    grid = torch.einsum("bnij,hwj->bnhwi", theta[..., :2], base) + theta[..., 2][:, :, None, None, :]
    out = F.grid_sample(images, grid.reshape(b, n * oh, ow, 2), mode="bilinear", align_corners=False)
    return out.reshape(b, c, n, oh, ow).permute(0, 2, 1, 3, 4)


def paste(glimpses: Tensor, boxes_cxcywh: Tensor, canvas_size: tuple[int, int], min_size: float = 1e-3) -> Tensor:
    """Place each glimpse at its box on an otherwise empty canvas (the inverse of :func:`crop`).

    Args:
        glimpses: ``[B, N, C, h, w]``.
        boxes_cxcywh: ``[B, N, 4]`` target boxes in the canvas' pixels.
        canvas_size: ``(H, W)``.
        min_size: box sides are clamped below at this many pixels, so the inverse map stays finite.

    Returns:
        ``[B, N, C, H, W]``, zero outside each box.
    """
    b, n, c, gh, gw = glimpses.shape
    hh, ww = canvas_size
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    bw = bw.clamp(min=min_size)
    bh = bh.clamp(min=min_size)
    zeros = torch.zeros_like(cx)
    # Inverse of crop's affine map: canvas-normalised -> glimpse-normalised coordinates.
    row_x = torch.stack((ww / bw, zeros, (ww - 2 * cx) / bw), dim=-1)
    row_y = torch.stack((zeros, hh / bh, (hh - 2 * cy) / bh), dim=-1)
    theta = torch.stack((row_x, row_y), dim=-2).reshape(b * n, 2, 3)
    grid = F.affine_grid(theta, [b * n, c, hh, ww], align_corners=False)
    out = F.grid_sample(glimpses.reshape(b * n, c, gh, gw), grid, mode="bilinear", align_corners=False)
    return out.reshape(b, n, c, hh, ww)
