"""Reconstruction error of images: MSE and RMSE over pixels (SSDIR and SPAIR report these)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mse", "per_image_rmse", "rmse"]


def _pair(x: Tensor, x_hat: Tensor, min_rank: int = 1) -> tuple[Tensor, Tensor]:
    for name, t in (("x", x), ("x_hat", x_hat)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() < min_rank:
            raise ValueError(f"{name} must have rank >= {min_rank} (batch first), got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf values")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    # float64 so a mean over millions of pixels does not lose digits.
    return x.detach().to(torch.float64), x_hat.detach().to(x.device, torch.float64)


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error over every element (all images, channels and pixels).

    Args:
        x: images, e.g. ``[B, C, H, W]``.
        x_hat: reconstructions, same shape.

    Returns:
        ``mean((x - x_hat) ** 2)``.

    Raises:
        ValueError: on non-tensors, non-float or empty tensors, NaN/Inf, or different shapes.
    """
    a, b = _pair(x, x_hat)
    return float(((a - b) ** 2).mean())


def rmse(x: Tensor, x_hat: Tensor) -> float:
    """Root mean squared error over every element: ``sqrt(mse(x, x_hat))``.

    This is the RMSE over all pixels of the set, not the mean of per-image RMSEs (which is lower or
    equal, by Jensen); use :func:`per_image_rmse` for the latter.

    Args:
        x: images, e.g. ``[B, C, H, W]``.
        x_hat: reconstructions, same shape.

    Returns:
        The RMSE.

    Raises:
        ValueError: as :func:`mse`.
    """
    return math.sqrt(mse(x, x_hat))


def per_image_rmse(x: Tensor, x_hat: Tensor) -> Tensor:
    """RMSE of each image over its channels and pixels.

    Args:
        x: images ``[B, ...]`` (rank >= 2).
        x_hat: reconstructions, same shape.

    Returns:
        ``[B]`` tensor of RMSEs, in ``x``'s dtype and device.

    Raises:
        ValueError: as :func:`mse`, or on a rank below 2.
    """
    a, b = _pair(x, x_hat, min_rank=2)
    return ((a - b) ** 2).flatten(1).mean(dim=1).sqrt().to(x.dtype)
