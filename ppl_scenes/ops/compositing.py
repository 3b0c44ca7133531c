"""Differentiable compositing of many objects over a background.

Each object brings an appearance ``o`` (``C`` channels), an opacity ``alpha`` (already multiplied by
its presence) and a scalar depth ``d``. Per pixel, overlapping objects are mixed by the convex weights
``pi_k = alpha_k exp(d_k) / sum_j alpha_j exp(d_j)`` -- a differentiable stand-in for occlusion in
which higher depth wins (SPAIR §4.4) -- and the mixture is laid over the background:

    image = sum_k pi_k alpha_k o_k + (1 - sum_k pi_k alpha_k) * background.

Because the weights are convex, the foreground opacity never exceeds the largest alpha, so images
stay in [0, 1] whenever appearances and background do.

The three per-pixel sums are all that is needed, so objects rendered on the full canvas
(:func:`composite`) and objects rendered on patches that are summed onto the canvas
(:func:`~ppl_scenes.ops.composite_patches`) share :func:`blend`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ppl_scenes.ops.constants import scalar

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
    if depth.shape[1] == 0:  # no objects: nothing to shift
        return depth[:, :, None, None, None]
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
    layers = _layer_products(appearance, alpha, _depth_factors(depth))
    return blend(*(layer.sum(1) for layer in layers), _as_tensor(background, alpha))


def _layer_products(appearance: Tensor, alpha: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(w alpha o, w alpha, w)`` with ``w = alpha scale``, by autograd's own products."""
    w = alpha * scale
    return w * alpha * appearance, w * alpha, w


def depth_weighted_layers(drawn: Tensor, depth: Tensor) -> Tensor:
    """The three quantities compositing sums per pixel, stacked: ``[w alpha o, w alpha, w]`` on dim 2.

    ``w = alpha exp(depth)`` (:func:`depth_weights`), computed on objects already pasted onto their
    patches or canvases (weighting glimpses before pasting would be cheaper, but the ratio of
    resampled layers no longer fades objects out at their box edges). The result lies in memory in
    the order of ``drawn`` (channel-major patches give channel-major layers), written in three
    passes; its backward pass is written out by hand (autograd's generic nodes take several times
    the passes over these, the largest tensors of a SPAIR step).

    Args:
        drawn: ``[B, N, C + 1, h, w]``: appearance ``o``, then opacity ``alpha``; depth: ``[B, N]``.

    Returns:
        ``[B, N, C + 2, h, w]``.
    """
    scale = _depth_factors(depth)
    if torch.compiler.is_compiling():  # one graph for the compiler to fuse
        return torch.cat(_layer_products(*drawn.split((drawn.shape[2] - 1, 1), 2), scale), dim=2)
    if torch.is_grad_enabled() and (drawn.requires_grad or scale.requires_grad):
        return _DepthWeightedLayers.apply(drawn, scale)
    return _weighted_layers(drawn, scale)


def _weighted_layers(drawn: Tensor, scale: Tensor) -> Tensor:
    """:func:`depth_weighted_layers` of ``drawn`` and ``scale = exp(depth)`` ``[B, N, 1, 1, 1]``,
    each layer written into its slice of the result."""
    c = drawn.shape[2] - 1
    appearance, alpha = drawn.split((c, 1), 2)
    b, n, _, h, w = drawn.shape
    if drawn.transpose(1, 2).is_contiguous():  # channel-major, as paste_patches lays patches out
        out = drawn.new_empty(b, c + 2, n, h, w).transpose(1, 2)
    else:
        out = drawn.new_empty(b, n, c + 2, h, w)
    color, w_alpha, weight = out.split((c, 1, 1), 2)
    torch.mul(alpha, scale, out=weight)
    torch.mul(weight, alpha, out=w_alpha)
    torch.mul(w_alpha, appearance, out=color)
    return out


class _DepthWeightedLayers(torch.autograd.Function):
    """``L = [s a^2 o, s a^2, s a]`` with, for the incoming gradient ``g = [g_o, g_1, g_2]``:
    ``dL/do = s a^2 g_o``, ``t = sum_c o g_o + g_1``, ``dL/da = s (2 a t + g_2)`` and
    ``dL/ds = sum_pixels a (a t + g_2)``."""

    @staticmethod
    def forward(ctx, drawn: Tensor, scale: Tensor) -> Tensor:
        out = _weighted_layers(drawn, scale)
        ctx.save_for_backward(drawn, scale, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        drawn, scale, out = ctx.saved_tensors
        c = drawn.shape[2] - 1
        appearance, alpha = drawn.split((c, 1), 2)
        g_color, g_alpha, g_weight = grad.split((c, 1, 1), 2)
        d_drawn = torch.empty_like(drawn)
        d_appearance, d_alpha = d_drawn.split((c, 1), 2)
        torch.mul(out[:, :, c : c + 1], g_color, out=d_appearance)  # s a^2 g_o
        if c == 1:
            t = torch.addcmul(g_alpha, appearance, g_color)
        else:
            t = (appearance * g_color).sum(2, keepdim=True).add_(g_alpha)
        a_t = t.mul_(alpha)
        a_t_plus = a_t + g_weight  # a t + g_2
        d_scale = (alpha * a_t_plus).sum((3, 4), keepdim=True)
        torch.add(a_t, a_t_plus, out=d_alpha).mul_(scale)
        return d_drawn, d_scale


def _as_tensor(background: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(background, Tensor):
        return background
    return torch.tensor(float(background), dtype=like.dtype, device=like.device)
