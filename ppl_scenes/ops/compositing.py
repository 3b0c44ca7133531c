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
(:func:`composite_drawn`, :func:`composite_windows`) share :func:`blend`.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ppl_scenes.ops.constants import cached_constant, scalar

EPS = 1e-6


def depth_weights(alpha: Tensor, depth: Tensor) -> Tensor:
    """Unnormalised mixing weights ``alpha * exp(depth)``.

    Args:
        alpha: ``[B, N, 1, h, w]`` opacities.
        depth: ``[B, N]`` depths; shifted by each image's (detached) maximum, which leaves the
            normalised weights unchanged and keeps ``exp`` finite.
    """
    return alpha * _depth_factors(depth)


def _depth_factors(depth: Tensor) -> Tensor:
    """``exp(depth)`` ``[B, N, 1, 1, 1]``, shifted by each image's (detached) maximum depth."""
    return torch.exp(depth - depth.detach().amax(dim=1, keepdim=True))[:, :, None, None, None]


def blend(color_sum: Tensor, alpha_sum: Tensor, weight_sum: Tensor, background: Tensor) -> Tensor:
    """Finish compositing from the per-pixel sums of ``w*alpha*o``, ``w*alpha`` and ``w``."""
    norm = weight_sum + scalar(EPS, weight_sum)
    return color_sum / norm + (scalar(1.0, alpha_sum) - alpha_sum / norm) * background


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
    _check_windows(windows, grid, cell, pad)
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


def _check_windows(windows: Tensor, grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int]):
    """Raise unless ``windows`` ``[B, H * W, C, k_h, k_w]`` fit the grid, cell and padding."""
    n, kh, kw = windows.shape[1], windows.shape[-2], windows.shape[-1]
    if (kh, kw) != (cell[0] + 2 * pad[0], cell[1] + 2 * pad[1]):
        raise ValueError(f"windows of {kh}x{kw} do not match cell {cell} padded by {pad}")
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} windows for a grid of {grid[0]}x{grid[1]} cells")


def _blocks(size: tuple[int, int], cell: tuple[int, int]):
    """The ``(y, x, rows, cols)`` blocks of a window that :func:`_fold` adds one at a time."""
    return [
        (y, x, min(cell[0], size[0] - y), min(cell[1], size[1] - x))
        for y in range(0, size[0], cell[0])
        for x in range(0, size[1], cell[1])
    ]


def _fold(windows: Tensor, grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int]) -> Tensor:
    """:func:`fold_windows`' sum, outside autograd: the windows added onto a padded canvas one
    ``c_h x c_w`` block of their pixels at a time (within a block no two windows share a pixel, so
    each block is one strided in-place sum, both sides viewed with one ``as_strided``)."""
    b, n, c, kh, kw = windows.shape
    (gh, gw), (ch, cw) = grid, cell
    rows, cols = (gh - 1) * ch + kh, (gw - 1) * cw + kw
    padded = windows.new_zeros(b, c, rows, cols)
    windows = windows.contiguous()
    ws, ps = windows.stride(), padded.stride()
    # window pixel (y, x) of cell (i, j) -> padded pixel (i c_h + y, j c_w + x)
    out_strides = (ps[0], ps[1], ch * ps[2], cw * ps[3], ps[2], ps[3])
    in_strides = (ws[0], ws[2], gw * ws[1], ws[1], ws[3], ws[4])
    for y, x, h, w in _blocks((kh, kw), cell):
        shape = (b, c, gh, gw, h, w)
        target = padded.as_strided(shape, out_strides, y * ps[2] + x * ps[3])
        target.add_(windows.as_strided(shape, in_strides, windows.storage_offset() + y * ws[3] + x * ws[4]))
    return padded[:, :, pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw]


