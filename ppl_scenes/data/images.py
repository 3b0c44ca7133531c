"""Your own images: find them, read them lazily, and train on random crops of them.

Paths. A path is a folder (searched recursively), a glob pattern (``**`` allowed) or a single file.
Images are PNG, JPEG, BMP, GIF, TIFF (8- or 16-bit) and WebP, decoded by Pillow (the first frame of a
multi-frame file: an animated GIF or a TIFF stack), and NumPy ``.npy`` / ``.npz`` arrays. Inside a
folder, files with other extensions (``notes.txt``, ``.DS_Store``) are ignored with one summary
warning; a file named explicitly must be an image. Everything is sorted, so the same paths always give
the same images in the same order.

Arrays. A ``.npy`` file holds one image -- ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` -- or a stack of
them -- ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``. A 3-D array whose last axis has at most 4
entries is ``[H, W, C]``, else one whose first axis has at most 4 is ``[C, H, W]``, else it is a stack
of ``N`` gray images (so put a stack's axis first, and save a stack of at most four gray images as
``[N, H, W, 1]``: ``[3, H, W]`` reads as one RGB image). Each image of a stack is its own entry, named
``file.npy::i``. A ``.npz`` file holds one such array per key: its entries are ``file.npz::key`` (one
image) or ``file.npz::key[i]`` (a stack). :func:`read_image` takes these names too.

Values. 8-bit images are divided by 255, 16-bit ones (and Pillow's 32-bit integer mode, which 16-bit
files open in) by 65535; other integer arrays by 255 when their values fit in 8 bits, else by 65535
(larger values are refused); float arrays must already lie in [0, 1]. Channels: gray (with alpha:
the alpha is dropped) or colour (RGB; RGBA, palette and CMYK images are converted). With
``channels=None`` images keep their own; ``channels=1`` converts colour to luminance (ITU-R 601
weights), ``channels=3`` repeats gray. :class:`ImageFolderScenes` takes 3 when any image is in colour.

Laziness. :func:`find_images` reads only headers (Pillow's ``open``, NumPy's array header): the file
list with each image's size and channels. Pixels are decoded when an item is fetched, one file at a
time, through a small cache of recently decoded images (``cache_mb``), so a folder larger than memory
trains.
"""

from __future__ import annotations

import glob
import math
import os
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppl_scenes.checks import check_int

from .scenes import Target, check_fraction, check_scene_index, check_size

__all__ = [
    "ARRAY_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "FoundImages",
    "ImageEntry",
    "ImageFolderScenes",
    "ImageInputError",
    "ObjectSizeError",
    "UnreadableImageError",
    "check_object_size",
    "default_crop",
    "find_images",
    "read_image",
]

#: Extensions decoded by Pillow (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: NumPy array files (see the module docstring for how they map to images).
ARRAY_EXTENSIONS = (".npy", ".npz")
_ALL_EXTENSIONS = IMAGE_EXTENSIONS + ARRAY_EXTENSIONS
_LOOKED_FOR = ", ".join(_ALL_EXTENSIONS)
_GLOB_CHARS = "*?["
_SEP = "::"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Pillow modes whose pixels are gray (alpha, where there is one, is dropped).
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_CROP_STREAM = 0x494D4753  # tags this generator's random streams
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
FLIPS = ("none", "horizontal", "both")


class ObjectSizeError(ValueError):
    """An object size that is not a positive number, or larger than the images."""


def check_object_size(object_size: object) -> float:
    """``object_size`` as a positive float; :class:`ObjectSizeError` otherwise."""
    if (
        isinstance(object_size, bool)
        or not isinstance(object_size, int | float)
        or not math.isfinite(object_size)
        or object_size <= 0
    ):
        raise ObjectSizeError(f"object_size must be a positive number of pixels, got {object_size!r}")
    return float(object_size)


def default_crop(object_size: float) -> int:
    """The default training crop side: four object sides, rounded up to a multiple of 8, at least 32.

    (14 -> 56, 20 -> 80: MIST's 80-pixel scenes of 20-pixel digits.) Datasets reduce it to the
    smallest image.
    """
    s = check_object_size(object_size)
    return max(32, 8 * math.ceil(4 * s / 8))


