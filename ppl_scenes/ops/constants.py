"""Constant tensors built once per shape, device and dtype instead of once per training step.

A training step of a grid model needs the same index tensors, cell origins and sampling offsets at
every call; building them anew costs a dozen small operations each (issue 36). :func:`cached_constant`
memoises a builder on its (hashable) arguments. The tensors it returns are shared between callers:
they never require gradients and must not be modified in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["cached_constant", "indices", "multiply", "scalar", "vector"]

F = TypeVar("F", bound=Callable)


def cached_constant(builder: F) -> F:
    """Memoise ``builder(*args)`` (positional, hashable arguments: sizes, devices, dtypes).

    The tensors are built outside any ``inference_mode`` and without gradients, so a constant first
    built while parsing can later enter a training step's autograd graph.
    """

    @functools.lru_cache(maxsize=512)
    def build(*args):
        with torch.inference_mode(False), torch.no_grad():
            return builder(*args)

    @functools.wraps(builder)
    def wrapper(*args):
        return build(*args)

    wrapper.cache_clear = build.cache_clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-dim tensor of ``like``'s dtype and device, built once.

    Arithmetic with a Python number wraps and converts it at every call (four extra operations on
    the CPU, forward and backward); a cached 0-dim tensor of the right dtype gives the same values
    with one operation.
    """
    return _scalar(float(value), like.dtype, like.device)


@cached_constant
def _scalar(value: float, dtype, device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def multiply(a, b):
    """``a * b`` for factors that are numbers or tensors (a Pyro site's ``scale`` times a weight): a
    number 1 beside a tensor is dropped, any other number meets the tensor as a :func:`scalar`."""
    if not torch.is_tensor(a):
        a, b = b, a
    if not torch.is_tensor(a) or torch.is_tensor(b):
        return a * b
    return a if b == 1 else a * scalar(b, a)


def vector(values, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` (numbers) as a 1-dim tensor on ``device`` (of ``dtype``, default torch's), built
    once: a config's prior location, say, that a step would otherwise copy from Python every time."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return _vector(tuple(float(v) for v in values), dtype, torch.device("cpu" if device is None else device))


@cached_constant
def _vector(values: tuple[float, ...], dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def indices(size: int, device) -> torch.Tensor:
    """``arange(size)`` (long) on ``device``, built once."""
    return _indices(int(size), torch.device(device))


@cached_constant
def _indices(size: int, device) -> torch.Tensor:
    return torch.arange(size, device=device)
