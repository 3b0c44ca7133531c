"""Input validation shared by every public entry point.

Each check raises ``ValueError`` with a message that names the problem, so users never see a shape
error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor


def check_images(
    images: Tensor,
    *,
    name: str = "images",
    channels: int | tuple[int, ...] | None = None,
    min_size: int | tuple[int, int] | None = None,
    check_range: bool = True,
) -> Tensor:
    """Validate a batch of images ``[B, C, H, W]`` (float32, values in [0, 1], C = 1 or 3).

    Args:
        images: the batch to check.
        name: how the argument is called in error messages.
        channels: allowed channel counts (default 1 or 3).
        min_size: smallest allowed (H, W), e.g. one grid cell of a model.
        check_range: whether to require values in [0, 1].

    Returns:
        ``images`` unchanged, so the call can be used inline.

    Raises:
        ValueError: naming the first problem found (type, rank, empty batch, channels, dtype, size,
            NaN/Inf, range).
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have rank 4 [B, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    allowed = (1, 3) if channels is None else ((channels,) if isinstance(channels, int) else tuple(channels))
    if images.shape[1] not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} channels, got {images.shape[1]}")
    if images.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 with values in [0, 1], got dtype {images.dtype}")
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else min_size
        if images.shape[2] < mh or images.shape[3] < mw:
            raise ValueError(
                f"{name} of size {images.shape[2]}x{images.shape[3]} are too small: at least {mh}x{mw} needed"
            )
    if images.numel() == 0:
        return images
    lo, hi = torch.aminmax(images.detach())  # one pass and one read-back for both checks
    lo, hi = torch.stack((lo, hi)).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates into both; an Inf into one
        raise ValueError(f"{name} contain NaN or Inf values")
    if check_range and (lo < 0 or hi > 1):
        raise ValueError(f"{name} must have values in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    return images


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, raising ``ValueError`` unless it is a positive integer.

    Whole-number floats (``3.0``) and numpy integers are accepted; bools, NaN and infinities are not.
    """
    if not _is_real(value) or not math.isfinite(value) or value != int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int, or ValueError unless it is an integer >= ``minimum``.

    Strict, unlike :func:`check_positive_int`: a bool or a float (even ``3.0``) is not an integer here.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is a finite number > 0."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_non_negative(value: object, name: str, integer: bool = False) -> float | int:
    """Return ``value`` (as an int when ``integer``), raising ``ValueError`` unless it is finite and >= 0."""
    if not _is_real(value) or not math.isfinite(value) or value < 0 or (integer and value != int(value)):
        kind = "a non-negative integer" if integer else "a finite number >= 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def check_choice(value: object, choices, name: str):
    """Return ``value``, raising ``ValueError`` (listing the choices) unless it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_int_fields(obj: object, names, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless each attribute ``names`` of ``obj`` (a config) is an int >= ``minimum``.

    Strict: a bool or a float is not an int here (config fields have been converted to their types).
    """
    for name in names:
        check_int(getattr(obj, name), name, minimum)


def check_lr_schedule(value: object, name: str = "detector_lr_schedule") -> tuple[tuple[int, float], ...]:
    """A learning-rate schedule of ``(step, factor)`` pairs: steps >= 0 increasing, factors > 0.

    Lists (as a JSON config stores them) are accepted; the result is a tuple of tuples.
    """
    try:
        pairs = tuple((step, factor) for step, factor in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of (step, factor) pairs, got {value!r}") from None
    out = []
    for step, factor in pairs:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{name}: steps must be integers >= 0, got {step!r}")
        if not _is_real(factor) or not 0 < factor < float("inf"):
            raise ValueError(f"{name}: factors must be finite and positive, got {factor!r}")
        out.append((step, float(factor)))
    if any(a[0] >= b[0] for a, b in zip(out, out[1:])):
        raise ValueError(f"{name}: steps must increase, got {[s for s, _ in out]}")
    return tuple(out)


def lr_factor(schedule: tuple[tuple[int, float], ...], step: int) -> float:
    """The factor of ``schedule`` (see :func:`check_lr_schedule`) in force at ``step`` (1 before any)."""
    factor = 1.0
    for start, f in schedule:
        if step >= start:
            factor = f
    return factor
