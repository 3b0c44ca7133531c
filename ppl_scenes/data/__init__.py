"""Digit sources and seeded scene generators, one per paper experiment.

Every generator is a deterministic ``torch.utils.data.Dataset`` returning ``(image, target)``: a float32
``[C, H, W]`` image in [0, 1] and a dict with at least ``boxes`` (float32 ``[N, 4]`` absolute xyxy
pixels), ``labels`` (int64 ``[N]``) and ``count`` (int64 scalar). Use :func:`collate_scenes` as the
DataLoader ``collate_fn`` and :func:`make_dataset` to build one by name::

    from torch.utils.data import DataLoader
    from ppl_scenes.data import collate_scenes, make_dataset

    train = make_dataset("scattered", split="train", num_scenes=10_000, seed=0)
    loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate_scenes)

Real frames (no ground truth): :class:`AtariFrames` plays an Atari game through ``ale-py`` (the
optional extra ``atari``); it is not in :data:`DATASETS`. Your own images: ``make_dataset("images",
split, paths=[...])`` (:class:`ImageFolderScenes`: crops of a folder's images, no ground truth).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from .atari import AtariFrames
from .cluttered import ClutteredDigits
from .crops import RandomCrops
from .digits import DigitFallbackWarning, load_digits, resolve_data_root
from .images import ImageFolderScenes
from .mist import GaborNoise, MISTDigits
from .multiscale import MultiScaleDigits
from .scattered import LargeScatteredDigits, MultiMNIST, ScatteredDigits
from .scenes import PlacementError, SceneDataset, collate_scenes
from .shapes import SHAPE_NAMES, Shapes
from .upscaled import Upscaled

__all__ = [
    "DATASETS",
    "AtariFrames",
    "SHAPE_NAMES",
    "ClutteredDigits",
    "DigitFallbackWarning",
    "GaborNoise",
    "ImageFolderScenes",
    "LargeScatteredDigits",
    "MISTDigits",
    "MultiMNIST",
    "MultiScaleDigits",
    "PlacementError",
    "RandomCrops",
    "ScatteredDigits",
    "SceneDataset",
    "Shapes",
    "Upscaled",
    "collate_scenes",
    "load_digits",
    "make_dataset",
    "resolve_data_root",
]


def scattered_crops(
    split: str = "train",
    num_scenes: int = 10_000,
    seed: int = 0,
    *,
    size: int = 48,
    num_digits: int | tuple[int, int] = (6, 10),
    **kwargs: object,
) -> RandomCrops:
    """SPAIR §5.2 training data: ``size`` x ``size`` random crops of 84x84 scenes of 6–10 digits.

    Further keyword arguments go to :class:`LargeScatteredDigits`.
    """
    scenes = LargeScatteredDigits(num_scenes, split, seed, num_digits=num_digits, **kwargs)
    return RandomCrops(scenes, size=size, seed=seed)


def cluttered_large(
    split: str = "train",
    num_scenes: int = 10_000,
    seed: int = 0,
    *,
    size: int | tuple[int, int] = 1024,
    **kwargs: object,
) -> Upscaled:
    """Saccading §4.1 (Table 1 top): 100x100 two-digit cluttered scenes upsampled to ``size`` (1024).

    Further keyword arguments go to :class:`ClutteredDigits` (e.g. its ``canvas_size``, default 100).
    """
    return Upscaled(ClutteredDigits(num_scenes, split, seed, **kwargs), size)


def mist_easy(split: str = "train", **kwargs: object) -> MISTDigits:
    """MIST's MNIST easy scenes (:class:`MISTDigits` with ``mode="easy"``)."""
    return MISTDigits(split=split, mode="easy", **kwargs)


def mist_hard(split: str = "train", **kwargs: object) -> MISTDigits:
    """MIST's MNIST hard scenes (:class:`MISTDigits` with ``mode="hard"``)."""
    return MISTDigits(split=split, mode="hard", **kwargs)


#: Dataset builders by name; each is called as ``builder(split=..., **kwargs)``.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "scattered": ScatteredDigits,
    "large-scattered": LargeScatteredDigits,
    "scattered-crops": scattered_crops,
    "multimnist": MultiMNIST,
    "multiscale": MultiScaleDigits,
    "cluttered": ClutteredDigits,
    "cluttered-large": cluttered_large,
    "mist-easy": mist_easy,
    "mist-hard": mist_hard,
    "gabor": GaborNoise,
    "shapes": Shapes,
    "images": ImageFolderScenes,
}


def make_dataset(name: str, split: str = "train", **kwargs: object) -> Dataset:
    """Build the dataset registered as ``name`` (see :data:`DATASETS`) for ``split``.

    Keyword arguments go to the generator (``num_scenes``, ``seed``, ``root``, ``download``, sizes...).

    Raises:
        ValueError: ``name`` is not a registered dataset (the message lists the known names), or a
            parameter is bad.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split=split, **kwargs)
