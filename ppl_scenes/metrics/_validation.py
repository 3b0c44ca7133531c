"""Input checks shared by the metric modules (private: the public names validate through these)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def check_threshold(value: object, name: str = "iou_threshold") -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it lies in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return float(value)


def check_boxes(boxes: object, name: str) -> Tensor:
    """Validate one image's boxes ``[N, 4]`` xyxy and return them as a float64 CPU tensor.

    An empty tensor of shape ``[0]`` is accepted as "no boxes", since that is what ``torch.tensor([])``
    gives.
    """
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, 4], got {type(boxes).__name__}")
    if boxes.numel() == 0 and boxes.dim() == 1:
        return torch.zeros(0, 4, dtype=torch.float64)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.is_complex() or not (boxes.is_floating_point() or boxes.dtype in _INT_DTYPES):
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {boxes.dtype}")
    boxes = boxes.detach().to("cpu", torch.float64)
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{name} contain NaN or Inf values")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1")
    return boxes


def check_vector(values: object, name: str, length: int | None = None) -> Tensor:
    """Validate a per-item 1-D tensor (scores, labels) and return it on the CPU."""
    if not isinstance(values, Tensor):
        raise ValueError(f"{name} must be a 1-D torch.Tensor, got {type(values).__name__}")
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(values.shape)}")
    if length is not None and values.shape[0] != length:
        raise ValueError(f"{name} has {values.shape[0]} entries but the matching boxes have {length}")
    values = values.detach().cpu()
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or Inf values")
    return values


def check_list(values: object, name: str) -> list:
    """Validate a per-image list (non-empty, a list or tuple, not a bare tensor)."""
    if isinstance(values, Tensor) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list with one tensor per image, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: at least one image is needed")
    return list(values)


def check_same_length(**lists: Sequence) -> int:
    """Raise ``ValueError`` unless all named lists have the same length; return that length."""
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"per-image lists must have the same length, got {desc}")
    return next(iter(lengths.values()))


def as_1d_array(values: object, name: str, *, integer: bool = False) -> np.ndarray:
    """Convert a tensor / array / sequence to a non-empty, finite 1-D numpy array.

    With ``integer=True`` the values must be whole numbers (e.g. counts or labels stored as floats)
    and are returned as int64.
    """
    if isinstance(values, Tensor):
        arr = values.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a 1-D sequence of numbers: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or Inf values")
    if integer:
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold whole numbers")
        arr = arr.astype(np.int64)
    return arr


def check_pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless two 1-D arrays have the same length."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {a.shape[0]} vs {b.shape[0]}")


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
