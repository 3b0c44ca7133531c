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

from ppl_scenes.ops.constants import cached_constant, scalar
from ppl_scenes.ops.elementwise import clip


def _axis_coords(center: Tensor, size: Tensor, extent: int, samples: int) -> Tensor:
    """Image-normalised coordinates of ``samples`` evenly spaced pixel centres across a box side.

    Boxes are axis-aligned, so a glimpse's sampling grid is separable: x depends only on the column
    and y only on the row, which is far cheaper than a general affine grid.
    """
    t = _sample_offsets(samples, center.device, center.dtype)  # in (-0.5, 0.5)
    two, one = scalar(2.0, center), scalar(1.0, center)
    return (center[..., None] + t * size[..., None]).mul(two).div(scalar(extent, center)).sub(one)


@cached_constant
def _sample_offsets(samples: int, device, dtype) -> Tensor:
    """``(k + 0.5) / samples - 0.5`` for ``k < samples``: sample positions across a unit box side."""
    return (torch.arange(samples, device=device, dtype=dtype) + 0.5) / samples - 0.5


@cached_constant
def glimpse_grid_map(out_h: int, out_w: int, width: int, height: int, device, dtype) -> tuple[Tensor, Tensor]:
    """``(G [4, h * w * 2], g0 [h * w * 2])``: a box ``(cx, cy, w, h)``'s sampling grid is ``box @ G + g0``.

    The grid is affine in the box: pixel ``(i, j)`` of the glimpse samples the normalised point
    ``x_j = 2 (cx + t_j w) / W - 1``, ``y_i = 2 (cy + t_i h) / H - 1`` (``t`` from :func:`_sample_offsets`).
    """
    tx = _sample_offsets(out_w, device, dtype).expand(out_h, out_w)
    ty = _sample_offsets(out_h, device, dtype)[:, None].expand(out_h, out_w)
    zero = torch.zeros(out_h, out_w, device=device, dtype=dtype)
    one = torch.ones_like(zero)
    rows = [  # the derivative of (x_j, y_i) by cx, cy, w, h
        torch.stack((one * 2 / width, zero), -1),
        torch.stack((zero, one * 2 / height), -1),
        torch.stack((tx * 2 / width, zero), -1),
        torch.stack((zero, ty * 2 / height), -1),
    ]
    bias = torch.full((out_h * out_w * 2,), -1.0, device=device, dtype=dtype)
    return torch.stack(rows).reshape(4, -1), bias


