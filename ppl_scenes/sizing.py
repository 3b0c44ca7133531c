"""From the typical side of one object to each model's sizes: ``object_size`` -> config overrides.

``s`` is the typical side of one object in pixels. The rules reproduce the library's tuned defaults at
the object sizes they were tuned for (SPAIR: 14-pixel digits, GMAIR and MIST: 20-pixel digits):

=================  =====================  =========================================================
model              field                  rule
=================  =====================  =========================================================
spair, gmair       ``cell_size``          the product of 2s and 3s nearest to ``0.8 s`` (at least 2):
                                          an object spans about one cell (14 -> 12, 20 -> 16)
                   ``anchor``             ``1.2 s``: boxes grow up to the anchor (14 -> 16.8, 20 -> 24)
                   ``object_size``,       ``s`` rounded, within [8, 32]: the decoded and the encoded
                   ``glimpse_size``       glimpse (larger objects are resampled to 32 pixels)
                   size prior             unchanged: ``where_prior_*`` is relative to the anchor, so
                                          it scales with it
ssdir              ``image_size``         the training crop (``image_size`` argument, default
                                          :func:`default_crop`); parsing tiles larger images
                   ``min_ratio``,         ``0.5 s`` and ``2 s`` as fractions of the crop's shorter
                   ``max_ratio``          side (the default boxes span half to twice the object)
                   ``patch_size``         ``4 * 2**k`` nearest to ``s``, within [8, 64]
                   ``pyramid_levels``     4, fewer when the crop is too small for 4
                   ``detector_classes``   1: an image folder names no classes
mist (and its      ``patch_side``         ``s``
baselines)         ``patch_size``         ``s`` rounded to a multiple of ``2**task_levels``, in [8, 64]
                   ``softmax_window``     the odd number nearest to ``0.75 s`` (at least 3)
                   ``nms_window``         the odd number nearest to ``0.45 s`` (at least 3)
saccade, resnet    --                     not applicable: image-level models, whose glimpses are
                                          fractions of the image (:class:`ObjectSizeNotApplicable`)
=================  =====================  =========================================================

Explicit overrides win: :func:`object_size_overrides` takes them and derives the other fields around
them (e.g. MIST's ``patch_size`` from an explicit ``task_levels``). Training crops default to
:func:`default_crop`, four object sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ppl_scenes.checks import check_int
from ppl_scenes.config import coerce_value
from ppl_scenes.data.images import ObjectSizeError, check_object_size, default_crop
from ppl_scenes.models import MODELS, MISTConfig, SPAIRConfig, SSDIRConfig

__all__ = [
    "ObjectSizeError",
    "ObjectSizeNotApplicable",
    "default_crop",
    "object_size_overrides",
]


class ObjectSizeNotApplicable(ObjectSizeError):
    """The model has no object scale to set (an image-level model such as variational saccading)."""


def _smooth_number(value: float, minimum: int = 2) -> int:
    """The product of 2s and 3s nearest to ``value`` (ties to the larger), at least ``minimum``."""
    candidates = sorted({2**a * 3**b for a in range(12) for b in range(8)})
    best = min(candidates, key=lambda c: (abs(c - value), -c))
    return max(minimum, best)


def _nearest_odd(value: float, minimum: int = 3) -> int:
    odd = 2 * math.floor(value / 2) + 1
    if abs(odd + 2 - value) < abs(odd - value):
        odd += 2
    return max(minimum, odd)


def _nearest_power_patch(value: float, low: int = 8, high: int = 64) -> int:
    sizes = [4 * 2**k for k in range(1, 12) if low <= 4 * 2**k <= high]
    return min(sizes, key=lambda p: (abs(math.log(p / value)), p))


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(value, name), check_int(value, name)
    try:
        h, w = value  # type: ignore[misc]
        return check_int(int(h), name), check_int(int(w), name)
    except (TypeError, ValueError):
        raise ObjectSizeError(
            f"{name} must be a side or an (H, W) pair of positive ints, got {value!r}"
        ) from None


def _config_family(model_name: str) -> tuple[str, type]:
    if model_name not in MODELS:
        raise ObjectSizeError(f"unknown model {model_name!r}; known models: {', '.join(sorted(MODELS))}")
    config_class = MODELS[model_name].config_class
    for family, base in (("spair", SPAIRConfig), ("ssdir", SSDIRConfig), ("mist", MISTConfig)):
        if isinstance(config_class, type) and issubclass(config_class, base):
            return family, config_class
    raise ObjectSizeNotApplicable(
        f"object_size does not apply to {model_name!r}: it is an image-level model with no object scale "
        "to set (its glimpses are fractions of the image)"
    )


def object_size_overrides(
    model_name: str,
    object_size: float,
    image_size: int | tuple[int, int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Config overrides of ``model_name`` for objects of side ``object_size`` pixels (module docstring).

    Args:
        model_name: a registered model (``spair``, ``gmair``, ``ssdir``, ``mist``, MIST's baselines).
        object_size: the typical side of one object, in pixels.
        image_size: the training crop (side or ``(H, W)``): SSDIR's ``image_size`` (default
            :func:`default_crop`); for the others only checked to hold an object.
        overrides: explicit ``KEY=VALUE`` overrides; they are in the result unchanged and win over
            the derived values, which are computed around them (strings are converted to the
            config's types).

    Returns:
        the derived fields updated with ``overrides``, ready for ``Model(**result)``.

    Raises:
        ObjectSizeError: a size that is not positive or larger than ``image_size``; an unknown model.
        ObjectSizeNotApplicable: for image-level models (``saccade``, ``resnet``).
    """
    s = check_object_size(object_size)
    family, config_class = _config_family(model_name)
    explicit = dict(overrides or {})
    crop = _pair(image_size if image_size is not None else default_crop(s), "image_size")
    if s > min(crop):
        raise ObjectSizeError(f"object_size {s:g} is larger than the images ({crop[0]}x{crop[1]})")
    defaults = config_class()
    derived: dict[str, Any]
    if family == "spair":
        cell = _smooth_number(0.8 * s)
        glimpse = min(32, max(8, round(s)))
        anchor = round(1.2 * s, 2)
        derived = {
            "cell_size": (cell, cell),
            "anchor": (anchor, anchor),
            "object_size": (glimpse, glimpse),
            "glimpse_size": (glimpse, glimpse),
        }
    elif family == "ssdir":
        widths = _explicit(defaults, explicit, "backbone_widths")
        levels = 4
        while levels > 1 and 2 ** (len(widths) + levels - 1) > min(crop):
            levels -= 1
        if 2 ** len(widths) > min(crop):
            raise ObjectSizeError(
                f"a {crop[0]}x{crop[1]} crop is too small for SSDIR's backbone (at least {2 ** len(widths)})"
            )
        side = float(min(crop))
        low = min(0.5 * s / side, 0.9)
        high = min(max(2.0 * s / side, low + 0.05), 0.99)
        derived = {
            "image_size": crop,
            "min_ratio": round(low, 4),
            "max_ratio": round(high, 4),
            "patch_size": _nearest_power_patch(s),
            "pyramid_levels": levels,
            "detector_classes": 1,
        }
    else:
        levels = _explicit(defaults, explicit, "task_levels")
        step = 2**levels
        patch = min(max(step * max(1, math.floor(s / step + 0.5)), 8), 64)
        patch = step * math.ceil(patch / step)
        derived = {
            "patch_side": s,
            "patch_size": patch,
            "softmax_window": _nearest_odd(0.75 * s),
            "nms_window": _nearest_odd(0.45 * s),
        }
    derived.update(explicit)
    return derived


def _explicit(defaults: Any, explicit: Mapping[str, Any], key: str) -> Any:
    """An explicit override of ``key`` converted to the config's type, else the config's default."""
    default = getattr(defaults, key)
    return coerce_value(default, explicit[key], key) if key in explicit else default
