"""Training any scene model with the trainer it names: the table of trainers and :func:`fit`."""

from __future__ import annotations

import dataclasses

from ppl_scenes.infer.lifting import LiftingTrainer, TaskTrainer
from ppl_scenes.infer.supervised import SupervisedTrainer
from ppl_scenes.infer.svi import SVITrainer
from ppl_scenes.infer.trainer import TrainConfig, Trainer
from ppl_scenes.infer.two_stage import TwoStageTrainer
from ppl_scenes.models.base import SceneModel

__all__ = ["TRAINERS", "fit", "train_config"]

#: Trainer classes by the name a model gives in ``SceneModel.trainer``.
TRAINERS: dict[str, type[Trainer]] = {
    "svi": SVITrainer,
    "two_stage": TwoStageTrainer,
    "lifting": LiftingTrainer,
    "task": TaskTrainer,
    "supervised": SupervisedTrainer,
}


def fit(
    model,
    data,
    steps: int | None = None,
    out=None,
    resume: bool = False,
    eval_fn=None,
    progress: bool = True,
    run_info=None,
    **train_kwargs,
):
    """Train ``model`` on ``data`` with its own trainer and its default training settings.

    Args:
        model: a scene model (its ``trainer`` names how, a key of :data:`TRAINERS`: SVI for the
            variational models).
        data: a dataset of ``(image, target)`` pairs, or an image tensor ``[N, C, H, W]``.
        steps: number of steps (default: the model's ``default_train`` or :class:`TrainConfig`'s, but
            none with a ``minutes`` budget: see :func:`train_config`).
        out: optional run directory for config, checkpoints and metrics.
        resume: continue from ``out``'s checkpoint.
        eval_fn: optional ``eval_fn(model) -> dict`` for periodic and final evaluation.
        progress: show a progress bar.
        run_info: extra entries for the run's ``config.json`` (e.g. the data it was trained on).
        **train_kwargs: any other :class:`TrainConfig` field.

    Returns:
        the trained model (eval mode).

    Raises:
        ValueError: on an unknown or invalid training setting, or bad data.
        ppl_scenes.runs.RunDirError: when ``out`` cannot be used (not empty without ``resume``, ...).
        ppl_scenes.infer.trainer.TrainingDiverged: after ``max_bad_steps`` non-finite steps in a row.
    """
    if not isinstance(model, SceneModel):
        raise ValueError(f"fit trains a SceneModel, got {type(model).__name__}")
    if model.trainer not in TRAINERS:
        raise ValueError(
            f"{type(model).__name__} names an unknown trainer {model.trainer!r}; known: {sorted(TRAINERS)}"
        )
    config = train_config(model, steps, **train_kwargs)
    trainer = TRAINERS[model.trainer](
        model, config, out=out, eval_fn=eval_fn, progress=progress, run_info=run_info
    )
    trainer.fit(data, resume=resume)
    return model


def train_config(model, steps: int | None = None, **train_kwargs) -> TrainConfig:
    """The :class:`TrainConfig` of a run of ``model`` (a scene model or its class): its
    ``default_train`` with ``steps`` and ``train_kwargs`` on top.

    A ``minutes`` budget given without ``steps`` (neither the argument nor a ``steps`` setting) is the
    run's only limit: the model's default steps do not cap it (``steps=0``: no step limit), so
    ``minutes=25`` trains for 25 minutes however many steps that is. Given both, the run stops at
    whichever comes first. What depends on the run's length follows the budget that is set: the
    learning-rate decay (``TrainConfig.lr_decay_from``) the larger of the steps' and the minutes'
    share; the models' annealed priors (SPAIR's ``pres_anneal_steps``...) and ``eval_every``,
    ``log_every`` and ``checkpoint_every`` count steps from the start whatever the budget.

    Raises:
        ValueError: on an unknown or invalid training setting.
    """
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train_kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; valid settings: {', '.join(sorted(valid))}")
    settings = {**model.default_train, **train_kwargs}
    if steps is not None:
        settings["steps"] = steps
    elif "steps" not in train_kwargs and train_kwargs.get("minutes"):
        settings["steps"] = 0  # a minutes budget alone: the model's default steps do not cap it
    try:
        return TrainConfig(**settings)
    except TypeError as err:
        raise ValueError(f"unknown training setting: {err}") from None