class ImageInputError(ValueError):
    """A path, file or image that cannot be used (missing, no images, wrong size, channels, ...)."""


class UnreadableImageError(ImageInputError):
    """A file that is not a decodable image (``skip_bad=True`` skips such files with a warning)."""


# ------------------------------------------------------------------------------------------ entries


@dataclass(frozen=True)
class ImageEntry:
    """One image found on disk, known from its header only.

    Attributes:
        name: how the image is named: the path as found (folder given + relative path), with
            ``::i``, ``::key`` or ``::key[i]`` for an image inside an array file.
        path: the file holding it.
        size: ``(H, W)`` in pixels.
        channels: its own channel count after dropping alpha (1 or 3).
        key: the ``.npz`` key holding it, or None.
        index: its index in a stacked array, or None.
        layout: how the array's axes read (``"hw"``, ``"hwc"``, ``"chw"``), None for Pillow images.
    """

    name: str
    path: str
    size: tuple[int, int]
    channels: int
    key: str | None = None
    index: int | None = None
    layout: str | None = None

    @property
    def num_pixels(self) -> int:
        """``H * W``."""
        return self.size[0] * self.size[1]


@dataclass
class FoundImages:
    """What :func:`find_images` found: the images, and the files it ignored or skipped.

    Iterating or indexing it gives the :class:`ImageEntry` objects.

    Attributes:
        entries: the images, in a deterministic order.
        ignored: files inside the folders that are not images by their extension (not errors).
        skipped: ``(path, reason)`` of the files that failed to decode with ``skip_bad=True``.
    """

    entries: list[ImageEntry]
    ignored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ImageEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> ImageEntry:
        return self.entries[index]

    @property
    def names(self) -> list[str]:
        """The entries' names."""
        return [e.name for e in self.entries]


def _as_path_list(paths: object, name: str = "paths") -> list[str]:
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    if isinstance(paths, Sequence) and paths and all(isinstance(p, str | os.PathLike) for p in paths):
        return [os.fspath(p) for p in paths]
    raise ImageInputError(f"{name} must be a path or a non-empty list of paths, got {paths!r}")


def _has_image_extension(path: str) -> bool:
    return path.lower().endswith(_ALL_EXTENSIONS)


def _walk(folder: str) -> tuple[list[str], list[str]]:
    """Image files and other files under ``folder`` (recursively, sorted, hidden folders included)."""
    images, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            (images if _has_image_extension(f) else others).append(full)
    return sorted(images), sorted(others)


