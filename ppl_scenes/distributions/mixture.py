"""A learnable Gaussian-mixture prior over appearance codes ``z_what``.

GMAIR (Zhu et al. 2021) replaces the standard Normal prior on ``z_what`` with a mixture whose
components stand for object categories. :class:`GaussianMixtureWhatPrior` is that prior in the form
SPAIR's ``what_prior`` argument takes (``fn(batch_shape) -> distribution`` with event shape ``[A]``),
with its means and scales learned with the rest of the model::

    SPAIR(what_prior=GaussianMixtureWhatPrior(num_components=10, dim=50))
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn

from ppl_scenes.checks import check_positive_int
from ppl_scenes.distributions.normal import Normal


class GaussianMixtureWhatPrior(nn.Module):
    """``p(z) = (1 / K) sum_k N(z; mu_k, diag(sigma_k^2))`` with learnable ``mu_k`` and ``sigma_k``.

    The weights are uniform, as GMAIR's categorical prior is. Means start as Normal draws with standard
    deviation ``init_spread`` (so components do not begin identical) and scales at ``init_scale``.

    Args:
        num_components: ``K``.
        dim: ``A``, the size of ``z_what``.
        init_scale: initial standard deviation of every component.
        init_spread: standard deviation of the initial means around 0.
    """

    def __init__(
        self, num_components: int = 10, dim: int = 50, init_scale: float = 1.0, init_spread: float = 1.0
    ):
        super().__init__()
        self.num_components = check_positive_int(num_components, "num_components")
        self.dim = check_positive_int(dim, "dim")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        if init_spread < 0:
            raise ValueError(f"init_spread must be non-negative, got {init_spread}")
        self.loc = nn.Parameter(init_spread * torch.randn(self.num_components, self.dim))
        self.log_scale = nn.Parameter(
            torch.full((self.num_components, self.dim), float(torch.tensor(init_scale).log()))
        )

    def conditional(self, z_cat: Tensor) -> dist.Independent:
        """``p(z_what | z_cat) = N(mu(z_cat), sigma(z_cat))``: GMAIR's "what priors" module.

        ``mu`` and ``log sigma`` are linear maps of the one-hot ``z_cat`` (``z_cat @ loc``), so a one-hot
        picks a component and a relaxed one-hot interpolates between components' parameters.

        Args:
            z_cat: ``[..., K]`` one-hot or relaxed one-hot vectors.

        Returns:
            a Normal with batch shape ``[...]`` and event shape ``[A]``.
        """
        self._check_categories(z_cat)
        return interpolated_component(z_cat, self.loc, self.log_scale)

    def expected(self, cat_probs: Tensor) -> CategoryWeightedNormal:
        """``p(z_what | z_cat)`` scored in expectation over ``z_cat ~ Cat(cat_probs)``.

        ``log_prob(z) = sum_k cat_probs_k log N(z; mu_k, sigma_k)``: eq. 10's expectation over ``z_cat``
        taken over the ``K`` categories instead of at one relaxed sample (see
        :class:`CategoryWeightedNormal`). At a one-hot it equals :meth:`conditional`.

        Args:
            cat_probs: ``[..., K]`` probabilities of the categories (or one-hot vectors).
        """
        self._check_categories(cat_probs)
        return CategoryWeightedNormal(cat_probs, self.loc, self.log_scale)

    def _check_categories(self, z_cat: Tensor) -> None:
        if z_cat.shape[-1] != self.num_components:
            raise ValueError(f"z_cat must have {self.num_components} categories, got {tuple(z_cat.shape)}")

    def forward(self, batch_shape: tuple[int, ...] = ()) -> dist.MixtureSameFamily:
        """The mixture with the given batch shape and event shape ``[A]``."""
        mixing = dist.Categorical(logits=torch.zeros(self.num_components, device=self.loc.device))
        components = Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.MixtureSameFamily(mixing, components).expand(torch.Size(batch_shape))


def interpolated_component(z_cat: Tensor, loc: Tensor, log_scale: Tensor) -> dist.Independent:
    """``N(z_cat @ loc, exp(z_cat @ log_scale))``: a one-hot's component, interpolated for a relaxed one."""
    return Normal(z_cat @ loc, (z_cat @ log_scale).exp()).to_event(1)


class CategoryWeightedNormal(TorchDistribution):
    """Gaussian components scored in expectation over a categorical: ``sum_k w_k log N(z; mu_k, sigma_k)``.

    The model side of GMAIR's eq. 10 with its expectation over ``q(z_cat)`` summed exactly: the guide
    hands its category probabilities ``w`` as ``z_cat``'s value, and ``log_prob`` weighs every
    component's log-density by them. It is not a normalised density of ``z`` unless ``w`` is one-hot;
    ``rsample`` draws from :func:`interpolated_component`, the component itself at a one-hot, which is
    how the model samples (its ``z_cat`` prior gives one-hot vectors).

    Args:
        weights: ``[..., K]`` category probabilities.
        loc: ``[K, A]`` component means.
        log_scale: ``[K, A]`` log standard deviations of the components.
    """

    arg_constraints = {"weights": constraints.simplex}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, weights: Tensor, loc: Tensor, log_scale: Tensor, validate_args=None):
        self.weights, self.loc, self.log_scale = weights, loc, log_scale
        super().__init__(weights.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        weights = self.weights.expand(*batch_shape, self.weights.shape[-1])
        return CategoryWeightedNormal(weights, self.loc, self.log_scale, validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        return interpolated_component(self.weights, self.loc, self.log_scale).rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        per_component = Normal(self.loc, self.log_scale.exp()).log_prob(value.unsqueeze(-2)).sum(-1)
        return (self.weights * per_component).sum(-1)
