"""What a scene model reports, and the capability that scoring reads off it (no model is imported here).

:class:`SceneParse` is the output of every model's ``parse``; :class:`RankedParse` marks a model whose
``parse`` can keep low-score candidates (for average precision) and names the score at which an object
counts as present; :class:`TargetedParse` one whose ``parse`` needs inputs from the targets;
:class:`TiledParse`, :class:`ImageLevel` and :class:`Categorised` tell how images are parsed into
files (:mod:`ppl_scenes.files`). The scoring functions (:mod:`ppl_scenes.metrics.scoring`) work on
these alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Categorised", "ImageLevel", "RankedParse", "SceneParse", "TargetedParse", "TiledParse"]


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


class RankedParse(ABC):
    """Capability: ``parse(x, score_threshold=t)`` reports every candidate scoring at least ``t``.

    Average precision needs a ranked list, so the scorers parse with a low threshold and count the
    objects scoring at least :attr:`presence_threshold` as present.
    """

    @property
    @abstractmethod
    def presence_threshold(self) -> float:
        """The score from which ``parse`` (by default) reports an object as present."""


class TargetedParse(ABC):
    """Capability: ``parse`` needs keyword arguments read from the scenes' targets (not their answers).

    A MIST told the number of instances (``count_from_labels``) parses each scene with its true count.
    """

    @abstractmethod
    def parse_options(self, targets: list[dict[str, Any]]) -> dict[str, Any]:
        """The keyword arguments of ``parse`` for a batch of scenes with these targets."""

    @property
    @abstractmethod
    def requires_targets(self) -> bool:
        """Whether ``parse`` cannot run without them (images with no targets cannot be parsed)."""


class TiledParse(ABC):
    """Capability: images are parsed in tiles of :attr:`parse_tile` pixels (overlapping, merged).

    A model whose input size is fixed (:attr:`fixed_input`: SSDIR's detector) parses larger images
    in tiles and smaller ones padded; one that reports a fixed number of objects per input (MIST's
    ``K`` patches) is given tiles of a few object sides so that large images get more objects.
    """

    #: Whether ``parse`` accepts inputs of exactly :attr:`parse_tile` pixels only.
    fixed_input: bool = False

    @property
    @abstractmethod
    def parse_tile(self) -> tuple[int, int]:
        """``(H, W)`` of a tile."""


class ImageLevel(ABC):  # noqa: B024 (a marker: it promises no method)
    """Capability marker: the model predicts per image (``SceneParse.image_labels``); its boxes are
    glimpses, not objects, so there is nothing to detect or count (the saccade model, ResNet-18)."""


class Categorised(ABC):
    """Capability: each reported object carries a category in ``SceneParse.labels`` (GMAIR's cluster,
    SSDIR's detector class, MIST's class)."""

    @property
    @abstractmethod
    def num_categories(self) -> int:
        """How many categories ``labels`` takes (1: the labels carry no information)."""
