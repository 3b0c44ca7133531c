"""Random crops of larger scenes, SPAIR §5.2: train on 48x48 crops of 84x84 images, test on full images."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .scenes import SceneWrapper, Target, check_fraction, check_int, check_size

__all__ = ["RandomCrops"]

# Tags the crop stream so it never coincides with the stream of the scene it crops.
_CROP_STREAM = 0x43524F50
_BOX_KEYS = ("boxes", "patch_boxes")


class RandomCrops(SceneWrapper):
    """Random ``size`` x ``size`` crops of the scenes of another generator, one crop per scene.

    Crop ``i`` is cut from ``dataset[i]`` at a position drawn uniformly (crop fully inside the scene)
    from a stream that depends only on ``(seed, i)``.

    Truth after cropping: each object's box is shifted into crop coordinates and clipped to the crop;
    an object is **kept only when at least ``min_visible`` (default half) of its box area lies inside
    the crop** — otherwise it is dropped from every per-object entry (``boxes``, ``labels``,
    ``patch_boxes``, ``digit_indices``, ...) and ``count`` is the number kept. Dropped objects may
    still leave some ink at the crop's border; that is the price of cropping and is not hidden.
    ``patch_boxes`` are clipped like ``boxes``, ``points`` are shifted; ``crop_box`` (xyxy in the full
    scene) is added, and other image-level entries (which describe the whole scene) are not carried.

    Args:
        dataset: a scene generator whose images are at least ``size`` on each side.
        size: crop side, or ``(H, W)``. Default 48 (SPAIR §5.2).
        seed: seed of the crop positions.
        min_visible: smallest fraction of a box's area that must be inside the crop to keep the object.

    Raises:
        ValueError: a bad parameter, or a crop larger than the dataset's images.
    """

    def __init__(
        self, dataset: Dataset, size: int | tuple[int, int] = 48, seed: int = 0, min_visible: float = 0.5
    ) -> None:
        super().__init__(dataset)
        self.crop_size = check_size(size, "size")
        self.seed = check_int(seed, "seed", minimum=0)
        self.min_visible = check_fraction(min_visible, "min_visible")
        full = getattr(dataset, "image_size", None)
        if full is not None and (self.crop_size[0] > full[0] or self.crop_size[1] > full[1]):
            raise ValueError(f"crop size {self.crop_size} is larger than the dataset's images {tuple(full)}")
        self.image_size = self.crop_size

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        i, image, target = self.scene(index)
        ch, cw = self.crop_size
        height, width = image.shape[-2:]
        if ch > height or cw > width:
            raise ValueError(f"crop size {self.crop_size} is larger than scene {i} of size {(height, width)}")
        rng = np.random.default_rng([self.seed, _CROP_STREAM, i])
        x0 = int(rng.integers(0, width - cw + 1))
        y0 = int(rng.integers(0, height - ch + 1))
        crop = image[..., y0 : y0 + ch, x0 : x0 + cw].contiguous()

        offset = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        limit = torch.tensor([cw, ch, cw, ch], dtype=torch.float32)
        boxes = target["boxes"].to(torch.float32) - offset
        clipped = torch.minimum(boxes.clamp(min=0), limit)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = (inside > 0) & (inside >= self.min_visible * area - 1e-6)

        out: Target = {}
        for key in self.object_keys:
            if key not in target:
                continue
            value = target[key]
            if key in _BOX_KEYS:
                value = torch.minimum((value.to(torch.float32) - offset).clamp(min=0), limit)
            elif key == "points":
                value = value - offset[:2]
            out[key] = value[keep]
        out["count"] = torch.tensor(int(keep.sum()), dtype=torch.int64)
        out["crop_box"] = torch.tensor([x0, y0, x0 + cw, y0 + ch], dtype=torch.float32)
        return crop, out

    def __repr__(self) -> str:
        return f"RandomCrops({self.dataset!r}, size={self.crop_size}, seed={self.seed})"
