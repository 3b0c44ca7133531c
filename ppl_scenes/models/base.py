"""The one surface every scene model shares: ``SceneModel`` and its output, ``SceneParse``.

A model is a ``PyroModule`` with ``model(x)``, ``guide(x)`` and ``parse(x)`` and a ``config``
dataclass (Pyro's AIR and ``CompartmentalModel`` are the pattern). Models register themselves by name
so that ``ppl_scenes.load(run_dir)`` and the CLI can rebuild any of them from a run directory.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import numbers
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pyro.nn import PyroModule
from torch import Tensor

from ppl_scenes.checks import check_images

MODELS: dict[str, type[SceneModel]] = {}


@dataclass
class SceneParse:
    """What ``model.parse(images)`` returns: the guide's modes, per image.

    Attributes:
        boxes: per image ``[N_i, 4]`` absolute-pixel xyxy boxes of the objects judged present.
        scores: per image ``[N_i]`` presence probability or detection score.
        what: per image ``[N_i, A]`` appearance codes, or None.
        labels: per image ``[N_i]`` cluster (GMAIR) or class (MIST classifier), or None.
        image_labels: ``[B, ...]`` image-level prediction (saccades: classes or sum), or None.
        reconstruction: ``[B, C, H, W]`` rendered image, or None.
    """

    boxes: list[Tensor]
    scores: list[Tensor]
    what: list[Tensor] | None = None
    labels: list[Tensor] | None = None
    image_labels: Tensor | None = None
    reconstruction: Tensor | None = None

    @property
    def counts(self) -> Tensor:
        """Number of objects found in each image: ``[B]``."""
        return torch.tensor([len(b) for b in self.boxes])


class SceneModel(PyroModule):
    """Base class of all scene models.

    Subclasses set ``name`` (the CLI/registry name), ``config_class`` (a dataclass whose every field
    has a default), ``default_dataset`` and optionally ``default_data_kwargs`` and ``default_train``
    (overrides of :class:`ppl_scenes.infer.svi.TrainConfig` fields), and implement ``model``, ``guide``
    and ``parse``.

    Args:
        config: the model's config dataclass; defaults when None.
        **overrides: individual config fields to override.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_dataset: ClassVar[str] = ""
    default_data_kwargs: ClassVar[dict[str, Any]] = {}
    default_train: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            MODELS[cls.name] = cls

    def __init__(self, config=None, **overrides):
        super().__init__()
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = replace_config(config, overrides) if overrides else config
        self.step = 0

    # -- the model's surface -------------------------------------------------------------------
    def model(self, x: Tensor) -> Any:
        """The generative model ``p(x, z)``; observes ``x`` when given."""
        raise NotImplementedError

    def guide(self, x: Tensor) -> Any:
        """The amortised posterior ``q(z | x)``."""
        raise NotImplementedError

    def parse(self, x: Tensor) -> SceneParse:
        """Objects found in ``x`` (no gradient, eval mode, the guide's modes)."""
        raise NotImplementedError

    @contextmanager
    def evaluating(self):
        """Eval mode without gradients for the block (``parse``), the training mode restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def min_image_size(self) -> tuple[int, int]:
        """Smallest ``(H, W)`` the model accepts."""
        return (1, 1)

    def check_input(self, x: Tensor, name: str = "images") -> Tensor:
        """Validate a batch of images for this model (see :func:`ppl_scenes.checks.check_images`)."""
        return check_images(
            x, name=name, channels=getattr(self.config, "channels", None), min_size=self.min_image_size()
        )

    def set_step(self, step: int) -> dict[str, float]:
        """Tell the model the training step, so annealed quantities follow their schedules.

        Returns:
            the annealed values at this step (logged by the trainer).
        """
        self.step = int(step)
        return {}

    def loss_terms(self) -> dict[str, float]:
        """Named parts of the last training loss worth logging (empty by default)."""
        return {}

    def learning_rate_factors(self) -> dict[str, float]:
        """Module-path prefix -> factor of the base learning rate, for parts that must learn slower.

        The trainer applies them to the parameters that ``TrainConfig.lr_per_module`` does not name
        (the longest matching prefix wins). Empty by default: every parameter at the base rate.
        """
        return {}

    def evaluate(self, dataset, batch_size: int = 64, max_scenes: int | None = None) -> dict[str, float]:
        """Score the model on a dataset of ``(image, target)`` pairs; detection metrics by default."""
        from ppl_scenes.infer.evaluate import evaluate_detection

        return evaluate_detection(self, dataset, batch_size=batch_size, max_scenes=max_scenes)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


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
