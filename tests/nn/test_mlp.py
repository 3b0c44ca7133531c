"""The one-node :class:`ppl_scenes.nn.MLP`: the values and gradients of the module-by-module network."""

import pytest
import torch
from torch import nn

from ppl_scenes.nn import MLP, mlp


@pytest.mark.parametrize("activation", [nn.ELU, nn.ReLU])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (5,)])
def test_mlp_matches_its_layers_one_by_one(activation, shape):
    torch.manual_seed(0)
    net = mlp([5, 6, 6, 3], activation=activation)
    assert isinstance(net, MLP) and isinstance(net, nn.Sequential)
    x = torch.randn(*shape, requires_grad=True)
    y = net(x)
    reference = nn.Sequential(*net)  # the same modules, run one by one by autograd
    y_ref = reference(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [x, *net.parameters()])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, *net.parameters()])
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_mlp_keeps_the_sequential_state_dict_and_falls_back_for_other_layers():
    net = mlp([4, 8, 2], final_activation=True)
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    odd = MLP(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(2, 4, requires_grad=True)
    assert odd._plan() is None and odd(x).grad_fn.name() == "AddmmBackward0"
    assert net(x).grad_fn.name().startswith("_MLPFunction")
    with torch.no_grad():
        torch.testing.assert_close(net(x), nn.Sequential(*net)(x), rtol=0, atol=0)
