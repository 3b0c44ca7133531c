"""Distributions over presence vectors ``z_pres`` that accept relaxed (Concrete) values.

SPAIR (Crawford & Pineau 2019, §4.2, §4.5) trains with Concrete relaxations of the Bernoulli
presence variables and scores them against the prior with the *Bernoulli* log-mass
``z log p + (1 - z) log(1 - p)``, evaluated at the relaxed value. Both the guide's distribution
(:class:`ConcreteBernoulli`) and the priors (:class:`CountPrior`, :class:`IndependentBernoulliPrior`) use
that form, so ``log p(z) - log q(z)`` is a single-sample estimate of ``-KL`` between Bernoullis that
reduces to the exact discrete term when ``z`` is 0/1. Their support is therefore the unit interval.
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from ppl_scenes.distributions.bernoulli import log_mass
from ppl_scenes.ops.constants import cached_constant, scalar
from ppl_scenes.ops.elementwise import clip

_CLAMP = 1e-6


def bernoulli_log_mass(value: Tensor, probs: Tensor) -> Tensor:
    """``value * log(probs) + (1 - value) * log(1 - probs)``, defined for relaxed values in [0, 1]."""
    return log_mass(value, clip(probs, _CLAMP, 1 - _CLAMP))


def logistic_parts(uniform: Tensor) -> tuple[Tensor, Tensor]:
    """``(log u, log(1 - u))`` of ``Uniform(0, 1)`` noise ``u`` (clamped away from 0 and 1): the
    logistic noise of a Concrete sample, computed once when many cells are sampled group by group."""
    u = uniform.clamp(_CLAMP, 1 - _CLAMP)
    return torch.log(u), torch.log1p(-u)


def concrete_sample(logits: Tensor, log_u: Tensor, log1m_u: Tensor, temperature: float | Tensor) -> Tensor:
    """The Concrete (relaxed Bernoulli) sample ``sigmoid((logits + log u - log(1 - u)) / temperature)``
    for the :func:`logistic_parts` of its noise (SPAIR §4.5)."""
    return torch.sigmoid((logits + log_u - log1m_u) / temperature)


class ConcreteBernoulli(TorchDistribution):
    """Concrete (relaxed Bernoulli) samples scored with the Bernoulli log-mass.

    ``rsample`` draws ``sigmoid((logit + logistic noise) / temperature)``; ``log_prob`` is
    :func:`bernoulli_log_mass`. This is the guide side of SPAIR's presence KL.

    Args:
        logits: log-odds of presence, any batch shape.
        temperature: Concrete temperature (lower is closer to discrete, with noisier gradients).
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits: Tensor, temperature: float | Tensor = 1.0, validate_args=None):
        self.logits = logits
        self.temperature = temperature
        super().__init__(logits.shape, validate_args=validate_args)

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def expand(self, batch_shape, _instance=None):
        return ConcreteBernoulli(self.logits.expand(batch_shape), self.temperature, validate_args=False)

    def relax(self, uniform: Tensor) -> Tensor:
        """The Concrete sample for given ``Uniform(0, 1)`` noise (shared by rsample and the guides)."""
        return concrete_sample(self.logits, *logistic_parts(uniform), self.temperature)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self.relax(torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return bernoulli_log_mass(value, self.probs)

    @property
    def mean(self) -> Tensor:
        return self.probs


class IndependentBernoulliPrior(TorchDistribution):
    """Independent Bernoulli(p) prior over a presence vector of ``num_cells`` cells (event shape).

    The documented alternative to :class:`CountPrior`: every cell is present with probability ``p``
    regardless of the others. ``sample`` returns hard 0/1 vectors; ``log_prob`` accepts relaxed values.
    """

    arg_constraints = {"probs": constraints.unit_interval}
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(self, probs: Tensor | float, num_cells: int, batch_shape=torch.Size(), validate_args=None):
        self.probs = torch.as_tensor(probs, dtype=torch.get_default_dtype())
        self.num_cells = int(num_cells)
        super().__init__(torch.Size(batch_shape), torch.Size([self.num_cells]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return IndependentBernoulliPrior(self.probs, self.num_cells, batch_shape, validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return torch.bernoulli(self.probs.expand(shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return bernoulli_log_mass(value, self.probs.to(value)).sum(-1)


class CountPrior(TorchDistribution):
    """SPAIR's prior over the presence vector (Crawford & Pineau 2019, §4.2 and supplement).

    The object count ``C`` follows a geometric distribution truncated to ``{0, ..., N}``,
    ``P(C = c) ∝ p^c`` (``p`` is the probability of one more object: near 1 is almost flat, small
    values press for few objects), and given ``C`` the presence vector is uniform over the vectors
    with ``C`` ones.

    ``log_prob`` uses the sequential (raster-order) form: after ``i`` cells holding ``k`` objects,
    ``P(z_i = 1 | z_<i) = Σ_C P(C | z_<i) (C - k) / (N - i)``, where
    ``P(C | z_<i) ∝ P(C) · binom(N - i, C - k) / binom(N, C)``. The counts ``k`` use rounded values
    so relaxed samples are scored like the discrete ones they stand for; each term is the Bernoulli
    log-mass at the (possibly relaxed) value. All cells are computed at once, without a loop.

    Args:
        success_prob: ``p`` in (0, 1).
        num_cells: ``N``, the length of the presence vector (event shape ``[N]``).
    """

    arg_constraints = {"success_prob": constraints.interval(0.0, 1.0)}
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(
        self, success_prob: Tensor | float, num_cells: int, batch_shape=torch.Size(), validate_args=None
    ):
        self.success_prob = torch.as_tensor(success_prob, dtype=torch.get_default_dtype())
        self.num_cells = int(num_cells)
        super().__init__(torch.Size(batch_shape), torch.Size([self.num_cells]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return CountPrior(self.success_prob, self.num_cells, batch_shape, validate_args=False)

    def count_log_probs(self) -> Tensor:
        """``log P(C = c)`` for ``c = 0..N``: the truncated geometric marginal of the count."""
        c = torch.arange(self.num_cells + 1, dtype=self.success_prob.dtype, device=self.success_prob.device)
        logits = c * torch.log(self.success_prob)
        return logits - torch.logsumexp(logits, 0)

    def conditional_probs(self, value: Tensor) -> Tensor:
        """``P(z_i = 1 | z_<i)`` for every cell, given (rounded) earlier values: ``value.shape``."""
        c, remaining_cells, log_binom_start = _count_constants(self.num_cells, value.dtype, value.device)
        hard = torch.gt(value, scalar(0.5, value), out=torch.empty_like(value))  # 0/1 in value's dtype
        k = torch.cumsum(hard, -1) - hard  # objects before cell i
        remaining_objects = c - k[..., None]  # [..., N, N+1]
        feasible = (remaining_objects >= 0) & (remaining_objects <= remaining_cells)
        r = remaining_objects.clamp(min=0)
        one = scalar(1.0, value)
        # log binom(N - i, C - k) - log binom(N, C), its C-only part precomputed
        log_binom = (
            log_binom_start - torch.lgamma(r + one) - torch.lgamma((remaining_cells - r).clamp(min=0) + one)
        )
        log_post = torch.where(feasible, log_binom + self.count_log_probs().to(value), -torch.inf)
        post = torch.softmax(log_post, -1)
        return (post * r / remaining_cells).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        counts = torch.distributions.Categorical(logits=self.count_log_probs()).sample(shape[:-1])
        # A uniformly random vector with `count` ones: rank cells by random keys, keep the first `count`.
        ranks = torch.rand(shape, device=counts.device).argsort(-1).argsort(-1)
        return (ranks < counts[..., None]).to(torch.get_default_dtype())

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return bernoulli_log_mass(value, self.conditional_probs(value)).sum(-1)


@cached_constant
def _count_constants(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """:meth:`CountPrior.conditional_probs`' constants for ``n`` cells: the counts ``C = 0..N``
    ``[N+1]``, the remaining cells ``N - i`` ``[N, 1]`` and ``log (N - i)! - log binom(N, C)``."""
    c = torch.arange(n + 1, dtype=dtype, device=device)
    remaining_cells = (n - torch.arange(n, dtype=dtype, device=device))[:, None]
    log_n_factorial = torch.lgamma(torch.tensor(n + 1.0, dtype=dtype, device=device))
    log_binom_all = log_n_factorial - torch.lgamma(c + 1) - torch.lgamma(n - c + 1)
    return c, remaining_cells, torch.lgamma(remaining_cells + 1) - log_binom_all


class Presampled(TorchDistribution):
    """A distribution whose (reparameterised) sample was drawn beforehand.

    Guides that must sample cells in a particular order (SPAIR's wavefront over lateral connections)
    compute every sample with explicit noise first and then register the site with this wrapper:
    ``rsample`` returns ``value`` -- a differentiable function of the base distribution's parameters --
    and ``log_prob`` is the base distribution's. Since ``value`` was drawn from ``base`` by its own
    reparameterisation, the Pyro site is exactly a reparameterised sample of ``base``.
    """

    arg_constraints: dict = {}

    def __init__(self, base: TorchDistribution, value: Tensor, validate_args=None):
        self.base = base
        self.value = value
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self):
        return self.base.has_rsample

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape != torch.Size():
            raise ValueError("Presampled holds one sample; sample_shape must be empty")
        return self.value

    def sample(self, sample_shape=torch.Size()):
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)