def crop(images: Tensor, boxes_cxcywh: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Bilinear glimpses of ``out_size`` from each box.

    Args:
        images: ``[B, C, H, W]``.
        boxes_cxcywh: ``[B, N, 4]`` boxes in absolute pixels (centre x, centre y, width, height).
        out_size: glimpse size ``(h, w)``.

    Returns:
        ``[B, N, C, h, w]``; parts of a box outside the image read as zero.
    """
    hh, ww = images.shape[-2:]
    oh, ow = out_size
    # The sampling grid is one matrix product of the boxes (:func:`glimpse_grid_map`).
    weights, bias = glimpse_grid_map(oh, ow, ww, hh, boxes_cxcywh.device, boxes_cxcywh.dtype)
    return sample_glimpses(images, torch.addmm(bias, boxes_cxcywh.reshape(-1, 4), weights), out_size)


def sample_glimpses(images: Tensor, grids: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Bilinear glimpses ``[B, n, C, h, w]`` at flat sampling grids ``[B * n, h * w * 2]`` (or
    ``[B, n, h * w * 2]``) of normalised ``(x, y)`` points, row by row (:func:`glimpse_grid_map`)."""
    b, c = images.shape[:2]
    oh, ow = out_size
    # All n glimpses of an image share one grid_sample call, stacked along the grid's height (the
    # image is not repeated).
    out = F.grid_sample(images, grids.view(b, -1, ow, 2), mode="bilinear", align_corners=False)
    return out.view(b, c, -1, oh, ow).permute(0, 2, 1, 3, 4)


def _axis_window(center: Tensor, size: Tensor, extent: int) -> tuple[Tensor, Tensor]:
    """Start and length of the pixels along one axis that bilinear sampling of a box side can read.

    A sample at absolute coordinate ``X`` has pixel-index coordinate ``u = X - 0.5`` and reads pixels
    ``floor(u)`` and ``floor(u) + 1``. Samples lie inside ``[center - |size|/2, center + |size|/2]``, so
    the pixels read are ``floor(lo - 0.5) .. floor(hi - 0.5) + 1``: the box grown by at most one pixel
    on each side, then clamped to ``[0, extent)``.
    """
    half = size.abs() / 2
    start = torch.floor(center - half - 0.5)
    stop = torch.floor(center + half - 0.5) + 2
    start, stop = (torch.nan_to_num(v).clamp(0, extent).long() for v in (start, stop))
    return start, stop - start


def localized_window(
    boxes_cxcywh: Tensor, image_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer pixel window that :func:`crop` can read for each box.

    Args:
        boxes_cxcywh: ``[..., 4]`` boxes in absolute pixels (centre x, centre y, width, height).
        image_size: ``(H, W)`` of the image the boxes live in.

    Returns:
        ``(x0, y0, width, height)``, each a ``[...]`` ``int64`` tensor: the window covers columns
        ``x0 .. x0 + width - 1`` and rows ``y0 .. y0 + height - 1``. It contains every pixel that
        bilinear sampling of the box touches (its extent grown by at most one pixel per side for the
        bilinear neighbours), clamped to the image, so it is empty (zero width or height) for a box
        entirely outside the image. Computed without gradients: it is an index, not a value.
    """
    hh, ww = image_size
    with torch.no_grad():
        cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
        x0, width = _axis_window(cx, bw, ww)
        y0, height = _axis_window(cy, bh, hh)
    return x0, y0, width, height


def crop_localized(images: Tensor, boxes_cxcywh: Tensor, out_size: tuple[int, int]) -> Tensor:
    """:func:`crop` that reads only a small window of the image around each box.

    A bilinear glimpse only reads the pixels inside its box and their bilinear neighbours, so for
    large images (Variational saccading, App. 7.3) each box's window (see :func:`localized_window`)
    is first gathered into a ``[B, N, C, h_win, w_win]`` tensor, where ``h_win x w_win`` is the largest
    window of the batch (windows that run past the image border are zero-padded), and the glimpse is
    sampled from its window with coordinates relative to the window's origin. Sampling then costs
    ``O(B * N * C * h_win * w_win)`` memory instead of touching the whole ``[B, C, H, W]`` image; the
    window size follows the boxes' sizes, not the image's (one host sync reads it).

    Values and gradients (with respect to ``images`` and ``boxes_cxcywh``) equal :func:`crop`'s up to
    float rounding: the window holds every pixel that ``crop`` would read, and pixels outside the image
    read as zero as in ``crop``. Arguments and result as for :func:`crop`.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if boxes_cxcywh.dim() != 3 or boxes_cxcywh.shape[-1] != 4 or boxes_cxcywh.shape[0] != images.shape[0]:
        raise ValueError(
            f"boxes_cxcywh must be [B, N, 4] with B = {images.shape[0]} as images, "
            f"got shape {tuple(boxes_cxcywh.shape)}"
        )
    if len(out_size) != 2 or any(int(s) <= 0 for s in out_size):
        raise ValueError(f"out_size must be two positive ints (h, w), got {tuple(out_size)}")
    b, c, hh, ww = images.shape
    n = boxes_cxcywh.shape[1]
    oh, ow = (int(s) for s in out_size)
    if b * n == 0:
        return images.new_zeros(b, n, c, oh, ow)
    x0, y0, width, height = localized_window(boxes_cxcywh, (hh, ww))
    win_h, win_w = max(int(height.max()), 1), max(int(width.max()), 1)
    # Gather every window at once: rows/cols past the image border are clamped for the lookup and
    # then zeroed, which is the zero padding that ``grid_sample`` applies in ``crop``.
    rows = y0[..., None] + torch.arange(win_h, device=images.device)  # [B, N, win_h]
    cols = x0[..., None] + torch.arange(win_w, device=images.device)  # [B, N, win_w]
    inside = (rows < hh)[..., :, None] & (cols < ww)[..., None, :]  # [B, N, win_h, win_w]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    windows = images.permute(0, 2, 3, 1)[
        batch, rows.clamp(max=hh - 1)[..., None], cols.clamp(max=ww - 1)[..., None, :]
    ]
    windows = (windows * inside[..., None]).permute(0, 1, 4, 2, 3)  # [B, N, C, win_h, win_w]
    # The same grid as ``crop``, in the window's frame: shift the centres by the window's origin.
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    gx = _axis_coords(cx - x0.to(cx.dtype), bw, win_w, ow)[:, :, None, :].expand(b, n, oh, ow)
    gy = _axis_coords(cy - y0.to(cy.dtype), bh, win_h, oh)[:, :, :, None].expand(b, n, oh, ow)
    grid = torch.stack((gx, gy), -1).reshape(b * n, oh, ow, 2)
    out = F.grid_sample(windows.reshape(b * n, c, win_h, win_w), grid, mode="bilinear", align_corners=False)
    return out.reshape(b, n, c, oh, ow)


def _tent(coords: Tensor, size: int) -> Tensor:
    """Bilinear weights ``max(0, 1 - |u - k|)`` of source index ``k < size`` for each coordinate ``u``.

    Row ``p`` of the result holds the weights with which output ``p`` reads the source pixels: the
    same weights as ``grid_sample(..., mode="bilinear", padding_mode="zeros")``.
    """
    k = _pixel_indices(size, 0.0, coords.device, coords.dtype)
    return clip(scalar(1.0, coords) - (coords[..., None] - k).abs(), min=0.0)


@cached_constant
def _pixel_indices(size: int, shift: float, device, dtype) -> Tensor:
    """``arange(size) + shift`` (pixel indices, or with ``shift=0.5`` pixel centres)."""
    return torch.arange(size, device=device, dtype=dtype) + shift


def paste(
    glimpses: Tensor,
    boxes_cxcywh: Tensor,
    canvas_size: tuple[int, int],
    min_size: float = 1e-3,
    channel_major: bool = False,
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
        channel_major: lay the result out in memory as ``[B, C, N, H, W]`` (returned as its
            ``[B, N, C, H, W]`` view), so that per-channel sums over the objects read it without a
            copy (:func:`~ppl_scenes.ops.composite_patches`); the values are the same.

    Returns:
        ``[B, N, C, H, W]``, zero outside each box.
    """
    glimpse_size = tuple(glimpses.shape[-2:])
    coords = _paste_coords(boxes_cxcywh, glimpse_size, canvas_size, min_size)
    if channel_major:
        return _placed(glimpses.transpose(1, 2), *(c.unsqueeze(1) for c in coords)).transpose(1, 2)
    return _placed(glimpses, *(c.unsqueeze(2) for c in coords))


def paste_support(
    boxes_cxcywh: Tensor, glimpse_size: tuple[int, int], canvas_size: tuple[int, int], min_size: float = 1e-3
) -> Tensor:
    """``paste`` of an all-ones glimpse of ``glimpse_size``: how much of each canvas pixel each box covers.

    The values and gradients of :func:`paste` of ones, ``[B, N, 1, H, W]``, without its interpolation
    matrices: ``W_y 1 1^T W_x^T`` is the outer product of their row sums, and a row of bilinear tent
    weights over ``s`` source pixels sums to ``clamp(min(u + 1, s - u), 0, 1)`` at coordinate ``u``
    (1 inside, falling linearly to 0 one pixel beyond either end).
    """
    return _support(*_paste_coords(boxes_cxcywh, glimpse_size, canvas_size, min_size), glimpse_size)


def paste_with_support(
    glimpses: Tensor, boxes_cxcywh: Tensor, canvas_size: tuple[int, int], min_size: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """``(paste(glimpses, ...), paste_support(...))`` of the same boxes, their coordinates computed once."""
    glimpse_size = tuple(glimpses.shape[-2:])
    u, v = _paste_coords(boxes_cxcywh, glimpse_size, canvas_size, min_size)
    return _placed(glimpses, u.unsqueeze(2), v.unsqueeze(2)), _support(u, v, glimpse_size)


def _support(u: Tensor, v: Tensor, glimpse_size: tuple[int, int]) -> Tensor:
    """:func:`paste_support` from the canvas' coordinates in the glimpses (:func:`_paste_coords`)."""
    (gh, gw), one = glimpse_size, scalar(1.0, u)
    across = clip(torch.minimum(u + one, scalar(float(gw), u) - u), 0.0, 1.0)
    down = clip(torch.minimum(v + one, scalar(float(gh), v) - v), 0.0, 1.0)
    return (down[..., :, None] * across[..., None, :]).unsqueeze(2)


def _placed(glimpses: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``W_y @ glimpse @ W_x^T`` for the canvas' coordinates ``(u, v)`` in the glimpses
    (:func:`_paste_coords`, a unit axis where ``glimpses`` has channels): the bilinear interpolation
    matrices ``[..., W, w]`` and ``[..., H, h]``."""
    wx, wy = _tent(u, glimpses.shape[-1]), _tent(v, glimpses.shape[-2])
    return wy @ glimpses @ wx.transpose(-1, -2)


def _paste_coords(
    boxes_cxcywh: Tensor, glimpse_size: tuple[int, int], canvas_size: tuple[int, int], min_size: float
) -> tuple[Tensor, Tensor]:
    """The canvas' pixel centres in each glimpse's pixel-index coordinates (the centre of glimpse
    pixel ``k`` is ``k``): ``(u [B, N, W], v [B, N, H])``."""
    gh, gw = glimpse_size
    hh, ww = canvas_size
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    px = _pixel_indices(ww, 0.5, cx.device, cx.dtype)
    py = _pixel_indices(hh, 0.5, cy.device, cy.dtype)
    u = (px - cx[..., None]) / clip(bw, min=min_size)[..., None] * scalar(gw, cx) + scalar((gw - 1) / 2, cx)
    v = (py - cy[..., None]) / clip(bh, min=min_size)[..., None] * scalar(gh, cy) + scalar((gh - 1) / 2, cy)
    return u, v
