"""Digit source: MNIST through torchvision, with an offline fallback to scikit-learn's 8x8 digits.

Scenes for training draw from MNIST's training digits and scenes for testing from its test digits, so
no digit instance is shared between the splits (SPAIR §5.1). When MNIST is not on disk and cannot be
downloaded, the small digit set bundled with scikit-learn is upsampled to MNIST's format and used
instead, with one loud warning per process.

Generators do not read the raw digits: they use a :class:`DigitBank`, the digits of one split resized
once (with antialiasing) to the side a generator pastes, together with each digit's tight ink box.
Banks are cached in memory per (split, side, root).
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "INK_THRESHOLD",
    "SPLITS",
    "VAL_DIGITS",
    "DigitBank",
    "DigitFallbackWarning",
    "clear_digit_cache",
    "digit_bank",
    "ink_boxes",
    "load_digits",
    "resize_digits",
    "resolve_data_root",
]

SPLITS = ("train", "val", "test")

#: MNIST's last 10,000 training digits are set aside for validation scenes (BENCHMARKS.md's
#: protocol): training scenes draw from the first 50,000, validation scenes from the rest, test
#: scenes from MNIST's 10,000 test digits.
VAL_DIGITS = 10_000

#: Intensity (in [0, 1]) above which a pixel counts as ink for tight truth boxes.
INK_THRESHOLD = 0.05
# The same threshold on the uint8 scale: a pixel is ink when its value is >= this.
_INK_THRESHOLD_U8 = int(np.floor(INK_THRESHOLD * 255)) + 1

# The fallback digits are drawn 20x20 inside a 28x28 frame, as MNIST centres its 20x20 digits.
_FALLBACK_DIGIT_SIDE = 20
_MNIST_SIDE = 28
# Of every 5 scikit-learn digits the first goes to the test split and the second to validation:
# deterministic, disjoint, and roughly stratified because the bundled digits cycle through the classes.
_FALLBACK_STRIDE = 5
_FALLBACK_SLOT = {"test": 0, "val": 1}
# torchvision's downloader sets no timeout; a firewall that drops packets would otherwise hang forever.
_DOWNLOAD_TIMEOUT_S = 30.0

_lock = threading.Lock()
_digit_cache: dict[tuple[str, str, bool], tuple[Tensor, Tensor, str]] = {}
_bank_cache: dict[tuple[str, int, str, bool], DigitBank] = {}
_fallback_warned = False


class DigitFallbackWarning(UserWarning):
    """Warned (once per process) when MNIST is missing and scikit-learn's small digit set is used."""


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    """Return the data root: ``root`` if given, else ``$PPL_SCENES_DATA``, else ``~/.cache/ppl_scenes``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("PPL_SCENES_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ppl_scenes"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _load_mnist(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor] | None:
    """MNIST images and labels, or None when they are not on disk and cannot be fetched."""
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(root), train=train, download=False)
        return ds.data.clone(), ds.targets.clone()
    except RuntimeError:
        if not download:
            return None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        ds = MNIST(str(root), train=train, download=True)
        return ds.data.clone(), ds.targets.clone()
    # A failed download surfaces as URLError, OSError, RuntimeError or worse depending on where the
    # network gives out; every one of them means the same thing here: use the offline fallback.
    except Exception:
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _load_fallback(split: str) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits, upsampled and framed like MNIST, split deterministically."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) * (255.0 / 16.0)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    up = F.interpolate(
        images[:, None],
        size=(_FALLBACK_DIGIT_SIDE, _FALLBACK_DIGIT_SIDE),
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    margin = (_MNIST_SIDE - _FALLBACK_DIGIT_SIDE) // 2
    framed = F.pad(up, (margin, margin, margin, margin))
    framed = framed.round().clamp(0, 255).to(torch.uint8)
    slot = torch.arange(len(labels)) % _FALLBACK_STRIDE
    if split == "train":
        keep = slot >= len(_FALLBACK_SLOT)
    else:
        keep = slot == _FALLBACK_SLOT[split]
    return framed[keep].contiguous(), labels[keep].contiguous()


def _warn_fallback(root: Path) -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        f"MNIST was NOT found at {root} (and could not be downloaded): using the small fallback of "
        "scikit-learn's 1,797 8x8 digits upsampled to 28x28. Results will NOT be comparable to the "
        "papers. Put MNIST under <root>/MNIST/raw or set $PPL_SCENES_DATA / --data-root.",
        DigitFallbackWarning,
        stacklevel=4,
    )


def _load(split: str, root: str | os.PathLike[str] | None, download: bool) -> tuple[Tensor, Tensor, str]:
    _check_split(split)
    path = resolve_data_root(root)
    key = (split, str(path.resolve()), bool(download))
    with _lock:
        hit = _digit_cache.get(key)
        if hit is not None:
            return hit
        mnist = _load_mnist(path, train=split != "test", download=download)
        if mnist is not None:
            images, labels = mnist
            if split != "test":
                part = slice(None, -VAL_DIGITS) if split == "train" else slice(-VAL_DIGITS, None)
                images, labels = images[part].contiguous(), labels[part].contiguous()
            entry = (images, labels, "mnist")
        else:
            _warn_fallback(path)
            images, labels = _load_fallback(split)
            entry = (images, labels, "sklearn-fallback")
        _digit_cache[key] = entry
        return entry


def load_digits(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[Tensor, Tensor]:
    """Load one split of the digit source.

    Args:
        split: ``"train"`` (MNIST's first 50,000 training digits), ``"val"`` (its last 10,000
            training digits, :data:`VAL_DIGITS`) or ``"test"`` (its 10,000 test digits).
        root: data root holding ``MNIST/raw`` (torchvision layout); see :func:`resolve_data_root`.
        download: try to download MNIST when its files are missing.

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` and int64 ``[N]``. When MNIST is missing and cannot
        be downloaded, scikit-learn's 8x8 digits upsampled to 20x20 inside a 28x28 frame (train: 1,437
        digits, test: 360), with one :class:`DigitFallbackWarning` per process. Results are cached in
        memory, so the same (split, root) is read once.

    Raises:
        ValueError: ``split`` is not ``"train"``, ``"val"`` or ``"test"``.
    """
    images, labels, _ = _load(split, root, download)
    return images, labels


@dataclass(frozen=True, eq=False)
class DigitBank:
    """The digits of one split resized to ``side`` x ``side``, ready to paste.

    Attributes:
        images: uint8 ``[N, side, side]``.
        labels: int64 ``[N]`` digit classes.
        ink: int64 ``[N, 4]`` tight ink box of each digit inside its patch, ``(x1, y1, x2, y2)`` with
            exclusive ``x2, y2`` (pixels with intensity above :data:`INK_THRESHOLD`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        source: ``"mnist"`` or ``"sklearn-fallback"``.
    """

    images: np.ndarray
    labels: np.ndarray
    ink: np.ndarray
    split: str
    source: str

    @property
    def side(self) -> int:
        """Side of every patch in pixels."""
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def resize_digits(images: Tensor | np.ndarray, side: int) -> np.ndarray:
    """Resize uint8 digits ``[N, h, w]`` to ``[N, side, side]`` uint8 (bilinear, antialiased)."""
    if isinstance(images, Tensor):
        x = images.to(torch.float32)
    else:
        # A copy: bank arrays are read-only, and torch warns on wrapping non-writable memory.
        x = torch.from_numpy(np.array(images, dtype=np.float32))
    if x.dim() == 2:
        x = x[None]
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(
            x[:, None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )[:, 0]
    # Rounded in numpy: torch's round on small strided tensors costs milliseconds of thread wake-up.
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """Tight ink boxes ``[N, 4]`` (x1, y1, x2 exclusive, y2 exclusive) of uint8 patches ``[N, h, w]``.

    A patch without any ink gets its full extent, so a box always exists.
    """
    imgs = np.asarray(images)
    if imgs.ndim == 2:
        imgs = imgs[None]
    ink = imgs >= _INK_THRESHOLD_U8
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    h, w = imgs.shape[1:]
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    empty = ~rows.any(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
    boxes[empty] = (0, 0, w, h)
    return boxes


def digit_bank(
    split: str, side: int = _MNIST_SIDE, root: str | os.PathLike[str] | None = None, download: bool = True
) -> DigitBank:
    """The cached :class:`DigitBank` of ``split`` at ``side`` pixels (resized once per process)."""
    _check_split(split)
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"digit side must be a positive integer, got {side!r}")
    key = (split, side, str(resolve_data_root(root).resolve()), bool(download))
    with _lock:
        hit = _bank_cache.get(key)
    if hit is not None:
        return hit
    images, labels, source = _load(split, root, download)
    resized = resize_digits(images, side)
    bank = DigitBank(
        images=resized,
        labels=labels.numpy().astype(np.int64),
        ink=ink_boxes(resized),
        split=split,
        source=source,
    )
    # Banks are shared by every dataset in the process: a stray in-place write would corrupt them all.
    for array in (bank.images, bank.labels, bank.ink):
        array.setflags(write=False)
    with _lock:
        return _bank_cache.setdefault(key, bank)


def clear_digit_cache() -> None:
    """Forget every cached digit split and bank (frees memory; the next use reloads from disk)."""
    with _lock:
        _digit_cache.clear()
        _bank_cache.clear()
