"""Training SVI models: one ELBO step per batch, on the shared :class:`Trainer` machinery."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from ppl_scenes.infer.trainer import NonFiniteStep, TrainConfig, Trainer


class SVITrainer(Trainer):
    """Stochastic variational inference: ``loss = -ELBO`` of ``model.model`` under ``model.guide``.

    The ELBO's ``differentiable_loss`` drives a torch Adam optimiser directly (rather than
    ``pyro.infer.SVI``), which gives per-module learning rates, gradient clipping, skipping of
    non-finite steps and exact optimiser checkpoints. Parameters are the model's own plus any
    ``pyro.param`` a swapped-in guide creates.

    Args:
        elbo: a Pyro ELBO instance (default ``Trace_ELBO`` with the config's ``num_particles``).
        **kwargs: as :class:`Trainer`.
    """

    def __init__(self, model, config: TrainConfig | None = None, elbo=None, **kwargs):
        super().__init__(model, config, **kwargs)
        self.elbo = elbo or Trace_ELBO(num_particles=self.config.num_particles, vectorize_particles=False)
        self.params: list[torch.nn.Parameter] = []
        #: ``id(param) -> name`` of every optimised parameter, ``pyro.param`` sites included (set by setup)
        self.param_names: dict[int, str] = {}

    def loss(self, batch: Tensor) -> Tensor:
        """``-ELBO`` of a batch (differentiable); a supervised model also gets its labels (``y=...``)."""
        supervision = self.batch_supervision(batch.device)
        return self.elbo.differentiable_loss(self.model.model, self.model.guide, batch, **supervision)

    def setup(self, example_batch: Tensor) -> None:
        names = self.parameter_names()
        params = list(self.model.parameters())
        seen = {id(p) for p in params}
        # the trace is a forward pass: it must leave the model's buffers (batch-norm statistics) as
        # they were, or a given, already calibrated network would drift before training starts
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        with poutine.trace(param_only=True) as capture:
            self.loss(example_batch)
        with torch.no_grad():
            for name, b in self.model.named_buffers():
                b.copy_(buffers[name])
        for site in capture.trace.nodes.values():
            p = site["value"].unconstrained()
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
                names[id(p)] = site["name"]
        self.params = params
        self.param_names = names
        self.optimizers = {"adam": self.make_optimizer(params, names)}

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        try:
            loss = self.loss(batch)
        except ValueError as err:
            # With argument validation on (torch's default), a NaN or Inf reaching a distribution
            # surfaces as "... but found invalid values: tensor([nan, ...])" rather than as a NaN loss.
            if _is_non_finite_validation_error(err):
                raise NonFiniteStep(f"non-finite distribution parameter: {err}") from err
            raise
        grad_norm = self.step_optimizer("adam", loss, self.params)
        value = loss.item() / batch.shape[0]
        return {"loss": value if math.isfinite(value) else float("nan"), "grad_norm": grad_norm}


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
        model: a scene model (its ``trainer_class`` decides how: SVI for the variational models).
        data: a dataset of ``(image, target)`` pairs, or an image tensor ``[N, C, H, W]``.
        steps: number of steps (default: the model's ``default_train`` or :class:`TrainConfig`'s).
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
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train_kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; valid settings: {', '.join(sorted(valid))}")
    settings = {**getattr(model, "default_train", {}), **train_kwargs}
    if steps is not None:
        settings["steps"] = steps
    try:
        config = TrainConfig(**settings)
    except TypeError as err:
        raise ValueError(f"unknown training setting: {err}") from None
    trainer_class = getattr(model, "trainer_class", SVITrainer)
    trainer = trainer_class(model, config, out=out, eval_fn=eval_fn, progress=progress, run_info=run_info)
    trainer.fit(data, resume=resume)
    return model


def _is_non_finite_validation_error(err: ValueError) -> bool:
    text = str(err)
    if "found invalid values" not in text:
        return False
    values = text.rsplit("found invalid values", 1)[1].lower()
    return "nan" in values or "inf" in values
