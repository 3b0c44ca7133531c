"""The package's pixel Bernoulli: pyro's values and gradients in float64, an exact log(1 - p) in float32."""

import pyro.distributions as dist
import torch

from ppl_scenes.distributions import Bernoulli


def test_bernoulli_log_prob_and_gradients_equal_pyros_on_gray_values():
    g = torch.Generator().manual_seed(0)
    probs = (torch.rand(2, 1, 5, 5, generator=g, dtype=torch.float64) * 0.98 + 0.01).requires_grad_()
    value = torch.rand(2, 1, 5, 5, generator=g, dtype=torch.float64)  # gray levels, not only 0/1
    got = Bernoulli(probs=probs, validate_args=False).to_event(3).log_prob(value)
    want = dist.Bernoulli(probs=probs, validate_args=False).to_event(3).log_prob(value)
    torch.testing.assert_close(got, want)
    (grad_got,) = torch.autograd.grad(got.sum(), probs)
    (grad_want,) = torch.autograd.grad(want.sum(), probs)
    torch.testing.assert_close(grad_got, grad_want)
    assert Bernoulli(probs=probs.detach()).sample().unique().tolist() in ([0.0, 1.0], [0.0], [1.0])


def test_bernoulli_log_of_one_minus_p_is_exact_at_the_models_clip():
    p = torch.tensor([1e-4])
    got = Bernoulli(probs=p).log_prob(torch.zeros(1))
    assert abs(got.item() - torch.log1p(-p.double()).item()) < 1e-10  # torch's logits path is 1.3e-7 off
