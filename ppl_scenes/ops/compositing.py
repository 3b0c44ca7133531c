"""Differentiable compositing of many objects over a background.

Each object brings an appearance ``o`` (``C`` channels), an opacity ``alpha`` (already multiplied by
its presence) and a scalar depth ``d``. Per pixel, overlapping objects are mixed by the convex weights
``pi_k = alpha_k exp(d_k) / sum_j alpha_j exp(d_j)`` -- a differentiable stand-in for occlusion in
which higher depth wins (SPAIR §4.4) -- and the mixture is laid over the background:

    image = sum_k pi_k alpha_k o_k + (1 - sum_k pi_k alpha_k) * background.

Because the weights are convex, the foreground opacity never exceeds the largest alpha, so images
stay in [0, 1] whenever appearances and background do.

The three per-pixel sums are all that is needed, so objects rendered on the full canvas
(:func:`composite`) and objects rendered in per-cell windows that are summed back with ``fold``
(:func:`composite_windows`) share :func:`blend`.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def depth_weights(alpha: Tensor, depth: Tensor) -> Tensor:
    """Unnormalised mixing weights ``alpha * exp(depth)``.

    Args:
        alpha: ``[B, N, 1, h, w]`` opacities.
        depth: ``[B, N]`` depths; shifted by each image's (detached) maximum, which leaves the
            normalised weights unchanged and keeps ``exp`` finite.
    """
    shifted = depth - depth.detach().amax(dim=1, keepdim=True)
    return alpha * torch.exp(shifted)[:, :, None, None, None]


def blend(color_sum: Tensor, alpha_sum: Tensor, weight_sum: Tensor, background: Tensor) -> Tensor:
    """Finish compositing from the per-pixel sums of ``w*alpha*o``, ``w*alpha`` and ``w``."""
    norm = weight_sum + EPS
    return color_sum / norm + (1 - alpha_sum / norm) * background


def composite(appearance: Tensor, alpha: Tensor, depth: Tensor, background: Tensor | float) -> Tensor:
    """Composite objects drawn on full canvases.

    Args:
        appearance: ``[B, N, C, H, W]`` colours in [0, 1].
        alpha: ``[B, N, 1, H, W]`` opacities in [0, 1] (zero outside an object).
        depth: ``[B, N]``.
        background: a float, or a tensor broadcastable to ``[B, C, H, W]``.

    Returns:
        ``[B, C, H, W]``.
    """
    w = depth_weights(alpha, depth)
    return blend((w * alpha * appearance).sum(1), (w * alpha).sum(1), w.sum(1), _as_tensor(background, alpha))


def fold_windows(
    windows: Tensor, grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int]
) -> Tensor:
    """Sum per-cell windows back onto the canvas.

    Cell ``(i, j)`` of an ``H x W`` grid owns a window of ``(c_h + 2 p_h) x (c_w + 2 p_w)`` pixels --
    its own cell widened by ``pad = (p_h, p_w)`` pixels on every side -- whose top-left pixel is
    ``(i c_h - p_h, j c_w - p_w)``; parts outside the canvas are dropped.

    The same sum as ``F.fold`` (col2im), computed block by block (:class:`_FoldWindows`), which is
    faster than col2im and its im2col gradient on the CPU (issue 36).

    Args:
        windows: ``[B, H * W, C, c_h + 2 p_h, c_w + 2 p_w]`` in raster order of the cells.

    Returns:
        ``[B, C, H * c_h, W * c_w]``.
    """
    b, n, c, kh, kw = windows.shape
    ch, cw = cell
    if (kh, kw) != (ch + 2 * pad[0], cw + 2 * pad[1]):
        raise ValueError(f"windows of {kh}x{kw} do not match cell {cell} padded by {pad}")
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} windows for a grid of {grid[0]}x{grid[1]} cells")
    return _FoldWindows.apply(windows, tuple(grid), tuple(cell), tuple(pad))


def _window_view(
    canvas: Tensor, grid: tuple[int, int], cell: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """``[B, C, k_h, k_w, H, W]`` view of a canvas ``[B, C, *, *]`` whose element ``(y, x, i, j)`` is
    pixel ``(i c_h + y, j c_w + x)``: window ``(i, j)`` of the canvas grown by the padding on the
    top and left. Windows overlap, so the view does too (read it, or write one block at a time)."""
    s = canvas.stride()
    shape = (canvas.shape[0], canvas.shape[1], *size, *grid)
    return canvas.as_strided(shape, (s[0], s[1], s[2], s[3], cell[0] * s[2], cell[1] * s[3]))


class _FoldWindows(torch.autograd.Function):
    """:func:`fold_windows`: the windows added onto a padded canvas one ``c_h x c_w`` block of their
    pixels at a time (within a block no two windows share a pixel, so each block is one strided
    in-place sum); its gradient is the padded canvas's gradient read back through the same view."""

    @staticmethod
    def forward(ctx, windows, grid, cell, pad):
        b, n, c, kh, kw = windows.shape
        (gh, gw), (ch, cw) = grid, cell
        rows, cols = (gh - 1) * ch + kh, (gw - 1) * cw + kw
        padded = windows.new_zeros(b, c, rows, cols)
        view = _window_view(padded, grid, cell, (kh, kw))
        w = windows.reshape(b, gh, gw, c, kh, kw).permute(0, 3, 4, 5, 1, 2)  # any layout
        for y in range(0, kh, ch):
            for x in range(0, kw, cw):
                view[:, :, y : y + ch, x : x + cw] += w[:, :, y : y + ch, x : x + cw]
        ctx.shapes = (windows.shape, grid, cell, pad, rows, cols)
        return padded[:, :, pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (b, n, c, kh, kw), (gh, gw), (ch, cw), pad, rows, cols = ctx.shapes
        padded = grad.new_zeros(b, c, rows, cols)
        padded[:, :, pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw] = grad
        view = _window_view(padded, (gh, gw), (ch, cw), (kh, kw))
        return view.permute(0, 4, 5, 1, 2, 3).reshape(b, n, c, kh, kw), None, None, None


def depth_weighted_layers(appearance: Tensor, alpha: Tensor, depth: Tensor) -> Tensor:
    """The three quantities compositing sums per pixel, stacked: ``[w alpha o, w alpha, w]`` on dim 2.

    ``w = alpha exp(depth)`` (:func:`depth_weights`), computed on objects already pasted onto their
    windows or canvases (weighting glimpses before pasting would be cheaper, but the ratio of
    resampled layers no longer fades objects out at their box edges).

    Args:
        appearance: ``[B, N, C, h, w]``; alpha: ``[B, N, 1, h, w]``; depth: ``[B, N]``.

    Returns:
        ``[B, N, C + 2, h, w]``.
    """
    w = depth_weights(alpha, depth)
    return torch.cat((w * alpha * appearance, w * alpha, w), dim=2)


def blend_windows(
    layers: Tensor,
    background: Tensor | float,
    grid: tuple[int, int],
    cell: tuple[int, int],
    pad: tuple[int, int],
) -> Tensor:
    """Sum per-cell windows of :func:`depth_weighted_layers` onto the canvas and blend them.

    Args:
        layers: ``[B, H * W, C + 2, c_h + 2 p_h, c_w + 2 p_w]`` (see :func:`fold_windows`).

    Returns:
        ``[B, C, H * c_h, W * c_w]``.
    """
    c = layers.shape[2] - 2
    sums = fold_windows(layers, grid, cell, pad)
    return blend(sums[:, :c], sums[:, c : c + 1], sums[:, c + 1 :], _as_tensor(background, layers))


def composite_windows(
    appearance: Tensor,
    alpha: Tensor,
    depth: Tensor,
    background: Tensor | float,
    grid: tuple[int, int],
    cell: tuple[int, int],
    pad: tuple[int, int],
) -> Tensor:
    """Composite one object per grid cell, each drawn only inside its cell's window.

    Cost grows with objects x window instead of objects x canvas. Arguments as :func:`composite`, with
    ``[B, H * W, ...]`` windows laid out as :func:`fold_windows` describes.

    Returns:
        ``[B, C, H * c_h, W * c_w]``.
    """
    return blend_windows(depth_weighted_layers(appearance, alpha, depth), background, grid, cell, pad)


def window_overlap(
    windows: Tensor, grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int]
) -> Tensor:
    """Per canvas pixel, the sum minus the maximum of the objects' per-cell windows (GMAIR §2.3).

    Zero where at most one object draws; grows with every further object drawing the same pixel. The
    maximum over objects is taken with ``scatter_reduce`` onto the padded canvas, so no object is ever
    drawn on a full canvas of its own.

    Args:
        windows: ``[B, H * W, C, c_h + 2 p_h, c_w + 2 p_w]`` non-negative values laid out as
            :func:`fold_windows` describes.

    Returns:
        ``[B, C, H * c_h, W * c_w]``.
    """
    b, n, c, kh, kw = windows.shape
    gh, gw = grid
    ch, cw = cell
    if n != gh * gw or (kh, kw) != (ch + 2 * pad[0], cw + 2 * pad[1]):
        raise ValueError(f"windows {tuple(windows.shape)} do not match grid {grid}, cell {cell}, pad {pad}")
    height, width = gh * ch + 2 * pad[0], gw * cw + 2 * pad[1]
    dev = windows.device
    rows = (torch.arange(gh, device=dev) * ch)[:, None, None, None] + torch.arange(kh, device=dev)[:, None]
    cols = (torch.arange(gw, device=dev) * cw)[None, :, None, None] + torch.arange(kw, device=dev)
    index = (rows * width + cols).reshape(1, 1, -1).expand(b, c, -1)  # [B, C, N * kh * kw]
    values = windows.permute(0, 2, 1, 3, 4).reshape(b, c, -1)
    flat = values.new_zeros(b, c, height * width)
    total = flat.scatter_add(-1, index, values)
    largest = flat.scatter_reduce(-1, index, values, reduce="amax", include_self=True)
    excess = (total - largest).reshape(b, c, height, width)
    return excess[..., pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw]


def _as_tensor(background: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(background, Tensor):
        return background
    return torch.tensor(float(background), dtype=like.dtype, device=like.device)
