"""Scenes resampled to a larger canvas: the same task at a higher resolution (saccading §4.1, Table 1 top).

Variational saccading classifies two-digit cluttered scenes at a resolution far above the 100x100 of
RAM/DRAM by upsampling them (the reference code's "synthetic upsample size"). :class:`Upscaled` does
this for any generator: each scene is resized with bilinear interpolation to ``size`` and every box of
its truth is scaled with it, so the task (and the truth) is unchanged while the image grows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .scenes import SceneWrapper, Target, check_size

__all__ = ["Upscaled"]


class Upscaled(SceneWrapper):
    """The scenes of another generator resized to ``size`` (bilinear), their boxes scaled to match.

    Every target entry whose name ends in ``boxes`` (``boxes``, ``patch_boxes``, ``clutter_boxes``, ...)
    is an xyxy pixel box and is scaled by the resize factors; ``points`` are scaled too; everything
    else (labels, counts, ``multi_label``, ``sum``, ...) is carried unchanged. Scene ``i`` is
    ``dataset[i]`` resized, so it is as deterministic as ``dataset``; nothing is cached, so a canvas of
    thousands of pixels costs memory only while its batch is in use.

    Args:
        dataset: a scene generator (``(image, target)`` pairs, images ``[C, h, w]``).
        size: side of the new canvas, or ``(H, W)``. It may be smaller than the scenes, too.

    Raises:
        ValueError: a bad size, or a dataset that is not map-style.
    """

    def __init__(self, dataset: Dataset, size: int | tuple[int, int]) -> None:
        super().__init__(dataset)
        self.image_size = check_size(size, "size")

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        _, image, target = self.scene(index)
        height, width = image.shape[-2:]
        new_h, new_w = self.image_size
        resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        sx, sy = new_w / width, new_h / height
        box_scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        out: Target = {}
        for key, value in target.items():
            if key.endswith("boxes"):
                value = value.to(torch.float32) * box_scale
            elif key == "points":
                value = value.to(torch.float32) * box_scale[:2]
            out[key] = value
        return resized.clamp(0.0, 1.0).contiguous(), out

    def __repr__(self) -> str:
        return f"Upscaled({self.dataset!r}, size={self.image_size})"
