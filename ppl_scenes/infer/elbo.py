"""An ELBO whose loss never leaves the device: Pyro's ``Trace_ELBO`` surrogate, without host syncs."""

from __future__ import annotations

from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import is_identically_zero
from torch import Tensor

__all__ = ["DeviceTraceELBO"]


class DeviceTraceELBO(Trace_ELBO):
    """``Trace_ELBO`` whose :meth:`differentiable_loss` reads no value back to the host (issue 36).

    Pyro's ``Trace_ELBO.differentiable_loss`` turns every sample site's ``log_prob_sum`` into a Python
    float (``.item()``, a host synchronisation per site: 9 to 13 per step for this package's models)
    to add up the ELBO's value, and checks the loss and its gradient for NaN (two more). This one
    returns the surrogate loss itself: the same terms in the same order (model sites' log
    probabilities, minus each guide site's entropy term, plus score-function terms for guide sites
    without ``rsample``), so its gradient is Pyro's exactly and its value equals Pyro's to float32
    rounding. A NaN still surfaces: the trainer checks the loss and the gradient norm once per step.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        """``-ELBO`` (its surrogate, differentiable), averaged over ``num_particles`` particles."""
        loss = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particle = self._surrogate_loss_particle(model_trace, guide_trace)
            if self.num_particles != 1:
                particle = particle / self.num_particles
            loss = particle if loss is None else loss + particle
        return loss

    @staticmethod
    def _surrogate_loss_particle(model_trace, guide_trace) -> Tensor:
        terms = [site["log_prob_sum"] for site in model_trace.nodes.values() if site["type"] == "sample"]
        surrogate = 0.0 if not terms else terms[0]  # 0.0 + a tensor would convert the number every step
        for term in terms[1:]:
            surrogate = surrogate + term
        log_r = None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return -surrogate