def _unfold(grad: Tensor, windows_shape, grid, cell, pad) -> Tensor:
    """The gradient of :func:`_fold`: each window's pixels read back from the canvas' gradient
    (``[B, H, W, C, k_h, k_w]``, a view of a padded copy of ``grad``)."""
    b, n, c, kh, kw = windows_shape
    (gh, gw), (ch, cw) = grid, cell
    padded = grad.new_zeros(b, c, (gh - 1) * ch + kh, (gw - 1) * cw + kw)
    padded[:, :, pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw] = grad
    return _window_view(padded, grid, cell, (kh, kw)).permute(0, 4, 5, 1, 2, 3)


class _FoldWindows(torch.autograd.Function):
    """:func:`fold_windows` (:func:`_fold`); its gradient is the padded canvas's gradient read back
    through the same view."""

    @staticmethod
    def forward(ctx, windows, grid, cell, pad):
        ctx.shapes = (windows.shape, grid, cell, pad)
        return _fold(windows, grid, cell, pad)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        shape = ctx.shapes[0]
        return _unfold(grad, *ctx.shapes).reshape(shape), None, None, None


class _WeightedFold(torch.autograd.Function):
    """:func:`window_layer_sums` in one node: the layers ``[w alpha o, w alpha, w]`` written into one
    buffer and folded, and a hand-written gradient (issue 36: the composed version costs a
    concatenation, a zero-filled gradient per slice and a dozen full-window products more)."""

    @staticmethod
    def forward(ctx, drawn, depth, grid, cell, pad):
        drawn = drawn.contiguous()  # backward views its channels cell by cell
        b, n, c1, kh, kw = drawn.shape
        c = c1 - 1
        alpha = drawn[:, :, c:]
        e = _depth_factors(depth)
        layers = drawn.new_empty(b, n, c + 2, kh, kw)
        w = torch.mul(alpha, e, out=layers[:, :, c + 1 :])
        w_alpha = torch.mul(w, alpha, out=layers[:, :, c : c + 1])
        torch.mul(w_alpha, drawn[:, :, :c], out=layers[:, :, :c])
        ctx.save_for_backward(drawn, e, layers)
        ctx.shapes = (layers.shape, grid, cell, pad)
        return _fold(layers, grid, cell, pad)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        drawn, e, layers = ctx.saved_tensors
        b, n, c1, kh, kw = drawn.shape
        c = c1 - 1
        (gh, gw) = ctx.shapes[1]
        g = _unfold(grad, *ctx.shapes)  # [B, H, W, C + 2, k_h, k_w]
        o, alpha = (t.view(b, gh, gw, -1, kh, kw) for t in (drawn[:, :, :c], drawn[:, :, c:]))
        w_alpha, w = (t.view(b, gh, gw, 1, kh, kw) for t in (layers[:, :, c : c + 1], layers[:, :, c + 1 :]))
        e6 = e.view(b, gh, gw, 1, 1, 1)
        g_o, g_wa, g_w = g[:, :, :, :c], g[:, :, :, c : c + 1], g[:, :, :, c + 1 :]
        # d/d(w alpha) and d/dw of the loss through the three layers
        t = torch.addcmul(g_wa, o, g_o) if c == 1 else (o * g_o).sum(3, keepdim=True).add_(g_wa)
        d_w = torch.addcmul(g_w, alpha, t)
        grad_drawn = torch.empty_like(drawn)
        out = grad_drawn.view(b, gh, gw, c1, kh, kw)
        torch.mul(w_alpha, g_o, out=out[:, :, :, :c])
        torch.mul(w, t, out=out[:, :, :, c:]).addcmul_(d_w, e6)
        grad_depth = (alpha * d_w).sum((3, 4, 5)).mul_(e6.view(b, gh, gw)).view(b, n)
        return grad_drawn, grad_depth, None, None, None


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


