"""The package's Normal: pyro's Normal with a cheaper log-density, the same values and gradients."""

import pyro.distributions as dist
import pytest
import torch

from ppl_scenes.distributions import Normal


@pytest.mark.parametrize("scale", [0.3, "tensor"])
def test_normal_log_prob_and_gradients_equal_pyros(scale):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(3, 4, generator=g, requires_grad=True)
    scale = torch.rand(3, 4, generator=g).add(0.1).requires_grad_() if scale == "tensor" else scale
    value = torch.randn(3, 4, generator=g, requires_grad=True)
    ours, theirs = Normal(loc, scale).to_event(1), dist.Normal(loc, scale).to_event(1)
    got, want = ours.log_prob(value), theirs.log_prob(value)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    inputs = [t for t in (loc, scale, value) if torch.is_tensor(t)]
    for a, b in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    expanded = Normal(torch.zeros(4), 1.0).expand([2, 4])
    assert type(expanded) is Normal and expanded.batch_shape == (2, 4)
    assert ours.rsample().shape == (3, 4)
