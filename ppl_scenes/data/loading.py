"""Turning a dataset into training images: stacked in memory, or generated batch by batch.

:func:`materialize` stacks a dataset's images into one ``[N, C, H, W]`` tensor; a training set that
:func:`too_large` says would not fit is wrapped in :class:`LazyScenes` instead, whose batches are
generated on demand.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppl_scenes.checks import check_images

__all__ = ["MAX_IN_MEMORY_BYTES", "LazyScenes", "materialize", "too_large"]

#: Training sets larger than this (estimated from the first image) are not stacked into one tensor:
#: their batches are generated on demand (:class:`LazyScenes`). 2 GiB: e.g. 20,000 1024x1024 scenes
#: (80 GB as float32) would not fit in memory.
MAX_IN_MEMORY_BYTES = 2 * 2**30


class LazyScenes:
    """A dataset's images fetched batch by batch, for training sets too large to hold in memory.

    Indexing with a tensor of scene indices (or a slice) generates those scenes and returns their
    images stacked ``[B, C, H, W]`` (validated as training images); the targets of the last batch
    fetched are kept in :attr:`last_targets` for the model's supervision.
    """

    def __init__(self, data) -> None:
        self.data = data
        self.last_targets: list[Any] = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> Tensor:
        rows = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        items = [self.data[int(i)] for i in rows]
        self.last_targets = [item[1] if len(item) > 1 else None for item in items]
        try:
            images = torch.stack([item[0] for item in items])
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"training images differ in shape or are not tensors: {err}") from None
        return check_images(images, name="training images")


def materialize(data, desc: str = "scenes", progress: bool = True, with_targets: bool = False):
    """Images of a dataset of ``(image, target)`` pairs (or a tensor) as one ``[N, C, H, W]`` tensor.

    With ``with_targets`` the result is ``(images, targets)``, the targets a list in the images' order
    (a bare image tensor has none: the list is empty).
    """
    if isinstance(data, Tensor):
        images = check_images(data, name="training images")
        return (images, []) if with_targets else images
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ValueError(
            f"training data must be an image tensor or a dataset of (image, target) pairs, "
            f"got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError("the training dataset is empty")
    disable = not progress or len(data) < 2000
    items = [data[i] for i in tqdm(range(len(data)), desc=f"generating {desc}", leave=False, disable=disable)]
    images = [item[0] for item in items]
    if not all(isinstance(im, Tensor) for im in images):
        raise ValueError("training data must yield (image, target) pairs whose image is a tensor [C, H, W]")
    try:
        stacked = torch.stack(images)
    except RuntimeError as err:
        raise ValueError(f"training images differ in shape: {err}") from None
    stacked = check_images(stacked, name="training images")
    if not with_targets:
        return stacked
    return stacked, [item[1] if len(item) > 1 else None for item in items]


def too_large(data) -> bool:
    """Whether a dataset's images would take more than :data:`MAX_IN_MEMORY_BYTES` stacked."""
    if isinstance(data, Tensor) or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        return False
    if len(data) == 0:
        return False
    first = data[0]
    image = first[0] if isinstance(first, tuple | list) else first
    if not isinstance(image, Tensor):
        return False
    return image.numel() * image.element_size() * len(data) > MAX_IN_MEMORY_BYTES
