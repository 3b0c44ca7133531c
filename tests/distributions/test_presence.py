import itertools

import pyro
import pytest
import torch

from ppl_scenes.distributions import ConcreteBernoulli, CountPrior, IndependentBernoulliPrior, Presampled


def all_binary_vectors(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


@pytest.mark.parametrize("p", [0.9, 0.5, 0.05])
@pytest.mark.parametrize("n", [1, 3, 6])
def test_count_prior_normalises_over_all_vectors(n, p):
    prior = CountPrior(p, n)
    total = prior.log_prob(all_binary_vectors(n)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("p", [0.8, 0.3])
def test_count_prior_count_marginal_is_truncated_geometric(p):
    n = 5
    prior = CountPrior(p, n)
    vectors = all_binary_vectors(n)
    probs = prior.log_prob(vectors).exp()
    counts = vectors.sum(-1).long()
    marginal = torch.zeros(n + 1).index_add_(0, counts, probs)
    geometric = torch.tensor([p**c for c in range(n + 1)])
    torch.testing.assert_close(marginal, geometric / geometric.sum(), atol=1e-5, rtol=0)
    # ... and, given the count, every arrangement is equally likely.
    for c in range(n + 1):
        same = probs[counts == c]
        torch.testing.assert_close(same, same.mean().expand_as(same), atol=1e-6, rtol=1e-4)


def test_count_prior_samples_follow_the_count_marginal():
    prior = CountPrior(0.6, 4)
    samples = prior.sample((20000,))
    assert samples.shape == (20000, 4) and set(samples.unique().tolist()) <= {0.0, 1.0}
    freq = torch.bincount(samples.sum(-1).long(), minlength=5).float() / 20000
    torch.testing.assert_close(freq, prior.count_log_probs().exp(), atol=0.02, rtol=0)


def test_count_prior_accepts_relaxed_values_and_is_differentiable():
    prior = CountPrior(torch.tensor(0.3), 6).expand([2])
    z = torch.rand(2, 6, requires_grad=True)
    lp = prior.log_prob(z)
    assert lp.shape == (2,) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(z.grad).all()
    # A relaxed vector is scored like the hard one it rounds to when it is near-binary.
    hard = torch.tensor([[1.0, 0, 0, 1, 0, 0]])
    torch.testing.assert_close(
        prior.log_prob(hard.clamp(1e-4, 1 - 1e-4))[:1], CountPrior(0.3, 6).log_prob(hard), atol=2e-3, rtol=0
    )


def test_independent_prior_matches_bernoulli():
    prior = IndependentBernoulliPrior(0.2, 3)
    v = all_binary_vectors(3)
    expected = torch.distributions.Bernoulli(0.2).log_prob(v).sum(-1)
    torch.testing.assert_close(prior.log_prob(v), expected)


def test_concrete_bernoulli_samples_in_unit_interval_with_the_right_mean():
    d = ConcreteBernoulli(torch.full((50000,), 1.0), temperature=0.3)
    z = d.rsample()
    assert ((z >= 0) & (z <= 1)).all()
    assert abs((z > 0.5).float().mean() - torch.sigmoid(torch.tensor(1.0))) < 0.01
    one = ConcreteBernoulli(torch.ones(2))
    torch.testing.assert_close(one.log_prob(torch.ones(2)), torch.nn.functional.logsigmoid(torch.ones(2)))


def test_presampled_returns_its_value_and_base_log_prob_inside_pyro():
    base = pyro.distributions.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    value = torch.tensor([0.5, -1.0, 2.0])
    tr = pyro.poutine.trace(lambda: pyro.sample("z", Presampled(base, value))).get_trace()
    assert torch.equal(tr.nodes["z"]["value"], value)
    torch.testing.assert_close(tr.log_prob_sum(), base.log_prob(value))
