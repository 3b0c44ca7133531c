"""Training a model in two stages: a supervised detector, then SVI with the detector frozen (SSDIR).

The model is a :class:`ppl_scenes.models.base.DetectorStage`. Steps ``1 .. model.detector_steps``
minimise its ``detector_loss(images, **targets)`` (its ``supervision(targets)`` gives the padded
boxes and labels) with an optimiser of the detector's own, at the learning rate times
``model.detector_lr_factor(step)``. At the first step after them the trainer lets the model
recalibrate the detector on the last ``model.calibration_batch_count()`` training batches of stage 1
(``model.calibrate_detector(batches)``: SSDIR recomputes its batch-norm statistics), calls
``model.freeze_detector()``, writes the detector's weights to ``RUN_DIR/detector.safetensors`` and
from then on takes ELBO steps over every other parameter. The stage follows from the step alone, so a
resumed run picks up in the right stage.

A minutes budget (``TrainConfig.minutes``) is shared between the stages in proportion to their steps:
stage 1 may use ``minutes * detector_steps / (detector_steps + svi_steps)`` of it (its share, counted
from the run's start, resumes included), stage 2 the rest, including what stage 1 left unused. The
SVI stage's steps are ``steps - detector_steps`` with a step budget, and without one (``steps=0``, a
minutes budget alone) those of the model's default run: its ``default_train`` steps less its
config's default ``detector_steps`` (SSDIR: 11,500 - 9,500 = 2,000), at least 1. A stage 1 that
reaches its share before its last step ends there: its last step's record says
``stage_stop_reason: "minutes"``, and the run jumps to step ``detector_steps`` (a checkpoint is
written there), so stage 2 takes its steps ``detector_steps + 1, ...`` as in a run that finished
stage 1, and the step still tells the stage. The metrics then skip the detector steps not taken.
"""

from __future__ import annotations

from typing import Any

import pyro
from torch import Tensor

from ppl_scenes.infer.config import TrainConfig
from ppl_scenes.infer.optim import scale_learning_rates
from ppl_scenes.infer.svi import SVITrainer
from ppl_scenes.models.base import DetectorStage
from ppl_scenes.rundir import DETECTOR_FILE

__all__ = ["DETECTOR_FILE", "TwoStageTrainer"]


class TwoStageTrainer(SVITrainer):
    """Supervised detector steps, then SVI steps; see the module docstring.

    The model must be a :class:`~ppl_scenes.models.base.DetectorStage`.
    """

    def __init__(self, model, *args, **kwargs):
        if not isinstance(model, DetectorStage):
            raise ValueError(f"the two-stage trainer needs a DetectorStage model, got {type(model).__name__}")
        super().__init__(model, *args, **kwargs)

    @property
    def detector_steps(self) -> int:
        """Stage 1's length (the model's)."""
        return self.model.detector_steps

    @property
    def svi_steps(self) -> int:
        """Stage 2's length in the budget's reckoning (see the module docstring)."""
        if self.config.steps:
            return max(self.config.steps - self.detector_steps, 0)
        defaults = self.model.config_class()
        total = self.model.default_train.get("steps", TrainConfig.steps)
        return max(total - int(getattr(defaults, "detector_steps", 0)), 1)

    def detector_seconds(self) -> float:
        """Stage 1's share of the minutes budget, in seconds (infinite without a minutes budget)."""
        if not self.config.minutes:
            return float("inf")
        share = self.detector_steps / (self.detector_steps + self.svi_steps) if self.detector_steps else 0.0
        return self.config.minutes * 60 * share

    def stage_over(self) -> bool:
        """Stage 1 has steps left but has used its share of the minutes budget."""
        return self.step < self.detector_steps and self.elapsed >= self.detector_seconds()

    def next_stage(self) -> None:
        """End stage 1 early: jump to its last step, so that the next step is the SVI stage's first."""
        self.step = self.detector_steps

    def gradient_reduction(self, name: str) -> str:
        """The detector's loss is a mean over the batch, the ELBO a sum."""
        return "mean" if name == "detector" else "sum"

    def loss(self, batch: Tensor) -> Tensor:
        """``-ELBO`` of a batch; the labels are the detector's, not the model's."""
        with pyro.validation_enabled(self.validate):
            return self.elbo.differentiable_loss(self.model.model, self.model.guide, batch)

    def setup(self, example_batch: Tensor) -> None:
        super().setup(example_batch)  # traces the ELBO once to find every parameter and its name
        detector = list(self.model.detector.parameters())
        frozen = {id(p) for p in detector}
        self.detector_params = detector
        self.params = [p for p in self.params if id(p) not in frozen]
        self.optimizers = {
            "detector": self.make_optimizer(detector, self.param_names),
            "adam": self.make_optimizer(self.params, self.param_names),
        }

    def calibration_batches(self):
        """The last ``config.calibration_batches`` training batches of stage 1 (a pure function of the
        seed, so a resumed run calibrates on the same images)."""
        count = min(self.model.calibration_batch_count(), self.detector_steps)
        device = next(iter(self.detector_params)).device
        for step in range(self.detector_steps - count + 1, self.detector_steps + 1):
            yield self.images[self.batch_indices(step, len(self.images))].to(device)

    def schedule_detector_lr(self) -> None:
        """Set the detector's learning rates for this step (``model.detector_lr_factor``).

        Each parameter group keeps its configured rate as ``initial_lr`` (saved with the optimiser, so a
        resumed run scales the same base), as torch's schedulers do.
        """
        factor = self.model.detector_lr_factor(self.step)
        factor *= self.lr_decay_factor(self.step)  # the run's own decay (TrainConfig.lr_decay_from) too
        scale_learning_rates([self.optimizers["detector"]], factor)

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        if self.step < self.detector_steps:
            self.schedule_detector_lr()
            loss, parts = self.model.detector_loss(batch, **self.batch_supervision(batch.device))
            norm = self.step_optimizer("detector", loss, self.detector_params)
            return {"loss": self.last_loss, **parts, "grad_norm": norm, "stage": 1}
        if any(p.requires_grad for p in self.detector_params):
            self.model.calibrate_detector(self.calibration_batches())
            self.model.freeze_detector()
            if self.out is not None and (self.distributed is None or self.distributed.main):
                self.model.save_detector(self.out / DETECTOR_FILE)
        return {**super().train_step(batch), "stage": 2}
