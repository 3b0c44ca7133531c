"""Relaxed categorical variables: Gumbel-softmax samples scored with the categorical log-mass."""

import math

import torch

from ppl_scenes.distributions import ConcreteCategorical, OneHotCategoricalPrior, categorical_log_mass


def test_log_mass_of_one_hots_is_the_categorical_log_probability():
    logits = torch.randn(5, 4)
    index = torch.tensor([0, 3, 1, 2, 2])
    one_hot = torch.nn.functional.one_hot(index, 4).float()
    expected = torch.distributions.Categorical(logits=logits).log_prob(index)
    torch.testing.assert_close(categorical_log_mass(one_hot, logits), expected)
    torch.testing.assert_close(ConcreteCategorical(logits, 0.5).log_prob(one_hot), expected)
    torch.testing.assert_close(OneHotCategoricalPrior(logits).log_prob(one_hot), expected)


def test_relaxed_samples_lie_on_the_simplex_and_sharpen_with_temperature():
    logits = torch.randn(2000, 3)
    hot = ConcreteCategorical(logits, 5.0).rsample()
    cold = ConcreteCategorical(logits, 0.1).rsample()
    for z in (hot, cold):
        assert (z >= 0).all()
        torch.testing.assert_close(z.sum(-1), torch.ones(2000))
    assert cold.max(-1).values.mean() > 0.9 > hot.max(-1).values.mean()


def test_gumbel_argmax_follows_the_probabilities():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    z = ConcreteCategorical(logits, 0.5).rsample()
    freq = torch.bincount(z.argmax(-1), minlength=3) / 20000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02, rtol=0)


def test_prior_samples_one_hots_and_the_uniform_prior_costs_log_k():
    prior = OneHotCategoricalPrior.uniform(5, batch_shape=(3, 4))
    z = prior.sample()
    assert z.shape == (3, 4, 5) and ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    relaxed = torch.softmax(torch.randn(3, 4, 5), -1)
    torch.testing.assert_close(prior.log_prob(relaxed), torch.full((3, 4), -math.log(5)))
    assert prior.expand((2, 3, 4)).batch_shape == (2, 3, 4)


def test_kl_estimate_is_unbiased_on_hard_samples():
    q_logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    index = torch.distributions.Categorical(logits=q_logits).sample((50000,))
    z = torch.nn.functional.one_hot(index, 3).float()
    q = ConcreteCategorical(q_logits.expand(50000, 3), 0.5)
    p = OneHotCategoricalPrior.uniform(3, (50000,))
    estimate = (q.log_prob(z) - p.log_prob(z)).mean()
    exact = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=q_logits),
        torch.distributions.Categorical(logits=torch.zeros(3)),
    )
    assert abs(float(estimate - exact)) < 0.01


def test_expected_log_mass_gives_the_exact_kl_where_relaxed_samples_do_not():
    q_logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    exact = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=q_logits),
        torch.distributions.Categorical(logits=torch.zeros(3)),
    )
    torch.manual_seed(0)
    q = ConcreteCategorical(q_logits.expand(50000, 3), 0.5)
    p = OneHotCategoricalPrior.uniform(3, (50000,))
    z = q.rsample()
    sampled = (q.log_prob(z) - p.log_prob(z)).mean()
    assert abs(float(sampled - exact)) > 0.03  # the relaxed single-sample estimate is biased
    expected = ConcreteCategorical(q_logits.expand(50000, 3), 0.5, expected_log_mass=True)
    kl = expected.log_prob(z) - p.log_prob(z)
    assert kl.shape == (50000,)
    torch.testing.assert_close(kl, exact.expand(50000))
    assert expected.expand((2, 50000)).log_prob(z).shape == (2, 50000)
    # the exact term's gradient is the KL's own: zero at the uniform distribution
    logits = torch.zeros(3, requires_grad=True)
    ConcreteCategorical(logits, 0.5, expected_log_mass=True).log_prob(torch.full((3,), 1 / 3)).backward()
    torch.testing.assert_close(logits.grad, torch.zeros(3))
