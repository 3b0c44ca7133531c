"""What every scene generator shares: the Dataset contract, parameter checks, placement and compositing.

Contract of every generator (a :class:`SceneDataset`):

* ``dataset[i]`` returns ``(image, target)``: ``image`` float32 ``[C, H, W]`` in [0, 1]; ``target`` a dict
  with ``"boxes"`` float32 ``[N, 4]`` (absolute pixels, xyxy, pixel ``i`` covers ``[i, i + 1)``),
  ``"labels"`` int64 ``[N]``, ``"count"`` int64 scalar, plus generator-specific keys.
* Item ``i`` is a pure function of ``(seed, split, i)`` and the parameters: its random stream is
  ``numpy.random.default_rng([seed, split_id, generator_id, i])``, so access order, workers and
  restarts do not matter, and two generators given the same seed do not draw the same digits.
* Truth boxes are the tight boxes of each object's ink (pixels above :data:`INK_THRESHOLD`);
  ``"patch_boxes"`` are the full pasted squares. Digits are composited with a pixel-wise max.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppl_scenes.checks import check_int

from .digits import INK_THRESHOLD, SPLITS, DigitBank, digit_bank

__all__ = [
    "image_targets",
    "INK_THRESHOLD",
    "DigitSceneDataset",
    "PlacementError",
    "SceneDataset",
    "SceneWrapper",
    "check_scene_index",
    "collate_scenes",
]

SPLIT_IDS = {"train": 0, "test": 1, "val": 2}

Target = dict[str, Tensor]


class PlacementError(ValueError):
    """The objects of a scene could not be placed under the generator's rules (too many for the canvas)."""


# --------------------------------------------------------------------------------------------- checks


