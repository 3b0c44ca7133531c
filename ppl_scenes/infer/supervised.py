"""Training supervised baselines (e.g. the ResNet-18 classifiers of the saccading paper).

One Adam step per batch on ``model.loss(images, **labels)``, on the shared
:class:`ppl_scenes.infer.trainer.Trainer` machinery: the labels come from the model's
``supervision(targets)`` (see :meth:`Trainer.prepare_data`), and batches, logging, checkpoints and
exact resume are the trainer's.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ppl_scenes.infer.trainer import NonFiniteStep, Trainer


class SupervisedTrainer(Trainer):
    """Minimise a supervised model's own ``loss(images, **labels)`` (mean over the batch)."""

    def setup(self, example_batch: Tensor) -> None:
        self.params = list(self.model.parameters())
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.optimizers = {"adam": self.make_optimizer(self.params, names)}

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        opt = self.optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss = self.model.loss(batch, **self.batch_supervision(batch.device))
        if not math.isfinite(loss.item()):
            raise NonFiniteStep("non-finite loss")
        loss.backward()
        norm = self.clip_and_check(self.params)
        opt.step()
        return {"loss": loss.item(), "grad_norm": norm}
