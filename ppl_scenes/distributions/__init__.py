"""Custom Pyro distributions: SPAIR's count prior, relaxed presence and categories, a mixture what-prior."""

from ppl_scenes.distributions.bernoulli import Bernoulli
from ppl_scenes.distributions.categorical import (
    ConcreteCategorical,
    OneHotCategoricalPrior,
    categorical_log_mass,
)
from ppl_scenes.distributions.mixture import CategoryWeightedNormal, GaussianMixtureWhatPrior
from ppl_scenes.distributions.normal import Normal
from ppl_scenes.distributions.presence import (
    ConcreteBernoulli,
    CountPrior,
    IndependentBernoulliPrior,
    Presampled,
    bernoulli_log_mass,
    concrete_sample,
    logistic_parts,
)

__all__ = [
    "Bernoulli",
    "CategoryWeightedNormal",
    "ConcreteBernoulli",
    "ConcreteCategorical",
    "CountPrior",
    "GaussianMixtureWhatPrior",
    "IndependentBernoulliPrior",
    "Normal",
    "OneHotCategoricalPrior",
    "Presampled",
    "bernoulli_log_mass",
    "categorical_log_mass",
    "concrete_sample",
    "logistic_parts",
]
