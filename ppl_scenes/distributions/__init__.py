"""Custom Pyro distributions: SPAIR's count prior, relaxed presence variables, a mixture what-prior."""

from ppl_scenes.distributions.mixture import GaussianMixtureWhatPrior
from ppl_scenes.distributions.presence import (
    ConcreteBernoulli,
    CountPrior,
    IndependentBernoulliPrior,
    Presampled,
    bernoulli_log_mass,
)

__all__ = [
    "ConcreteBernoulli",
    "CountPrior",
    "GaussianMixtureWhatPrior",
    "IndependentBernoulliPrior",
    "Presampled",
    "bernoulli_log_mass",
]
