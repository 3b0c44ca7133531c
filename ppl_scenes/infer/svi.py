"""Training SVI models: one ELBO step per batch, on the shared :class:`Trainer` machinery."""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from ppl_scenes.infer.elbo import DeviceTraceELBO
from ppl_scenes.infer.trainer import NonFiniteStep, TrainConfig, Trainer
from ppl_scenes.models.base import Variational


class SVITrainer(Trainer):
    """Stochastic variational inference: ``loss = -ELBO`` of ``model.model`` under ``model.guide``.

    The ELBO's ``differentiable_loss`` drives a torch Adam optimiser directly (rather than
    ``pyro.infer.SVI``), which gives per-module learning rates, gradient clipping, skipping of
    non-finite steps and exact optimiser checkpoints. Parameters are the model's own plus any
    ``pyro.param`` a swapped-in guide creates.

    Argument validation of Pyro and torch distributions is off inside the step (``validate``,
    default False): each check is a host synchronisation and a handful of operations per site, and a
    NaN or Inf still surfaces as a non-finite loss or gradient, which skips the step all the same.

    Args:
        elbo: a Pyro ELBO instance (default :class:`DeviceTraceELBO`, Pyro's ``Trace_ELBO`` without
            its host synchronisations, with the config's ``num_particles``).
        **kwargs: as :class:`Trainer`.
    """

    #: Check distribution arguments and sampled values during the step (Pyro's validation).
    validate: bool = False

    def __init__(self, model, config: TrainConfig | None = None, elbo=None, **kwargs):
        if not isinstance(model, Variational):
            raise ValueError(f"SVI trains a Variational model (model/guide pair), got {type(model).__name__}")
        super().__init__(model, config, **kwargs)
        self.elbo = elbo or DeviceTraceELBO(self.config.num_particles, vectorize_particles=False)
        self.params: list[torch.nn.Parameter] = []
        #: ``id(param) -> name`` of every optimised parameter, ``pyro.param`` sites included (set by setup)
        self.param_names: dict[int, str] = {}

    def gradient_reduction(self, name: str) -> str:
        """The ELBO sums over the batch: data-parallel ranks sum their gradients."""
        return "sum"

    def loss(self, batch: Tensor) -> Tensor:
        """``-ELBO`` of a batch (differentiable); a supervised model also gets its labels (``y=...``)."""
        supervision = self.batch_supervision(batch.device)
        with pyro.validation_enabled(self.validate):
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
            if not _is_non_finite_validation_error(err):
                raise
            if self.distributed is None:
                raise NonFiniteStep(f"non-finite distribution parameter: {err}") from err
            loss = None  # the other ranks skip this step with this one (in step_optimizer)
        grad_norm = self.step_optimizer("adam", loss, self.params)
        value = self.last_loss / batch.shape[0]  # read back with the gradient norm
        return {"loss": value if math.isfinite(value) else float("nan"), "grad_norm": grad_norm}


def _is_non_finite_validation_error(err: ValueError) -> bool:
    text = str(err)
    if "found invalid values" not in text:
        return False
    values = text.rsplit("found invalid values", 1)[1].lower()
    return "nan" in values or "inf" in values
