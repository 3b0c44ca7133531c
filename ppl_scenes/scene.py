"""What a scene model reports, and the capability that scoring reads off it (no model is imported here).

:class:`SceneParse` is the output of every model's ``parse``; :class:`RankedParse` marks a model whose
``parse`` can keep low-score candidates (for average precision) and names the score at which an object
counts as present; :class:`TargetedParse` one whose ``parse`` needs inputs from the targets. The
scoring functions (:mod:`ppl_scenes.metrics.scoring`) work on these alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["RankedParse", "SceneParse", "TargetedParse"]


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