def find_images(paths: object, skip_bad: bool = False, warn: bool = True) -> FoundImages:
    """The images named by ``paths`` -- folders (recursive), glob patterns or files -- from their headers.

    Args:
        paths: one path or a list of them. Within a folder or a glob, files are sorted by path; the
            arguments keep their order; an image named twice is kept once.
        skip_bad: skip files that fail to decode (with one warning and a count in ``skipped``)
            instead of raising.
        warn: warn once about the ignored non-image files and the skipped bad ones.

    Returns:
        a :class:`FoundImages`.

    Raises:
        ImageInputError: a path that does not exist, a glob that matches nothing, a folder with no
            images (naming the extensions looked for), a file named explicitly that is not an image.
        UnreadableImageError: a file that is not a decodable image (unless ``skip_bad``).
    """
    files: list[str] = []
    ignored: list[str] = []
    named: list[ImageEntry] = []  # single images of array files, named ``file.npy::3``
    for p in _as_path_list(paths):
        if os.path.isdir(p):
            images, others = _walk(p)
            if not images:
                raise ImageInputError(f"folder {p!r} holds no images (looked for {_LOOKED_FOR})")
            files += images
            ignored += others
        elif os.path.isfile(p):
            if not _has_image_extension(p):
                raise UnreadableImageError(f"{p!r} is not an image (looked for {_LOOKED_FOR})")
            files.append(p)
        elif any(c in p for c in _GLOB_CHARS):
            matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
            if not matches:
                raise ImageInputError(f"glob {p!r} matches no file")
            images = [m for m in matches if _has_image_extension(m)]
            if not images:
                raise ImageInputError(f"glob {p!r} matches no images (looked for {_LOOKED_FOR})")
            files += images
            ignored += [m for m in matches if not _has_image_extension(m)]
        elif _SEP in p and os.path.isfile(p.partition(_SEP)[0]):
            named.append(_entry_for(p))
        else:
            raise ImageInputError(f"path {p!r} does not exist")
    entries: list[ImageEntry] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries += _read_header(f)
        except UnreadableImageError as err:
            if not skip_bad:
                raise
            skipped.append((f, str(err)))
    known = {e.name for e in entries}
    entries += [e for e in named if e.name not in known and not known.add(e.name)]
    if warn and ignored:
        example = ", ".join(os.path.basename(f) for f in ignored[:3])
        warnings.warn(f"ignored {len(ignored)} files that are not images (e.g. {example})", stacklevel=2)
    if warn and skipped:
        warnings.warn(
            f"skipped {len(skipped)} files that are not decodable images (first: {skipped[0][1]})",
            stacklevel=2,
        )
    if not entries:
        raise ImageInputError(f"no decodable images in {paths!r} (looked for {_LOOKED_FOR})")
    return FoundImages(entries, ignored, skipped)


# ------------------------------------------------------------------------------------------ headers


def _pil_channels(mode: str, image) -> int:
    if mode in _GRAY_MODES:
        return 1
    if mode in ("P", "PA"):
        palette = getattr(image, "palette", None)
        return 1 if palette is not None and getattr(palette, "mode", "RGB") == "L" else 3
    return 3


