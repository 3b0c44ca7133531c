"""Named recipes: a model's measured settings -- model config, training and scenes -- under one name.

``SPAIR.preset("scattered-5")`` returns the :class:`Preset` that reached BENCHMARKS.md's SPAIR result;
every model also has ``"paper"``, its paper's settings at the library's scale (the class defaults).
On the command line ``ppl-scenes train spair --preset scattered-5`` uses it, and ``ppl-scenes presets``
lists them. A preset is text overrides, ``KEY=VALUE`` (model config), ``train.KEY=VALUE``
(:class:`~ppl_scenes.infer.TrainConfig`) and ``data.KEY=VALUE`` (scene generator), exactly as the
CLI takes them, so that every preset is also a command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ppl_scenes.config import coerced_fields, parse_value, replace_config, split_overrides

__all__ = ["Preset", "merge_overrides"]


@dataclass(frozen=True)
class Preset:
    """A named recipe of one model.

    Attributes:
        name: the preset's name (``"paper"``, ``"scattered-5"``...).
        summary: one line: what it is for and what it reached (the numbers live in BENCHMARKS.md).
        overrides: ``KEY=VALUE``, ``train.KEY=VALUE`` and ``data.KEY=VALUE`` text.
        dataset: the scene generator (None: the model's default).
        num_train: training scenes (None: the generator's default).
        model: the model's registered name (set when the preset is looked up on its class).
        model_class: the model's class (likewise).
    """

    name: str
    summary: str
    overrides: tuple[str, ...] = ()
    dataset: str | None = None
    num_train: int | None = None
    model: str = ""
    model_class: type | None = field(default=None, repr=False, compare=False)

    @property
    def overrides_keys(self) -> set[str]:
        """The keys the preset sets (``cell_size``, ``train.steps``, ``data.num_digits``...)."""
        return {item.split("=", 1)[0].strip() for item in self.overrides}

    def bound(self, model_class: type) -> Preset:
        """This preset with its model's class and name set."""
        return dataclasses.replace(self, model=model_class.name, model_class=model_class)

    def _model_class(self):
        if self.model_class is None:
            raise ValueError(f"preset {self.name!r} is not bound to a model: look it up with Model.preset()")
        return self.model_class

    def config(self):
        """The model's config dataclass with the preset's model overrides applied."""
        cls = self._model_class()
        raw = split_overrides(self.overrides)[0]
        return replace_config(cls.config_class(), coerced_fields(cls.config_class(), raw, "model config"))

    def build(self):
        """A new model with the preset's config (untrained)."""
        return self._model_class()(self.config())

    def train_settings(self) -> dict[str, Any]:
        """The preset's :class:`~ppl_scenes.infer.TrainConfig` overrides as values (``fit``'s keywords)."""
        return {key: parse_value(text) for key, text in split_overrides(self.overrides)[1].items()}

    def data_settings(self) -> dict[str, Any]:
        """The preset's scene-generator arguments as values (``make_dataset``'s keywords)."""
        return {key: parse_value(text) for key, text in split_overrides(self.overrides)[2].items()}

    def command(self, out: str = "RUN_DIR") -> str:
        """The ``ppl-scenes train`` command line of this preset."""
        return f"ppl-scenes train {self.model} --preset {self.name} --out {out}"


def merge_overrides(
    preset: Preset, given: list[str] | tuple[str, ...], flags: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """The preset's overrides followed by ``given``, and the preset's keys that were replaced.

    Explicit overrides win: a key set by both keeps the given value (the caller says so once).
    ``flags`` are keys set by other means (``train.steps`` by ``--steps``...): the preset's values
    of those are dropped too.
    """
    keys = {item.split("=", 1)[0].strip() for item in given if "=" in item} | set(flags)
    kept = [item for item in preset.overrides if item.split("=", 1)[0].strip() not in keys]
    replaced = sorted(item.split("=", 1)[0].strip() for item in preset.overrides if item not in kept)
    return kept + list(given), replaced
