"""Training supervised baselines (e.g. the ResNet-18 classifiers of the saccading paper).

One Adam step per batch on ``model.loss(images, **labels)``, on the shared
:class:`ppl_scenes.infer.trainer.Trainer` machinery: the labels come from the model's
``supervision(targets)`` (see :meth:`Trainer.prepare_data`), and batches, logging, checkpoints and
exact resume are the trainer's.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ppl_scenes.infer.trainer import Trainer


class SupervisedTrainer(Trainer):
    """Minimise a supervised model's own ``loss(images, **labels)`` (mean over the batch)."""

    def setup(self, example_batch: Tensor) -> None:
        self.params = list(self.model.parameters())
        self.optimizers = {"adam": self.make_optimizer(self.params, self.parameter_names())}

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        loss = self.model.loss(batch, **self.batch_supervision(batch.device))
        norm = self.step_optimizer("adam", loss, self.params)
        return {"loss": self.last_loss, "grad_norm": norm}
