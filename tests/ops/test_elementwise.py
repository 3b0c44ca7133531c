"""``ops.clip``: clamp's values and gradients with a one-operation backward (issue 36)."""

from __future__ import annotations

import pytest
import torch

from ppl_scenes.ops import clip


@pytest.mark.parametrize("bounds", [(0.0, None), (None, 0.5), (-0.25, 0.25)])
def test_clip_has_the_values_and_gradients_of_clamp(bounds):
    torch.manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64)
    x[0, :3] = torch.tensor([-0.25, 0.0, 0.25], dtype=torch.float64)  # on the bounds: gradient passes
    weights = torch.randn_like(x)
    grads = []
    for fn in (lambda t: t.clamp(*bounds), lambda t: clip(t, *bounds)):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        (out * weights).sum().backward()
        grads.append((out.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    assert (grads[1][1] == 0).any() and (grads[1][1] != 0).any()


def test_clip_without_a_graph_is_clamp_and_needs_a_bound():
    x = torch.linspace(-1, 1, 9)
    assert torch.equal(clip(x, min=0.0), x.clamp(min=0.0))
    with torch.no_grad():
        assert not clip(x.requires_grad_(), max=0.0).requires_grad
    with pytest.raises(ValueError, match="min, max"):
        clip(x)