def _read_header(path: str) -> list[ImageEntry]:
    """The entries of one file, from its header only."""
    lower = path.lower()
    if lower.endswith(".npy"):
        return _npy_entries(path)
    if lower.endswith(".npz"):
        return _npz_entries(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = (int(im.height), int(im.width))
            channels = _pil_channels(im.mode, im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UnreadableImageError(f"{path!r} is not a decodable image ({_short(err)})") from None
    if min(size) < 1:
        raise UnreadableImageError(f"{path!r} is an empty image ({size[0]}x{size[1]})")
    return [ImageEntry(path, path, size, channels)]


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]


def _layout(shape: tuple[int, ...], name: str) -> tuple[int | None, str, tuple[int, int], int]:
    """``(stack length or None, per-image layout, (H, W), channels)`` of an array's shape."""
    if len(shape) == 2:
        return None, "hw", (shape[0], shape[1]), 1
    if len(shape) == 3:
        if shape[-1] <= 4:
            return None, "hwc", (shape[0], shape[1]), shape[2]
        if shape[0] <= 4:
            return None, "chw", (shape[1], shape[2]), shape[0]
        return shape[0], "hw", (shape[1], shape[2]), 1
    if len(shape) == 4:
        if shape[-1] <= 4:
            return shape[0], "hwc", (shape[1], shape[2]), shape[3]
        if shape[1] <= 4:
            return shape[0], "chw", (shape[2], shape[3]), shape[1]
        raise ImageInputError(
            f"{name}: cannot tell the channel axis of an array of shape {shape} "
            "(images are [N, H, W, C] or [N, C, H, W] with C <= 4)"
        )
    raise ImageInputError(
        f"{name}: an array of shape {shape} is not an image or a stack of images (2 to 4 axes)"
    )


def _array_entries(path: str, key: str | None, shape: tuple[int, ...], dtype: np.dtype) -> list[ImageEntry]:
    where = path if key is None else f"{path}{_SEP}{key}"
    if dtype.kind not in "biuf":
        raise UnreadableImageError(f"{where!r} holds {dtype} values, not an image")
    stack, layout, size, channels = _layout(tuple(int(s) for s in shape), where)
    if channels not in (1, 2, 3, 4):
        raise ImageInputError(f"{where!r} has {channels} channels; only 1 to 4 (gray/RGB, alpha) convert")
    if min(size) < 1 or stack == 0:
        raise UnreadableImageError(f"{where!r} is an empty array of shape {tuple(shape)}")
    own = 1 if channels <= 2 else 3
    if stack is None:
        return [ImageEntry(where, path, size, own, key, None, layout)]
    suffix = (lambda i: f"{_SEP}{i}") if key is None else (lambda i: f"{_SEP}{key}[{i}]")
    return [ImageEntry(f"{path}{suffix(i)}", path, size, own, key, i, layout) for i in range(stack)]


def _npy_entries(path: str) -> list[ImageEntry]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UnreadableImageError(f"{path!r} is not a readable .npy array ({_short(err)})") from None
    return _array_entries(path, None, array.shape, array.dtype)


def _npz_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(handle)
    else:
        shape, _, dtype = fmt.read_array_header_2_0(handle)
    return shape, dtype


def _npz_entries(path: str) -> list[ImageEntry]:
    entries: list[ImageEntry] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.endswith(".npy"))
            for member in names:
                with zf.open(member) as handle:
                    shape, dtype = _npz_header(handle)
                entries += _array_entries(path, member[: -len(".npy")], shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if isinstance(err, ImageInputError):
            raise
        raise UnreadableImageError(f"{path!r} is not a readable .npz archive ({_short(err)})") from None
    if not entries:
        raise UnreadableImageError(f"{path!r} holds no arrays")
    return entries


# ----------------------------------------------------------------------------------------- decoding


def _decode(entry: ImageEntry) -> np.ndarray:
    """The pixels of one entry: float32 ``[H, W, C]`` in [0, 1] with its own channels (C = 1 or 3).

    The one place pixels are decoded (tests count its calls to check laziness).
    """
    if entry.layout is None:
        array = _decode_pil(entry.path)
    else:
        array = _load_array(entry)
    array = _to_float(array, entry.name)
    if array.shape[-1] == 2:  # gray + alpha
        array = array[..., :1]
    elif array.shape[-1] == 4:  # RGBA
        array = array[..., :3]
    if tuple(array.shape[:2]) != tuple(entry.size):
        raise UnreadableImageError(f"{entry.name!r} changed size since it was listed")
    return np.ascontiguousarray(array)


def _decode_pil(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "1":
                im = im.convert("L")
            elif mode in ("P", "PA"):
                im = im.convert("L" if _pil_channels(mode, im) == 1 else "RGB")
            elif mode not in _GRAY_MODES and mode not in ("RGB", "RGBA"):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
            array = np.asarray(im)
            if mode == "I" or mode.startswith("I;16"):
                array = array.astype(np.uint16) if array.dtype != np.uint16 else array
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UnreadableImageError(f"{path!r} is not a decodable image ({_short(err)})") from None
    return array[..., None] if array.ndim == 2 else array


def _load_array(entry: ImageEntry) -> np.ndarray:
    try:
        if entry.key is None:
            array = np.load(entry.path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(entry.path, allow_pickle=False) as z:
                array = z[entry.key]
        if entry.index is not None:
            array = array[entry.index]
        array = np.asarray(array)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise UnreadableImageError(f"{entry.name!r} is not a readable array ({_short(err)})") from None
    if entry.layout == "hw":
        return array[..., None]
    if entry.layout == "chw":
        return np.moveaxis(array, 0, -1)
    return array


def _to_float(array: np.ndarray, name: str) -> np.ndarray:
    """Pixels scaled to [0, 1] by their bit depth (see the module docstring)."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype.kind in "iu":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise UnreadableImageError(
                f"{name!r} holds integers in [{lo}, {hi}]; images are 8-bit (0-255) or 16-bit (0-65535)"
            )
        return array.astype(np.float32) / (255.0 if hi <= 255 else 65535.0)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UnreadableImageError(f"{name!r} holds NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UnreadableImageError(f"{name!r} holds floats in [{lo:.3g}, {hi:.3g}], outside [0, 1]")
    return np.clip(array, 0.0, 1.0)


def _convert_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """``[H, W, c]`` (c = 1 or 3) to ``channels``: luminance or repeated gray."""
    if array.shape[-1] == channels:
        return array
    if channels == 1:
        return (array @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(array, 3, axis=-1)


def _check_channels(channels: object) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ImageInputError(
            f"channels must be 1 (gray), 3 (RGB) or None (the images' own), got {channels!r}"
        )
    return int(channels)


def _entry_for(path: str | os.PathLike | ImageEntry) -> ImageEntry:
    """The entry a path or an entry name (``file.npy::3``, ``file.npz::key[2]``) denotes."""
    if isinstance(path, ImageEntry):
        return path
    text = os.fspath(path)
    base, _, part = text.partition(_SEP)
    if not os.path.exists(base):
        raise ImageInputError(f"path {base!r} does not exist")
    if os.path.isdir(base):
        raise ImageInputError(f"{base!r} is a folder; read_image reads one image (see find_images)")
    if not _has_image_extension(base):
        raise UnreadableImageError(f"{base!r} is not an image (looked for {_LOOKED_FOR})")
    entries = _read_header(base)
    if not part:
        if len(entries) > 1:
            raise ImageInputError(f"{base!r} holds {len(entries)} images; name one, e.g. {entries[0].name!r}")
        return entries[0]
    for e in entries:
        if e.name == text:
            return e
    raise ImageInputError(f"{base!r} holds no image {part!r}; it holds e.g. {entries[0].name!r}")


def read_image(path: str | os.PathLike | ImageEntry, channels: int | None = None) -> Tensor:
    """Decode one image to a float32 ``[C, H, W]`` tensor in [0, 1].

    Args:
        path: an image file, an array file holding one image, an entry name such as
            ``"scans.npy::3"`` or ``"data.npz::frames[2]"``, or an :class:`ImageEntry`.
        channels: 1 or 3 to convert (luminance / repeated gray); None keeps the image's own.

    Raises:
        ImageInputError: a missing path, a folder, a file holding several images without an index.
        UnreadableImageError: not a decodable image.
    """
    channels = _check_channels(channels)
    entry = _entry_for(path)
    array = _decode(entry)
    if channels is not None:
        array = _convert_channels(array, channels)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------ dataset


def _split_key(entry: ImageEntry) -> tuple[int, str]:
    """Hash of the entry's file name (not its folder), so the split does not depend on how it was named."""
    base = os.path.basename(entry.path) + entry.name[len(entry.path) :]
    return zlib.crc32(base.encode()), entry.name


def _allocate(weights: Sequence[float], total: int) -> np.ndarray:
    """``total`` items shared in proportion to ``weights`` (largest remainders; deterministic)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        order = np.lexsort((np.arange(len(w)), -(exact - counts)))
        counts[order[:rest]] += 1
    return counts


@dataclass(frozen=True)
class _Source:
    """A region ``(y0, x0, y1, x1)`` of one image that crops are cut from."""

    entry: ImageEntry
    region: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        y0, x0, y1, x1 = self.region
        return y1 - y0, x1 - x0


class ImageFolderScenes(Dataset[tuple[Tensor, Target]]):
    """Scenes from your own images: random crops to train on, held-out crops, or whole images.

    Splits:

    * ``"train"``: ``num_scenes`` crops (default 1,000) of ``crop`` pixels from the training
      images, optionally flipped. Crops are shared among the images in proportion to their area (a
      handful of images, or one large one, is enough), in file order; crop ``i``'s position and
      flip are a pure function of ``(seed, i)``.
    * ``"val"``: ``num_scenes`` crops (default 64) of the validation images, without flips. The
      validation images are ``val_paths``, or by default a fixed ``val_fraction`` of the files (at
      least one when there are two or more; chosen by a hash of each file's name, so neither the
      seed nor the folder's name changes them), never trained on. With a single image the last
      ``val_fraction`` of its longer side (at least one crop wide) is held out for validation and
      training crops come from the rest; when the image is too small to spare that strip, both
      splits crop the whole image and a warning says so.
    * ``"test"``: every image (``paths`` and ``val_paths``) whole, at its own size (the first
      ``num_scenes`` when given) -- what parsing and scoring read.

    Targets: nothing is known about the objects, so ``boxes`` is float32 ``[0, 4]``, ``labels``
    int64 ``[0]`` and ``count`` is -1 ("unknown": the detection metrics refuse negative counts, so
    unlabelled crops are never scored as empty scenes; use
    :func:`ppl_scenes.files.evaluate_unlabelled`); ``file`` names the image (an :class:`ImageEntry`
    name) and ``crop_box`` is the crop's xyxy box in that image (``flipped`` tells whether it was
    mirrored: ``"none"``, ``"h"``, ``"v"`` or ``"hv"``).

    Args:
        paths: folders, globs or files (see :func:`find_images`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_scenes: items of the split (defaults above).
        seed: seed of the crop positions and flips.
        crop: crop side or ``(H, W)``; default :func:`ppl_scenes.sizing.default_crop` of
            ``object_size`` (64 without one), reduced to the smallest image.
        object_size: typical side of one object in pixels (sets the default crop; must fit the images).
        flips: ``"horizontal"`` (or True, the default), ``"both"`` (vertical too) or ``"none"`` (False).
        channels: 1 or 3 to convert every image; None takes 1 when all images are gray, else 3.
        val_fraction: share of the files held out for validation (0: none).
        val_paths: validation images given explicitly (then ``val_fraction`` is not used).
        skip_bad: skip undecodable files with a warning instead of raising.
        min_size: the model's smallest input ``(H, W)``; a crop smaller than it is refused.
        cache_mb: memory for recently decoded images (0: decode every item afresh).

    Raises:
        ImageInputError: bad paths (see :func:`find_images`), a crop larger than an image or smaller
            than ``min_size``, an object size that is not positive or larger than the images, bad
            parameters.
    """

    object_keys = ("boxes", "labels")

    def __init__(
        self,
        paths: object,
        split: str = "train",
        num_scenes: int | None = None,
        seed: int = 0,
        *,
        crop: int | tuple[int, int] | None = None,
        object_size: float | None = None,
        flips: bool | str = True,
        channels: int | None = None,
        val_fraction: float = 0.1,
        val_paths: object = None,
        skip_bad: bool = False,
        min_size: int | tuple[int, int] | None = None,
        cache_mb: float = 512,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ImageInputError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
        self.split = split
        self.seed = check_int(seed, "seed", minimum=0)
        self.flips = _check_flips(flips)
        self.val_fraction = check_fraction(val_fraction, "val_fraction")
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, int | float) or cache_mb < 0:
            raise ImageInputError(f"cache_mb must be a number >= 0, got {cache_mb!r}")
        self.cache_bytes = int(cache_mb * 2**20)
        found = find_images(paths, skip_bad=skip_bad)
        val_found = None if val_paths is None else find_images(val_paths, skip_bad=skip_bad)
        self.skipped = found.skipped + ([] if val_found is None else val_found.skipped)
        self.ignored = found.ignored + ([] if val_found is None else val_found.ignored)
        everything = list(found.entries)
        if val_found is not None:
            known = {e.name for e in everything}
            everything += [e for e in val_found.entries if e.name not in known]
        self.entries = everything
        self.channels = _check_channels(channels) or (3 if any(e.channels == 3 for e in everything) else 1)
        self.object_size = None if object_size is None else _check_object_size(object_size, everything)

        train, val = self._split_sources(found.entries, val_found)
        self.train_sources, self.val_sources = train, val
        if split == "test":
            entries = everything if num_scenes is None else everything[: check_int(num_scenes, "num_scenes")]
            self.sources = [_Source(e, (0, 0, *e.size)) for e in entries]
            self.crop_size = None
            self.image_size = None
            self.num_scenes = len(self.sources)
            self.counts = np.ones(self.num_scenes, dtype=np.int64)
        else:
            self.crop_size = self._crop_size(crop, train + val, min_size)
            self.image_size = self.crop_size
            self.sources = self.train_sources if split == "train" else self.val_sources  # set by _crop_size
            if not self.sources:
                raise ImageInputError("no validation images: val_fraction is 0 and no val_paths were given")
            default = 1000 if split == "train" else 64
            self.num_scenes = default if num_scenes is None else check_int(num_scenes, "num_scenes")
            self.counts = _allocate([s.size[0] * s.size[1] for s in self.sources], self.num_scenes)
        self._starts = np.concatenate([[0], np.cumsum(self.counts)])
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    # -- construction ------------------------------------------------------------------------------
    def _split_sources(
        self, entries: list[ImageEntry], val_found: FoundImages | None
    ) -> tuple[list[_Source], list[_Source]]:
        whole = lambda e: _Source(e, (0, 0, *e.size))  # noqa: E731
        if val_found is not None:
            val_names = {e.name for e in val_found.entries}
            train = [e for e in entries if e.name not in val_names]
            if not train:
                raise ImageInputError("every training image is also in val_paths: nothing left to train on")
            return [whole(e) for e in train], [whole(e) for e in val_found.entries]
        if self.val_fraction == 0:
            return [whole(e) for e in entries], []
        if len(entries) == 1:
            return [], []  # the held-out strip depends on the crop: see _crop_size
        k = min(len(entries) - 1, max(1, round(self.val_fraction * len(entries))))
        held = {e.name for e in sorted(entries, key=_split_key)[:k]}
        train = [whole(e) for e in entries if e.name not in held]
        val = [whole(e) for e in entries if e.name in held]
        return train, val

    def _crop_size(self, crop, sources: list[_Source], min_size) -> tuple[int, int]:
        single = not sources  # one image: the split is cut out of it below
        regions = [s.size for s in sources] or [self.entries[0].size]
        smallest = (min(r[0] for r in regions), min(r[1] for r in regions))
        if crop is None:
            side = 64 if self.object_size is None else default_crop(self.object_size)
            size = (min(side, smallest[0]), min(side, smallest[1]))
        else:
            try:
                size = check_size(crop, "crop")
            except ValueError as err:
                raise ImageInputError(str(err)) from None
            for s in sources or [_Source(self.entries[0], (0, 0, *self.entries[0].size))]:
                if s.size[0] < size[0] or s.size[1] < size[1]:
                    h, w = s.entry.size
                    raise ImageInputError(
                        f"image {s.entry.name!r} is {h}x{w}, smaller than the crop {size[0]}x{size[1]}"
                    )
        if min_size is not None:
            mh, mw = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
            if size[0] < mh or size[1] < mw:
                raise ImageInputError(
                    f"crop {size[0]}x{size[1]} is smaller than the model's smallest input {mh}x{mw}"
                    + (" (the smallest image limits it)" if crop is None else "")
                )
        if self.object_size is not None and self.object_size > min(size):
            raise ImageInputError(
                f"object_size {self.object_size:g} is larger than the crop {size[0]}x{size[1]}"
            )
        if single:
            self._hold_out_strip(size)
        return size

    def _hold_out_strip(self, crop: tuple[int, int]) -> None:
        """One image: validation crops from the last strip of its longer side, training from the rest."""
        entry = self.entries[0]
        h, w = entry.size
        whole = _Source(entry, (0, 0, h, w))
        if self.val_fraction == 0:
            self.train_sources, self.val_sources = [whole], []
            return
        axis = 0 if h >= w else 1
        length, side = (h, crop[0]) if axis == 0 else (w, crop[1])
        held = max(side, math.ceil(self.val_fraction * length))
        if length - held < side:
            warnings.warn(
                f"{entry.name!r} is too small to hold out a validation region: validation crops come "
                "from the training image",
                stacklevel=3,
            )
            self.train_sources, self.val_sources = [whole], [whole]
            return
        cut = length - held
        if axis == 0:
            self.train_sources = [_Source(entry, (0, 0, cut, w))]
            self.val_sources = [_Source(entry, (cut, 0, h, w))]
        else:
            self.train_sources = [_Source(entry, (0, 0, h, cut))]
            self.val_sources = [_Source(entry, (0, cut, h, w))]

    # -- items -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_scenes

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of item ``index``: a pure function of (seed, split, index)."""
        i = check_scene_index(index, self.num_scenes)
        return np.random.default_rng([self.seed, _CROP_STREAM, _SPLIT_IDS[self.split], i])

    def source_of(self, index: int) -> _Source:
        """The image region item ``index`` is cut from."""
        i = check_scene_index(index, self.num_scenes)
        return self.sources[int(np.searchsorted(self._starts, i, side="right")) - 1]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        source = self.source_of(index)
        rng = self.rng(index)
        pixels = self._pixels(source.entry)
        y0, x0, y1, x1 = source.region
        if self.crop_size is not None:
            ch, cw = self.crop_size
            y0 += int(rng.integers(0, y1 - y0 - ch + 1))
            x0 += int(rng.integers(0, x1 - x0 - cw + 1))
            y1, x1 = y0 + ch, x0 + cw
        array = pixels[y0:y1, x0:x1]
        flipped = ""
        if self.split == "train" and self.flips != "none":
            if rng.random() < 0.5:
                array, flipped = array[:, ::-1], "h"
            if self.flips == "both" and rng.random() < 0.5:
                array, flipped = array[::-1], flipped + "v"
        array = _convert_channels(np.ascontiguousarray(array), self.channels)
        image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
        target: Target = {
            "boxes": torch.zeros(0, 4, dtype=torch.float32),
            "labels": torch.zeros(0, dtype=torch.int64),
            "count": torch.tensor(-1, dtype=torch.int64),
            "file": source.entry.name,  # type: ignore[dict-item]
            "crop_box": torch.tensor([x0, y0, x1, y1], dtype=torch.float32),
            "flipped": flipped or "none",  # type: ignore[dict-item]
        }
        return image, target

    def _pixels(self, entry: ImageEntry) -> np.ndarray:
        """The entry's decoded pixels ``[H, W, c]`` (own channels), from the cache when there."""
        cached = self._cache.get(entry.name)
        if cached is not None:
            self._cache.move_to_end(entry.name)
            return cached
        pixels = _decode(entry)
        if pixels.nbytes <= self.cache_bytes:
            self._cache[entry.name] = pixels
            self._cached_bytes += pixels.nbytes
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return pixels

    def files(self, split: str | None = None) -> list[str]:
        """Names of the images of ``split`` (default this dataset's)."""
        split = split or self.split
        if split == "test":
            return [e.name for e in self.entries]
        sources = self.train_sources if split == "train" else self.val_sources
        return list(dict.fromkeys(s.entry.name for s in sources))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"], state["_cached_bytes"] = OrderedDict(), 0
        return state

    def __repr__(self) -> str:
        size = "whole images" if self.crop_size is None else f"crops {self.crop_size[0]}x{self.crop_size[1]}"
        return (
            f"ImageFolderScenes({len(self.entries)} images, split={self.split!r}, "
            f"num_scenes={self.num_scenes}, {size}, channels={self.channels}, seed={self.seed})"
        )


def _check_flips(flips: object) -> str:
    if flips is True:
        return "horizontal"
    if flips is False or flips is None:
        return "none"
    if flips not in FLIPS:
        raise ImageInputError(f"flips must be one of {FLIPS} (or True/False), got {flips!r}")
    return str(flips)


def _check_object_size(object_size: object, entries: Sequence[ImageEntry]) -> float:
    if (
        isinstance(object_size, bool)
        or not isinstance(object_size, int | float | np.integer | np.floating)
        or not math.isfinite(object_size)
        or object_size <= 0
    ):
        raise ImageInputError(f"object_size must be a positive number of pixels, got {object_size!r}")
    smallest = min(entries, key=lambda e: min(e.size))
    if object_size > min(smallest.size):
        h, w = smallest.size
        raise ImageInputError(f"object_size {object_size:g} is larger than image {smallest.name!r} ({h}x{w})")
    return float(object_size)