def check_range(value: object, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int or an inclusive ``(lo, hi)`` pair as ``(lo, hi)``, with ``minimum <= lo <= hi``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        lo = hi = check_int(value, name, minimum)
        return lo, hi
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        lo = check_int(value[0], f"{name}[0]", minimum)
        hi = check_int(value[1], f"{name}[1]", minimum)
        if lo > hi:
            raise ValueError(
                f"{name} must be an inclusive range (lo, hi) with lo <= hi, got {tuple(value)!r}"
            )
        return lo, hi
    raise ValueError(f"{name} must be an int or an inclusive (lo, hi) pair of ints, got {value!r}")


def check_size(value: object, name: str) -> tuple[int, int]:
    """An int side or an ``(H, W)`` pair as ``(H, W)``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (H, W) pair, got {value!r}")
        return check_int(value[0], f"{name}[0]"), check_int(value[1], f"{name}[1]")
    side = check_int(value, name)
    return side, side


def check_fits(side: int, image_size: tuple[int, int], name: str) -> None:
    """ValueError unless a square of ``side`` pixels fits on a canvas of ``image_size`` (H, W)."""
    if side > min(image_size):
        raise ValueError(f"{name} {side} does not fit on a canvas of {image_size[0]}x{image_size[1]}")


def check_sides(
    min_size: object, max_size: object, image_size: tuple[int, int], minimum: int
) -> tuple[int, int]:
    """``(min_size, max_size)``, a range of object sides of at least ``minimum`` that fits the canvas."""
    lo = check_int(min_size, "min_size", minimum=minimum)
    hi = check_int(max_size, "max_size", minimum=minimum)
    if lo > hi:
        raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
    check_fits(hi, image_size, "max_size")
    return lo, hi


def check_fraction(value: object, name: str) -> float:
    """``value`` as a float in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_split(split: object) -> str:
    """``split`` if it is ``"train"``, ``"val"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return str(split)


# -------------------------------------------------------------------------------------- base classes


def check_scene_index(index: int, num_scenes: int) -> int:
    """``index`` as a scene number in ``[0, num_scenes)`` (negative ones count from the end).

    Raises:
        TypeError: not an integer; IndexError: out of range.
    """
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise TypeError(f"scene index must be an integer, got {type(index).__name__}")
    i = int(index)
    if i < 0:
        i += num_scenes
    if not 0 <= i < num_scenes:
        raise IndexError(f"scene index {index} out of range for a dataset of {num_scenes} scenes")
    return i


class SceneDataset(Dataset[tuple[Tensor, Target]]):
    """Base of every generator: length, index checks and the per-item random stream.

    Subclasses implement ``_generate(rng)``. ``object_keys`` names the target entries with one row per
    object (what :class:`~ppl_scenes.data.RandomCrops` filters when it drops objects); ``channels`` is
    C of the images and ``image_size`` their ``(H, W)``.
    """

    object_keys: ClassVar[tuple[str, ...]] = ("boxes", "labels", "patch_boxes")
    channels: ClassVar[int] = 1

    def __init__(self, num_scenes: int, split: str, seed: int, image_size: tuple[int, int]) -> None:
        self.num_scenes = check_int(num_scenes, "num_scenes")
        self.split = check_split(split)
        self.seed = check_int(seed, "seed", minimum=0)
        self.image_size = image_size
        self._stream = zlib.crc32(type(self).__name__.encode())

    def __len__(self) -> int:
        return self.num_scenes

    def _check_index(self, index: int) -> int:
        return check_scene_index(index, self.num_scenes)

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of scene ``index``: a pure function of (seed, split, generator, index)."""
        return np.random.default_rng(
            [self.seed, SPLIT_IDS[self.split], self._stream, self._check_index(index)]
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        return self._generate(self.rng(index))

    def _generate(self, rng: np.random.Generator) -> tuple[Tensor, Target]:
        raise NotImplementedError

    def __repr__(self) -> str:
        h, w = self.image_size
        name = type(self).__name__
        return f"{name}(num_scenes={self.num_scenes}, split={self.split!r}, seed={self.seed}, {h}x{w})"


class DigitSceneDataset(SceneDataset):
    """A generator pasting digits from one split's :class:`~ppl_scenes.data.digits.DigitBank`.

    The bank is loaded (and the fallback warning given) at construction, so a missing digit source
    shows up at once; it is not pickled, so DataLoader workers reload it from their process cache.
    Targets made by :meth:`digit_target` carry each digit's index in the bank, ``digit_indices``.
    """

    object_keys: ClassVar[tuple[str, ...]] = (*SceneDataset.object_keys, "digit_indices")

    def __init__(
        self,
        num_scenes: int,
        split: str,
        seed: int,
        image_size: tuple[int, int],
        digit_side: int,
        root: str | None,
        download: bool,
    ) -> None:
        super().__init__(num_scenes, split, seed, image_size)
        self.root = root
        self.download = bool(download)
        self.digit_side = check_int(digit_side, "digit_size")
        self._bank: DigitBank | None = None
        _ = self.bank

    @property
    def bank(self) -> DigitBank:
        """The digits of this dataset's split, at ``digit_side`` pixels."""
        if self._bank is None:
            self._bank = digit_bank(self.split, self.digit_side, self.root, self.download)
        return self._bank

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bank"] = None
        return state

    def draw_digits(self, rng: np.random.Generator, n: int, **rule: float) -> tuple[np.ndarray, np.ndarray]:
        """``n`` digit instances drawn uniformly from the bank, and their squares' top-left corners.

        The corners ``[n, 2]`` (x, y) are placed by :func:`place_squares` under ``rule`` (its
        ``max_overlap`` and ``min_distance``); the instances are drawn first.
        """
        idx = rng.integers(0, len(self.bank), size=n)
        xy = place_squares(rng, np.full(n, self.digit_side), self.image_size, what="digits", **rule)
        return idx, xy

    def paste_digits(self, canvas: np.ndarray, idx: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """``canvas`` with the bank's digits ``idx`` pasted at top-left corners ``xy`` (pixel-wise max)."""
        for k in range(len(idx)):
            paste_max(canvas, self.bank.images[idx[k]], int(xy[k, 0]), int(xy[k, 1]))
        return canvas

    def digit_target(
        self,
        idx: np.ndarray,
        xy: np.ndarray,
        ink: np.ndarray | None = None,
        sides: np.ndarray | int | None = None,
        **extras: np.ndarray | Tensor | float,
    ) -> Target:
        """The target of the bank's digits ``idx`` pasted at top-left corners ``xy``.

        ``boxes`` are their ink boxes (``ink``, relative to a corner; by default the bank's), ``labels``
        their classes, ``patch_boxes`` their squares (of ``sides``; by default the bank's side), and
        ``digit_indices`` their indices in the bank; ``extras`` follow (see :func:`make_target`).
        """
        ink = self.bank.ink[idx] if ink is None else ink
        return make_target(
            np.concatenate([xy, xy], axis=1) + ink,
            self.bank.labels[idx],
            patch_boxes=square_boxes(xy, self.digit_side if sides is None else sides),
            digit_indices=np.asarray(idx, dtype=np.int64),
            **extras,
        )


# ----------------------------------------------------------------------------- placement, compositing


class SceneWrapper(Dataset[tuple[Tensor, Target]]):
    """Base of the datasets that transform another generator's scenes one by one (crops, upscaling).

    Keeps the wrapped ``dataset`` and its ``object_keys`` and ``split``; its length is the dataset's;
    :meth:`scene` fetches the wrapped scene of a checked index.

    Raises:
        ValueError: when ``dataset`` is not a map-style dataset.
    """

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError(f"dataset must be a map-style Dataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.object_keys: tuple[str, ...] = getattr(dataset, "object_keys", SceneDataset.object_keys)
        self.split: str | None = getattr(dataset, "split", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def scene(self, index: int) -> tuple[int, Tensor, Target]:
        """``(i, image, target)``: the wrapped dataset's scene ``i`` for a checked ``index``."""
        i = check_scene_index(index, len(self))
        image, target = self.dataset[i]
        return i, image, target


def draw_count(rng: np.random.Generator, count_range: tuple[int, int]) -> int:
    """A count drawn uniformly from the inclusive range."""
    lo, hi = count_range
    return lo if lo == hi else int(rng.integers(lo, hi + 1))


def place_squares(
    rng: np.random.Generator,
    sides: np.ndarray,
    image_size: tuple[int, int],
    max_overlap: float = 1.0,
    min_distance: float = 0.0,
    *,
    tries: int = 300,
    restarts: int = 50,
    what: str = "objects",
) -> np.ndarray:
    """Top-left corners ``[n, 2]`` (x, y) of squares of the given sides, uniform inside the canvas.

    Rejection sampling, one square after another: a position is accepted when its square overlaps every
    square placed before by at most ``max_overlap`` of the smaller square's area and when the top-left
    corners are at least ``min_distance`` apart (dart throwing, i.e. Poisson-disk sampling). When a
    square finds no place in ``tries`` candidates the scene starts over, at most ``restarts`` times:
    early squares can block every place for a later one (two disjoint 28-pixel digits on a 60-pixel
    canvas fail half the time after a central first digit), and a fresh start is cheaper than
    searching harder.

    Raises:
        PlacementError: a square is larger than the canvas, or the rules could not be met (too many or
            too large objects for the canvas).
    """
    sides = np.asarray(sides, dtype=np.int64)
    n = len(sides)
    height, width = image_size
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if sides.max() > min(height, width):
        raise PlacementError(f"{what} of side {int(sides.max())} do not fit on a {height}x{width} canvas")
    # Scenes hold a handful of objects, so plain Python arithmetic on pre-drawn uniforms is several
    # times faster here than numpy calls, whose fixed cost dominates at this size.
    side_list = sides.tolist()
    check_overlap = max_overlap < 1.0
    min_d2 = float(min_distance) ** 2
    uniforms: list[float] = []
    cursor = 0
    for _attempt in range(restarts):
        placed: list[tuple[int, int, int]] = []
        for s in side_list:
            span_x, span_y = width - s + 1, height - s + 1
            for _try in range(tries):
                if cursor + 2 > len(uniforms):
                    uniforms, cursor = rng.random(64).tolist(), 0
                x, y = int(uniforms[cursor] * span_x), int(uniforms[cursor + 1] * span_y)
                cursor += 2
                ok = True
                for px, py, ps in placed:
                    if check_overlap:
                        ix = min(x + s, px + ps) - max(x, px)
                        iy = min(y + s, py + ps) - max(y, py)
                        if ix > 0 and iy > 0 and ix * iy > max_overlap * min(s, ps) ** 2 + 1e-9:
                            ok = False
                            break
                    if min_d2 > 0.0 and (x - px) ** 2 + (y - py) ** 2 < min_d2:
                        ok = False
                        break
                if ok:
                    placed.append((x, y, s))
                    break
            else:
                break
        if len(placed) == n:
            return np.array([(x, y) for x, y, _ in placed], dtype=np.int64)
    rule = []
    if check_overlap:
        rule.append(f"overlap <= {max_overlap:g} of a patch")
    if min_d2 > 0.0:
        rule.append(f"distance >= {min_distance:g} px")
    raise PlacementError(
        f"could not place {n} {what} of side {int(sides.min())}-{int(sides.max())} on a {height}x{width} "
        f"canvas with {' and '.join(rule)} after {restarts} attempts; use fewer or smaller {what}, a larger "
        "canvas or a looser rule"
    )


def clamped_corners(
    cx: np.ndarray, cy: np.ndarray, sides: np.ndarray | int, image_size: tuple[int, int]
) -> np.ndarray:
    """Top-left corners ``[n, 2]`` (x, y) of squares of ``sides`` centred at ``(cx, cy)``.

    Each corner is rounded to a pixel, then shifted just enough to keep its square inside the canvas.
    """
    height, width = image_size
    x = np.clip(np.round(cx - sides / 2), 0, width - sides)
    y = np.clip(np.round(cy - sides / 2), 0, height - sides)
    return np.stack([x, y], axis=1).astype(np.int64)


def paste_max(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Composite ``patch`` onto ``canvas[..., y:, x:]`` in place with a pixel-wise max (fully inside)."""
    h, w = patch.shape[-2:]
    region = canvas[..., y : y + h, x : x + w]
    np.maximum(region, patch, out=region)


def to_image(canvas: np.ndarray) -> Tensor:
    """A uint8 ``[H, W]`` or float ``[C, H, W]`` canvas as a float32 ``[C, H, W]`` tensor in [0, 1]."""
    if canvas.dtype == np.uint8:
        return torch.from_numpy(canvas).to(torch.float32).div_(255.0).unsqueeze(0)
    image = torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.float32))
    return image.unsqueeze(0) if image.dim() == 2 else image


def make_target(boxes: np.ndarray, labels: np.ndarray, **extras: np.ndarray | Tensor | float) -> Target:
    """A target dict: float32 ``boxes [N, 4]``, int64 ``labels [N]``, int64 scalar ``count``, extras.

    Integer numpy extras become int64 tensors and floating ones float32.
    """
    target: Target = {
        "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
        "count": torch.tensor(len(labels), dtype=torch.int64),
    }
    for key, value in extras.items():
        if isinstance(value, Tensor):
            target[key] = value
            continue
        array = np.asarray(value)
        dtype = np.int64 if np.issubdtype(array.dtype, np.integer) else np.float32
        target[key] = torch.as_tensor(array.astype(dtype, copy=False))
    return target


def square_boxes(xy: np.ndarray, sides: np.ndarray | int) -> np.ndarray:
    """float32 xyxy boxes ``[n, 4]`` of squares with top-left corners ``xy`` and the given sides."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    s = np.asarray(sides, dtype=np.float32).reshape(-1, 1)
    return np.concatenate([xy, xy + s], axis=1)


def collate_scenes(batch: Sequence[tuple[Tensor, Target]]) -> tuple[Tensor, list[Target]]:
    """DataLoader ``collate_fn``: stack the images ``[B, C, H, W]`` and keep the targets as a list.

    Raises:
        ValueError: the batch is empty or its images differ in shape.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images = [item[0] for item in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"cannot stack images of different shapes {sorted(shapes)}")
    return torch.stack(images), [item[1] for item in batch]


def image_targets(task: str, targets: list[dict[str, Any]]) -> Tensor:
    """The image-level truth of ``task`` for each scene: ``multi_label`` (identify) or ``sum``.

    Raises:
        ValueError: when a target lacks the key (e.g. a bare image tensor was given for training).
    """
    key = "multi_label" if task == "identify" else "sum"
    if not targets or any(not isinstance(t, dict) or key not in t for t in targets):
        raise ValueError(
            f"the {task!r} task trains on image labels: give a dataset of (image, target) pairs whose "
            f"targets hold {key!r} (e.g. ClutteredDigits)"
        )
    return torch.stack([torch.as_tensor(t[key]) for t in targets])
