"""Inference and training: the trainers (SVI, two-stage, MIST's lifting, supervised), :func:`fit`, posteriors.

Models name the trainer they need (``SceneModel.trainer``); :data:`TRAINERS` maps the names to the
classes and :func:`fit` builds the right one. Posterior sampling and summaries live in
:mod:`ppl_scenes.infer.posterior`.
"""

from ppl_scenes.infer.elbo import DeviceTraceELBO
from ppl_scenes.infer.fit import TRAINERS, fit
from ppl_scenes.infer.lifting import LiftingTrainer, TaskTrainer
from ppl_scenes.infer.supervised import SupervisedTrainer
from ppl_scenes.infer.svi import SVITrainer
from ppl_scenes.infer.trainer import (
    NonFiniteStep,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
)
from ppl_scenes.infer.two_stage import TwoStageTrainer

__all__ = [
    "TRAINERS",
    "DeviceTraceELBO",
    "LiftingTrainer",
    "NonFiniteStep",
    "SVITrainer",
    "SupervisedTrainer",
    "TaskTrainer",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TwoStageTrainer",
    "fit",
]
