"""The one-node :class:`ppl_scenes.nn.MLP`: the values and gradients of the module-by-module network,
also with the weight gradients of many calls summed in one node (:func:`summed_weight_gradients`)."""

import contextlib

import pytest
import torch
from torch import nn

from ppl_scenes.nn import MLP, Dense, GRUCell, mlp, summed_weight_gradients


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


def _chained_calls(net, xs, order, inverse):
    """Three calls of ``net``, the second fed by the first: the pattern of a wavefront."""
    first = net(xs[0])
    loc, rest = net.heads(torch.cat((xs[1][:, :2], first), -1), (2, 1), order, inverse)
    head, tail = net.heads(xs[2], (1, 2))  # split only
    return (loc.pow(2).sum() + rest.sum() + head.tanh().sum() + tail.exp().sum()) * 3


@pytest.mark.parametrize("activation", [nn.ELU, nn.ReLU])
def test_summed_weight_gradients_equal_the_calls_one_by_one(activation):
    torch.manual_seed(1)
    net = mlp([5, 6, 6, 3], activation=activation)
    net[2].bias.requires_grad_(False)  # a frozen parameter gets no gradient either way
    xs = [torch.randn(4, 5, requires_grad=True) for _ in range(3)]
    order, inverse = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])

    def grads(summed: bool):
        with summed_weight_gradients(net) if summed else contextlib.nullcontext():
            loss = _chained_calls(net, xs, order, inverse)
        assert net._summed is None  # the context is left behind by the block
        params = [p for p in net.parameters() if p.requires_grad]
        return loss, torch.autograd.grad(loss, [*xs, *params])

    loss, want = grads(False)
    loss_summed, got = grads(True)
    assert net[2].bias.grad is None
    torch.testing.assert_close(loss_summed, loss, rtol=0, atol=0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_summed_weight_gradients_accumulate_and_survive_a_retained_graph():
    torch.manual_seed(2)
    net = mlp([3, 4, 2])
    xs = [torch.randn(5, 3) for _ in range(4)]
    with summed_weight_gradients(net):
        loss = sum((net(x) ** 2).sum() for x in xs)
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in net.parameters()]
    loss.backward()  # a second backward through the same calls: the gradients add up again
    for p, g in zip(net.parameters(), first):
        torch.testing.assert_close(p.grad, 2 * g)
    net.zero_grad()
    (sum((net(x) ** 2).sum() for x in xs)).backward()
    for p, g in zip(net.parameters(), first):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    with torch.no_grad(), summed_weight_gradients(net):  # no graph: the plain forward
        assert net(xs[0]).grad_fn is None


def test_heads_split_and_permute_the_output_as_indexing_would():
    torch.manual_seed(3)
    net = mlp([4, 5, 3])
    x = torch.randn(2, 6, 4, requires_grad=True)
    order = torch.tensor([2, 0, 1])
    for args in [((2, 1),), ((1, 2), order, torch.argsort(order))]:
        got = net.heads(x, *args)
        out = net(x)
        want = (out if len(args) == 1 else out.index_select(-1, order)).split(args[0], -1)
        assert got[0].grad_fn.name().startswith("_MLPFunction")
        weights = [torch.randn_like(w) for w in want]
        grad = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)), x)
        grad_want = torch.autograd.grad(sum((g * w).sum() for g, w in zip(want, weights)), x)
        for g, w in zip((*got, *grad), (*want, *grad_want)):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
        with torch.no_grad():
            for g, w in zip(net.heads(x, *args), want):
                torch.testing.assert_close(g, w, rtol=0, atol=0)
    with pytest.raises(ValueError, match="inverse"):
        net.heads(x, (1, 2), order)


@pytest.mark.parametrize("summed", [False, True])
def test_dense_and_gru_cell_match_torchs_modules_in_values_and_gradients(summed):
    """:class:`Dense` is ``nn.Linear`` and :class:`GRUCell` is ``nn.GRUCell`` (same state dicts, values
    and gradients), in one-node form, also with their weight gradients summed over a chain of calls."""
    torch.manual_seed(3)
    dense, cell = Dense(5, 4), GRUCell(4, 6)
    linear, reference = nn.Linear(5, 4), nn.GRUCell(4, 6)
    linear.load_state_dict(dense.state_dict())
    reference.load_state_dict(cell.state_dict())
    assert list(cell.state_dict()) == list(reference.state_dict())
    xs = [torch.randn(3, 5, requires_grad=True) for _ in range(3)]

    def chain(lin, rnn):
        h = torch.zeros(3, 6)
        for x in xs:  # the pattern of a recurrent loop: every call's state feeds the next
            h = rnn(torch.tanh(lin(x)), h)
        return h

    with summed_weight_gradients(dense, cell) if summed else contextlib.nullcontext():
        out = chain(dense, cell)
    want = chain(linear, reference)
    assert "AddmmBackward0" in _node_names(want) and "AddmmBackward0" not in _node_names(out)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out)
    got = torch.autograd.grad((out * w).sum(), [*xs, *dense.parameters(), *cell.parameters()])
    ref = torch.autograd.grad((want * w).sum(), [*xs, *linear.parameters(), *reference.parameters()])
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_gru_cell_falls_back_to_torchs_without_a_state_or_a_batch():
    torch.manual_seed(4)
    cell, reference = GRUCell(3, 2), nn.GRUCell(3, 2)
    reference.load_state_dict(cell.state_dict())
    x = torch.randn(3)
    torch.testing.assert_close(cell(x), reference(x))
    torch.testing.assert_close(cell(x[None]), reference(x[None]))  # no state given: zeros, as torch's
    assert Dense(3, 2)(torch.randn(4, 3, requires_grad=True)).grad_fn.name().startswith("_MLPFunction")


def _node_names(t: torch.Tensor) -> set[str]:
    """The names of the autograd nodes ``t`` was computed by."""
    names, todo, seen = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        todo += [n for n, _ in node.next_functions]
    return names


def test_summed_weight_gradients_leave_the_thread_count_as_it_was():
    """The summed gradients concatenate the calls' rows on one thread, then restore torch's count."""
    torch.manual_seed(5)
    net = mlp([3, 4, 2])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        xs = [torch.randn(20_000, 3) for _ in range(3)]  # large enough for torch's threaded concatenation
        with summed_weight_gradients(net):
            loss = sum(net(x).sum() for x in xs)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        assert torch.get_num_threads() == 2
        want = torch.autograd.grad(sum(nn.Sequential(*net)(x).sum() for x in xs), list(net.parameters()))
        for g, w in zip(grads, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3)
    finally:
        torch.set_num_threads(before)
