"""The Gaussian-mixture what-prior: its density, and SPAIR training through it."""

import math

import pytest
import torch

from ppl_scenes.distributions import GaussianMixtureWhatPrior
from ppl_scenes.infer import fit
from ppl_scenes.models import SPAIR
from tests.helpers import SPAIR_TINY


def test_log_density_is_the_uniform_mixture_of_diagonal_normals():
    prior = GaussianMixtureWhatPrior(num_components=3, dim=2, init_scale=0.5)
    z = torch.randn(4, 5, 2)
    d = prior((4, 5))
    assert d.batch_shape == (4, 5) and d.event_shape == (2,)
    loc, scale = prior.loc.detach(), prior.log_scale.exp().detach()
    per_component = torch.stack(
        [torch.distributions.Normal(loc[k], scale[k]).log_prob(z).sum(-1) for k in range(3)], -1
    )
    expected = torch.logsumexp(per_component, -1) - math.log(3)
    torch.testing.assert_close(d.log_prob(z), expected)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        GaussianMixtureWhatPrior(num_components=0)
    with pytest.raises(ValueError):
        GaussianMixtureWhatPrior(init_scale=0.0)


def test_spair_learns_the_mixture_with_its_other_parameters():
    prior = GaussianMixtureWhatPrior(num_components=3, dim=4)
    model = SPAIR(**SPAIR_TINY, what_prior=prior)
    assert any(p is prior.loc for p in model.parameters())  # a submodule: trained and checkpointed
    x = torch.zeros(4, 1, 12, 18)
    x[..., 2:6, 3:7] = 1.0
    before = prior.loc.detach().clone()
    fit(model, x, steps=2, batch_size=4, progress=False)
    assert not torch.equal(before, prior.loc.detach())


def test_conditional_of_a_one_hot_is_its_component_and_marginalises_to_the_mixture():
    prior = GaussianMixtureWhatPrior(num_components=3, dim=2, init_scale=0.5)
    with torch.no_grad():
        prior.log_scale.uniform_(-1.0, 0.5)
    z = torch.randn(7, 2)
    one_hot = torch.eye(3)
    per_component = torch.stack(
        [prior.conditional(one_hot[k].expand(7, 3)).log_prob(z) for k in range(3)], -1
    )
    loc, scale = prior.loc.detach(), prior.log_scale.exp().detach()
    direct = torch.stack(
        [torch.distributions.Normal(loc[k], scale[k]).log_prob(z).sum(-1) for k in range(3)], -1
    )
    torch.testing.assert_close(per_component, direct)
    # p(z) = sum_k p(z_cat = k) p(z | z_cat = k): the marginal is the direct mixture over the conditionals
    torch.testing.assert_close(prior((7,)).log_prob(z), torch.logsumexp(per_component, -1) - math.log(3))
    with pytest.raises(ValueError, match="categories"):
        prior.conditional(torch.ones(7, 4))


def test_expected_weighs_the_components_log_densities_and_is_the_conditional_at_a_one_hot():
    prior = GaussianMixtureWhatPrior(num_components=3, dim=2, init_scale=0.5)
    with torch.no_grad():
        prior.log_scale.uniform_(-1.0, 0.5)
    z = torch.randn(7, 2)
    weights = torch.softmax(torch.randn(7, 3), -1)
    per_component = torch.stack(
        [prior.conditional(torch.eye(3)[k].expand(7, 3)).log_prob(z) for k in range(3)], -1
    )
    torch.testing.assert_close(prior.expected(weights).log_prob(z), (weights * per_component).sum(-1))
    one_hot = torch.eye(3)[torch.tensor([0, 2, 1, 1, 0, 2, 2])]
    torch.testing.assert_close(prior.expected(one_hot).log_prob(z), prior.conditional(one_hot).log_prob(z))
    # at a one-hot, samples are the component's: mean and spread of many draws
    pick = torch.eye(3)[2].expand(20000, 3)
    draws = prior.expected(pick).rsample()
    torch.testing.assert_close(draws.mean(0), prior.loc[2].detach(), atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), prior.log_scale[2].exp().detach(), atol=0.05, rtol=0)
    assert prior.expected(weights).expand((2, 7)).log_prob(z).shape == (2, 7)
    with pytest.raises(ValueError, match="categories"):
        prior.expected(torch.ones(7, 4) / 4)
