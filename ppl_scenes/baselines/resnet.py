"""The saccading paper's baselines (Ramapuram et al. 2019, Table 1): ResNet-18 classifiers.

* the whole image through a ResNet-18 (torchvision's, trained from scratch);
* the image cut into a ``g x g`` grid of crops, each through one shared ResNet-18, the crops'
  outputs summed and a dense head on the sum (Table 1 top, "resnet18 - 144 crops").

Both solve the same image-level tasks as :class:`ppl_scenes.VariationalSaccading` (``"identify"``:
which digits are present; ``"sum"``: their sum), keep the library's surface (``parse`` puts the
prediction in ``image_labels``; save/load; ``ppl-scenes train resnet``) and train with
:class:`ppl_scenes.infer.supervised.SupervisedTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18

from ppl_scenes.checks import check_choice, check_int_fields
from ppl_scenes.models.saccade import TASKS, ImageLabelModel, predicted_labels
from ppl_scenes.scene import SceneParse


@dataclass
class ResNetConfig:
    """Settings of :class:`ResNetClassifier`.

    Attributes:
        channels: image channels.
        task: ``"identify"`` or ``"sum"`` (as :class:`ppl_scenes.models.saccade.SaccadeConfig`).
        num_classes, max_sum: output sizes of the two tasks.
        crop_grid: 0 for the whole image; ``g`` for a ``g x g`` grid of crops with summed outputs.
        crop_features: size of each crop's output before the sum and the dense head.
    """

    channels: int = 1
    task: str = "identify"
    num_classes: int = 10
    max_sum: int = 18
    crop_grid: int = 0
    crop_features: int = 256

    def __post_init__(self):
        check_choice(self.channels, (1, 3), "channels")
        check_choice(self.task, TASKS, "task")
        check_int_fields(self, ("num_classes", "max_sum", "crop_features"))
        check_int_fields(self, ("crop_grid",), minimum=0)

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task == "identify" else self.max_sum + 1


def _resnet18(channels: int, outputs: int) -> nn.Module:
    net = resnet18(num_classes=outputs)
    if channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


class ResNetClassifier(ImageLabelModel):
    """ResNet-18 on the whole image, or on a grid of crops with summed outputs (module docstring).

    Args:
        config: a :class:`ResNetConfig` (defaults when None).
        **overrides: individual config fields.
    """

    name: ClassVar[str] = "resnet"
    config_class: ClassVar[type] = ResNetConfig
    default_dataset: ClassVar[str] = "cluttered"
    default_train: ClassVar[dict[str, Any]] = {"steps": 5000, "batch_size": 32, "lr": 1e-3}

    #: Plain supervised training (:class:`ppl_scenes.infer.SupervisedTrainer`).
    trainer: ClassVar[str] = "supervised"

    def __init__(self, config: ResNetConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        if c.crop_grid:
            self.net = _resnet18(c.channels, c.crop_features)
            self.head = nn.Linear(c.crop_features, c.num_outputs)
        else:
            self.net = _resnet18(c.channels, c.num_outputs)
            self.head = None

    def min_image_size(self) -> tuple[int, int]:
        side = 8 * max(1, self.config.crop_grid)
        return (side, side)

    def logits(self, x: Tensor) -> Tensor:
        """``[B, num_outputs]`` class scores."""
        g = self.config.crop_grid
        if not g:
            return self.net(x)
        b, c, h, w = x.shape
        ch, cw = h // g, w // g
        crops = x[:, :, : ch * g, : cw * g].reshape(b, c, g, ch, g, cw).permute(0, 2, 4, 1, 3, 5)
        features = self.net(crops.reshape(b * g * g, c, ch, cw)).view(b, g * g, -1)
        return self.head(features.sum(1))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean over the batch of the negative log-likelihood of ``y`` (Bernoulli or categorical)."""
        logits = self.logits(self.check_input(x))
        if self.config.task == "identify":
            return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum") / len(x)
        return F.cross_entropy(logits, y.long())

    def parse(self, x: Tensor) -> SceneParse:
        """The prediction in ``image_labels``; no objects (``boxes`` are empty)."""
        x = self.check_input(x)
        with self.evaluating():
            logits = self.logits(x)
        empty = [x.new_zeros(0, 4) for _ in range(len(x))]
        return SceneParse(
            boxes=empty,
            scores=[x.new_zeros(0) for _ in range(len(x))],
            image_labels=predicted_labels(self.config.task, logits),
        )