def window_layer_sums(
    drawn: Tensor, depth: Tensor, grid: tuple[int, int], cell: tuple[int, int], pad: tuple[int, int]
) -> Tensor:
    """The canvas sums of :func:`depth_weighted_layers` of per-cell windows: ``[B, C + 2, H c_h, W c_w]``.

    Equal to ``fold_windows(depth_weighted_layers(drawn[:, :, :-1], drawn[:, :, -1:], depth), ...)``
    (to float rounding, values and gradients) in one autograd node with a hand-written gradient; under
    ``torch.compile`` it is that composition, which the compiler fuses itself.

    Args:
        drawn: ``[B, H * W, C + 1, c_h + 2 p_h, c_w + 2 p_w]``: each cell's appearance, then its
            opacity (times presence), laid out as :func:`fold_windows` describes.
        depth: ``[B, H * W]``.
    """
    _check_windows(drawn, grid, cell, pad)
    if torch.compiler.is_compiling():
        layers = depth_weighted_layers(drawn[:, :, :-1], drawn[:, :, -1:], depth)
        return _FoldWindows.apply(layers, tuple(grid), tuple(cell), tuple(pad))
    return _WeightedFold.apply(drawn, depth, tuple(grid), tuple(cell), tuple(pad))


def composite_drawn(
    drawn: Tensor,
    depth: Tensor,
    background: Tensor | float,
    grid: tuple[int, int],
    cell: tuple[int, int],
    pad: tuple[int, int],
) -> Tensor:
    """Composite one object per grid cell, each drawn only inside its cell's window.

    Cost grows with objects x window instead of objects x canvas.

    Args:
        drawn: ``[B, H * W, C + 1, c_h + 2 p_h, c_w + 2 p_w]`` appearance then opacity, as
            :func:`window_layer_sums` takes them.
        depth: ``[B, H * W]``.
        background: a float, or a tensor broadcastable to ``[B, C, H c_h, W c_w]``.

    Returns:
        ``[B, C, H * c_h, W * c_w]``.
    """
    c = drawn.shape[2] - 1
    sums = window_layer_sums(drawn, depth, grid, cell, pad)
    color, alpha, weight = sums.split((c, 1, sums.shape[1] - c - 1), 1)  # one node, not three slices
    return blend(color, alpha, weight, _as_tensor(background, drawn))


def composite_windows(
    appearance: Tensor,
    alpha: Tensor,
    depth: Tensor,
    background: Tensor | float,
    grid: tuple[int, int],
    cell: tuple[int, int],
    pad: tuple[int, int],
) -> Tensor:
    """:func:`composite_drawn` of appearance ``[B, H * W, C, h, w]`` and opacity ``[B, H * W, 1, h, w]``
    given apart."""
    return composite_drawn(torch.cat((appearance, alpha), 2), depth, background, grid, cell, pad)


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
    index = _window_pixels(tuple(grid), tuple(cell), (kh, kw), width, windows.device).expand(b, c, -1)
    values = windows.permute(0, 2, 1, 3, 4).reshape(b, c, -1)
    flat = values.new_zeros(b, c, height * width)
    total = flat.scatter_add(-1, index, values)
    largest = flat.scatter_reduce(-1, index, values, reduce="amax", include_self=True)
    excess = (total - largest).reshape(b, c, height, width)
    return excess[..., pad[0] : pad[0] + gh * ch, pad[1] : pad[1] + gw * cw]


@cached_constant
def _window_pixels(grid, cell, window, width, device) -> Tensor:
    """``[1, 1, N * kh * kw]``: the padded canvas' flat pixel under each pixel of each cell's window."""
    (gh, gw), (ch, cw), (kh, kw) = grid, cell, window
    arange = functools.partial(torch.arange, device=device)
    rows = (arange(gh) * ch)[:, None, None, None] + arange(kh)[:, None]
    cols = (arange(gw) * cw)[None, :, None, None] + arange(kw)
    return (rows * width + cols).reshape(1, 1, -1)


def _as_tensor(background: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(background, Tensor):
        return background
    return torch.tensor(float(background), dtype=like.dtype, device=like.device)
