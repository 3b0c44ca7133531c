"""Custom Pyro distributions: SPAIR's count prior and relaxed presence variables."""

from ppl_scenes.distributions.presence import (
    ConcreteBernoulli,
    CountPrior,
    IndependentBernoulliPrior,
    Presampled,
    bernoulli_log_mass,
)

__all__ = ["ConcreteBernoulli", "CountPrior", "IndependentBernoulliPrior", "Presampled", "bernoulli_log_mass"]
