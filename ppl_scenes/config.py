"""Configurations as dataclasses: conversion to JSON, validated overrides, and the one value parser.

Every model's config (and :class:`ppl_scenes.infer.TrainConfig`) is a dataclass whose fields all have
defaults. :func:`replace_config` applies overrides (from Python, the command line or ``config.json``)
converted by :func:`coerce_value` to each field's type. Text from the command line (``KEY=VALUE``) is
split by :func:`split_overrides`, read by :func:`parse_value` (or, for a typed field,
:func:`typed_value`) and checked by :func:`coerced_fields`; run specs and experiments use the same.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "coerce_value",
    "coerced_fields",
    "config_to_dict",
    "parse_value",
    "replace_config",
    "split_overrides",
    "typed_value",
]


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


# -- values from text (the command line, KEY=VALUE overrides) -----------------------------------
def parse_value(text: str) -> Any:
    """A command-line value as a Python value.

    ``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, ``"none"`` -> None,
    ``"1,5"``, ``"[1,5]"`` or ``"(1,5)"`` -> ``(1, 5)``, ``'{"a": 1}'`` -> dict; anything else stays a
    string.
    """
    s = text.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(s)
    except Exception:  # literal_eval raises ValueError, SyntaxError, MemoryError, RecursionError...
        if "," in s:
            return tuple(parse_value(part) for part in s.split(","))
        return s
    return tuple(value) if isinstance(value, list) else value


def typed_value(default: Any, text: str) -> Any:
    """Parse ``text`` for a config field whose default is ``default`` (the type decides how)."""
    if isinstance(default, str | bool):
        return text  # coerce_value reads strings for these itself ("yes", "off", "cuda:1", ...)
    value = parse_value(text)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ValueError(f"expected a dict like '{{\"key\": value}}', got {text!r}")
    return value


def coerced_fields(config, raw: dict[str, str], what: str) -> dict[str, Any]:
    """``raw`` (KEY -> text) converted to the types of ``config``'s fields and validated by it."""
    fields = {f.name for f in dataclasses.fields(config)}
    parsed = {}
    for key, text in raw.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ValueError(f"unknown {what} key {key!r} for {type(config).__name__}; valid keys: {valid}")
        try:
            parsed[key] = typed_value(getattr(config, key), text)
        except ValueError as err:
            raise ValueError(f"{what} key {key!r}: {err}") from None
    new = replace_config(config, parsed)  # ValueError for bad types; __post_init__ for bad values
    return {key: getattr(new, key) for key in parsed}


def split_overrides(items: Sequence[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``KEY=VALUE`` items as (model config, ``train.`` settings, ``data.`` arguments), values as text."""
    model: dict[str, str] = {}
    train: dict[str, str] = {}
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"malformed override {item!r}: expected KEY=VALUE (e.g. what_dim=32)")
        target = model
        for prefix, group in (("train.", train), ("data.", data)):
            if key.startswith(prefix):
                key, target = key[len(prefix) :], group
                if not key:
                    raise ValueError(f"malformed override {item!r}: no key after {prefix!r}")
        if key in target:
            raise ValueError(f"override {item!r} sets {key!r} a second time")
        target[key] = value
    return model, train, data
