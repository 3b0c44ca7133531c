"""Model configurations as dataclasses: conversion to JSON and validated overrides, the one value parser.

Every model's config is a dataclass whose fields all have defaults. :func:`replace_config` applies
overrides (from Python, the command line or ``config.json``) converted by :func:`coerce_value` to each
field's type; the command line, run directories and experiments all go through it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["coerce_value", "config_to_dict", "replace_config"]


def config_to_dict(config) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"expected a config dataclass instance, got {type(config).__name__}")
    return _listify(dataclasses.asdict(config))


def _listify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _listify(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_listify(v) for v in obj]
    return obj


def replace_config(config, overrides: Mapping[str, Any]):
    """A copy of ``config`` with ``overrides`` applied, each converted to the field's type.

    Raises:
        ValueError: for an unknown key (naming the valid ones) or a value of the wrong kind (and
            whatever the config's own ``__post_init__`` rejects).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"expected a config dataclass instance, got {type(config).__name__}")
    if not isinstance(overrides, Mapping):
        raise ValueError(f"config overrides must be a mapping of field names, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config)}
    converted = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(
                f"unknown config key {key!r} for {type(config).__name__}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        converted[key] = coerce_value(getattr(config, key), value, key)
    return dataclasses.replace(config, **converted)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce_value(default: Any, value: Any, key: str) -> Any:
    """Convert ``value`` to the type of ``default`` (used for config overrides and JSON configs).

    Strings are parsed (``"3"`` for an int, ``"yes"``/``"off"`` for a bool, ``"12,12"`` or ``"[12, 12]"``
    for a tuple); a bool is never taken for a number, nor a fractional number for an int. A tuple
    keeps the length of its default, except that a one-element default (e.g. MIST's
    ``heatmap_scales=(1.0,)``) takes a sequence of any non-zero length.

    Raises:
        ValueError: naming ``key`` and the kind of value it expects.
    """
    try:
        return _coerce(default, value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"config key {key!r} expects a value like {default!r}, got {value!r}") from None


def _parse_sequence(text: str) -> list:
    """``"12,12"``, ``"(12, 12)"``, ``"[1.0]"`` or nested ``"((0, 0.1),)"`` as a list of its items."""
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if text[:1] + text[-1:] in ("()", "[]"):
            text = text[1:-1]
        return [part.strip() for part in text.split(",") if part.strip()]
    return list(value) if isinstance(value, list | tuple) else [value]


def _coerce(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        raise ValueError
    if isinstance(default, int | float):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                value = float(text)
        if not isinstance(value, numbers.Real):
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = _parse_sequence(value)
        items = list(value) if isinstance(value, list | tuple) else [value]
        if len(default) == 1:  # a one-element default is a sequence of any (non-zero) length
            if not items:
                raise ValueError
            return tuple(_coerce(default[0], v) for v in items)
        if default and len(items) != len(default):
            raise ValueError
        return tuple(_coerce(d, v) for d, v in zip(default, items)) if default else tuple(items)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError
        return value
    if isinstance(default, dict | list):
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, type(default)):
            raise ValueError
        return value
    return value
