"""Pretrained models shipped in the package: ``pretrained("spair")`` returns a trained model offline.

Each model's weights lie in ``ppl_scenes/weights/<name>.safetensors`` (tensors only: loading cannot
run code) beside its model card ``<name>.json``: the model and its config, the preset and the exact
command that trained it, the steps and CPU minutes it took on which machine, its validation and test
metrics (test scenes drawn fresh, with 95 % bootstrap intervals) and the weights' sha256, checked on
every load. ``experiments/pretrained.py`` writes both from a finished run directory; BENCHMARKS.md
tabulates the cards.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from ppl_scenes.config import replace_config
from ppl_scenes.models import MODELS, SceneModel

__all__ = [
    "CARD_FIELDS",
    "OPTIONAL_CARD_FIELDS",
    "PretrainedError",
    "pretrained",
    "pretrained_info",
    "pretrained_names",
]

#: What every model card holds.
CARD_FIELDS = (
    "name",
    "model",
    "model_config",
    "preset",
    "summary",
    "command",
    "steps",
    "cpu_minutes",
    "machine",
    "dataset",
    "data_kwargs",
    "validation",
    "test",
    "test_intervals",
    "targets",
    "sha256",
    "weights_file",
    "notes",
)
#: What a card may hold besides: ``reproduction``, its command re-run with other seeds (per target
#: score the reruns' test values, whether each lies inside the card's 95 % test interval, and the mean
#: and sample sd over all seeds; written by ``experiments/reproduce.py --update-card``).
OPTIONAL_CARD_FIELDS = ("reproduction",)


class PretrainedError(ValueError):
    """An unknown pretrained name, or a weights file that is missing or does not match its card."""


def _weights_dir():
    return resources.files("ppl_scenes") / "weights"


def pretrained_names() -> list[str]:
    """The names of the shipped pretrained models (one model card each), sorted."""
    folder = _weights_dir()
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def pretrained_info(name: str) -> dict[str, Any]:
    """The model card of pretrained model ``name`` (see :data:`CARD_FIELDS`).

    Raises:
        PretrainedError: naming the known models when ``name`` is not one of them, or when the card
            is incomplete.
    """
    known = pretrained_names()
    if name not in known:
        raise PretrainedError(f"no pretrained model {name!r}; the shipped ones: {', '.join(known) or 'none'}")
    path = _weights_dir() / f"{name}.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PretrainedError(f"model card {path} is unreadable: {err}") from None
    missing = [key for key in CARD_FIELDS if key not in card]
    if missing:
        raise PretrainedError(f"model card {path} lacks {', '.join(missing)}")
    return card


def pretrained(name: str, map_location: str | torch.device = "cpu") -> SceneModel:
    """The shipped model ``name`` trained, in eval mode: no training, no network.

    Args:
        name: one of :func:`pretrained_names` (``"spair"``, ``"gmair"``, ``"ssdir"``, ``"saccade"``,
            ``"mist"``).
        map_location: device of the weights.

    Raises:
        PretrainedError: an unknown name, a missing weights file, or one whose sha256 differs from
            the card's (corrupt or modified).
    """
    card = pretrained_info(name)
    path = _weights_dir() / card["weights_file"]
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PretrainedError(f"the weights of {name!r} are missing ({path}): {err}") from None
    if hashlib.sha256(data).hexdigest() != card["sha256"]:
        raise PretrainedError(
            f"{path} does not match the sha256 in its model card: the file is corrupt or was modified"
        )
    if card["model"] not in MODELS:
        raise PretrainedError(f"model card of {name!r} names an unknown model {card['model']!r}")
    cls = MODELS[card["model"]]
    model = cls(replace_config(cls.config_class(), card["model_config"]))
    try:
        model.load_state_dict(load_safetensors(data))
    except (RuntimeError, KeyError) as err:
        raise PretrainedError(f"{path} does not fit the config in its model card: {err}") from None
    model.step = int(card["steps"])
    model.set_step(model.step)
    return model.to(map_location).eval()
