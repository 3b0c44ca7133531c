"""Categorical variables over one-hot vectors that accept relaxed (Gumbel-softmax) values.

GMAIR (Zhu et al. 2021, Appendix A) trains its one-hot cluster variable ``z_cat`` through the
Gumbel-softmax relaxation (Jang et al. 2017). As with SPAIR's presence (:mod:`.presence`), both sides of
the KL use the *categorical* log-mass ``sum_k z_k log pi_k`` evaluated at the relaxed value, so
``log q(z) - log p(z)`` is a single-sample estimate of ``KL(Cat(q) || Cat(p))`` that reduces to the exact
discrete term when ``z`` is one-hot. Their support is the probability simplex.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

_CLAMP = 1e-6


def categorical_log_mass(value: Tensor, logits: Tensor) -> Tensor:
    """``sum_k value_k log softmax(logits)_k`` over the last dim, defined for relaxed one-hot values."""
    return (value * F.log_softmax(logits, -1)).sum(-1)


class OneHotCategoricalPrior(TorchDistribution):
    """A categorical prior over one-hot vectors that also scores relaxed values.

    ``sample`` returns hard one-hot vectors; ``log_prob`` is :func:`categorical_log_mass` (unlike
    ``torch``'s ``OneHotCategorical``, which scores only the argmax of a relaxed value). The model side
    of GMAIR's ``z_cat`` KL, ``Cat(1/K, ..., 1/K)`` by default.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.simplex

    def __init__(self, logits: Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    @classmethod
    def uniform(cls, num_categories: int, batch_shape=(), device=None) -> OneHotCategoricalPrior:
        """``Cat(1/K, ..., 1/K)`` with the given batch shape."""
        return cls(torch.zeros(*batch_shape, num_categories, device=device))

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, -1)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(*batch_shape, self.logits.shape[-1])
        return OneHotCategoricalPrior(logits, validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        index = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
        return F.one_hot(index, shape[-1]).to(self.logits.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return categorical_log_mass(value, self.logits)

    @property
    def mean(self) -> Tensor:
        return self.probs


class ConcreteCategorical(OneHotCategoricalPrior):
    """Gumbel-softmax samples over ``K`` categories, scored with the categorical log-mass.

    ``rsample`` draws ``softmax((logits + Gumbel noise) / temperature)``; ``log_prob`` is
    :func:`categorical_log_mass`. The guide side of GMAIR's ``z_cat`` KL.

    With ``expected_log_mass``, ``log_prob`` ignores the value and returns the log-mass's expectation
    under the categorical, ``sum_k pi_k log pi_k`` (minus its entropy). Against the uniform prior, whose
    log-mass is ``-log K`` at every point of the simplex, ``log q - log p`` is then the exact
    ``KL(Cat(pi) || Cat(1/K))`` (GMAIR's eq. 9) instead of its single relaxed-sample estimate, which is
    biased low at a finite temperature.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities.
        temperature: Gumbel-softmax temperature (lower is closer to one-hot).
        expected_log_mass: score with the expected log-mass instead of the log-mass at the value.
    """

    has_rsample = True

    def __init__(
        self,
        logits: Tensor,
        temperature: float | Tensor = 1.0,
        validate_args=None,
        expected_log_mass: bool = False,
    ):
        self.temperature = temperature
        self.expected_log_mass = expected_log_mass
        super().__init__(logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(*batch_shape, self.logits.shape[-1])
        return ConcreteCategorical(
            logits, self.temperature, validate_args=False, expected_log_mass=self.expected_log_mass
        )

    def log_prob(self, value: Tensor) -> Tensor:
        if not self.expected_log_mass:
            return super().log_prob(value)
        expected = categorical_log_mass(self.probs, self.logits)
        return expected.expand(torch.broadcast_shapes(expected.shape, value.shape[:-1]))

    def relax(self, uniform: Tensor) -> Tensor:
        """The relaxed sample for given ``Uniform(0, 1)`` noise of the logits' shape."""
        u = uniform.clamp(_CLAMP, 1 - _CLAMP)
        gumbel = -torch.log(-torch.log(u))
        return torch.softmax((self.logits + gumbel) / self.temperature, -1)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self.relax(torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device))
