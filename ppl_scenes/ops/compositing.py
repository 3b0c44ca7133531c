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


def depth_weighted_layers(appearance: Tensor, alpha: Tensor, depth: Tensor) -> Tensor:
    """The three quantities compositing sums per pixel, stacked: ``[w alpha o, w alpha, w]`` on dim 2.

    ``w = alpha exp(depth)`` (:func:`depth_weights`), computed on objects already pasted onto their
    patches or canvases (weighting glimpses before pasting would be cheaper, but the ratio of
    resampled layers no longer fades objects out at their box edges).

    Args:
        appearance: ``[B, N, C, h, w]``; alpha: ``[B, N, 1, h, w]``; depth: ``[B, N]``.

    Returns:
        ``[B, N, C + 2, h, w]``.
    """
    w = depth_weights(alpha, depth)
    return torch.cat((w * alpha * appearance, w * alpha, w), dim=2)


def _as_tensor(background: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(background, Tensor):
        return background
    return torch.tensor(float(background), dtype=like.dtype, device=like.device)
