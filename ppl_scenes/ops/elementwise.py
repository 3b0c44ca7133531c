"""Elementwise maths whose backward pass takes fewer operations than autograd's generic nodes (issue 36)."""

from __future__ import annotations

import torch
from torch import Tensor

from ppl_scenes.ops.constants import scalar

__all__ = ["clip"]


def clip(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    """``x.clamp(min, max)`` with the same values and gradients (``grad`` where ``min < x < max``,
    else 0, as clamp's), whose backward is one multiplication by a mask saved in the forward pass.

    ``clamp``'s own backward node rebuilds the comparisons with converted Python bounds (eight
    operations, thirteen with both bounds, on the CPU); a loss clamps probabilities and box sides at
    several sites per step. Without a graph to build it is plain ``clamp``.
    """
    if min is None and max is None:
        raise ValueError("clip needs min, max or both")
    if not (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling():
        return x.clamp(min, max)
    return _Clip.apply(x, min, max)


class _Clip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lo: float | None, hi: float | None) -> Tensor:
        inside = torch.empty_like(x)  # 1 strictly inside the bounds, else 0 (clamp's own rule)
        if lo is not None and hi is not None:
            torch.logical_and(torch.gt(x, scalar(lo, x)), torch.lt(x, scalar(hi, x)), out=inside)
        elif lo is not None:
            torch.gt(x, scalar(lo, x), out=inside)
        else:
            torch.lt(x, scalar(hi, x), out=inside)
        ctx.save_for_backward(inside)
        return x.clamp(lo, hi)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None
