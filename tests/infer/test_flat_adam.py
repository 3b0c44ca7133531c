"""FlatAdam (issue 36): torch's fused Adam over parameters packed in one buffer per group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppl_scenes.infer.flat_adam import FlatAdam, clip_flat_gradients, packable


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 1), nn.Flatten(), nn.Linear(32, 3))
    net[0].to(memory_format=torch.channels_last)  # one channels-last weight among contiguous ones
    return net


def _groups(net: nn.Module) -> list[dict]:
    params = list(net.parameters())
    return [{"params": params[:3], "lr": 0.01}, {"params": params[3:], "lr": 0.003}]


def _loss(net: nn.Module, step: int, skip_last: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(4, 3, 6, 6, generator=g)
    if skip_last:  # the last layer unused: its parameters get no gradient
        return net[:4](x).square().sum()
    return net(x).square().sum()


def _train(opt_class, steps: int, skipped=()) -> tuple[nn.Module, torch.optim.Optimizer]:
    net = _net()
    opt = FlatAdam(_groups(net)) if opt_class is FlatAdam else torch.optim.Adam(_groups(net), fused=True)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        _loss(net, step, skip_last=step in skipped).backward()
        opt.step()
    return net, opt


def test_packing_keeps_values_shapes_and_layouts_and_makes_views():
    net = _net()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    layouts = {k: p.stride() for k, p in net.named_parameters()}
    FlatAdam(_groups(net))
    for k, p in net.named_parameters():
        assert torch.equal(p.detach(), before[k]) and p.stride() == layouts[k]
        assert p.storage_offset() % 16 == 0  # aligned
    params = list(net.parameters())
    assert params[0].untyped_storage().data_ptr() == params[2].untyped_storage().data_ptr()  # one buffer
    assert params[0].untyped_storage().data_ptr() != params[3].untyped_storage().data_ptr()  # per group


def test_steps_as_fused_adam():
    flat, opt = _train(FlatAdam, 5)
    plain, _ = _train(torch.optim.Adam, 5)
    for (k, a), b in zip(flat.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)
    assert all(p.grad is not None for p in flat.parameters())


def test_a_parameter_without_gradient_is_left_alone_as_adam_does():
    """A step where the last layer is unused: its weights, moments and step count stay (exactly as
    torch.optim.Adam), and the state dicts agree afterwards."""
    flat, flat_opt = _train(FlatAdam, 5, skipped={1, 2})
    plain, plain_opt = _train(torch.optim.Adam, 5, skipped={1, 2})
    for a, b in zip(flat.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    a, b = flat_opt.state_dict()["state"], plain_opt.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert float(a[k]["step"]) == float(b[k]["step"])
        torch.testing.assert_close(a[k]["exp_avg"], b[k]["exp_avg"], atol=1e-6, rtol=1e-5)
    assert {float(s["step"]) for s in a.values()} == {5.0, 3.0}


def test_state_dicts_load_either_way_and_training_continues_the_same():
    _, plain_opt = _train(torch.optim.Adam, 3)
    state = plain_opt.state_dict()
    # the same run, continued by FlatAdam from torch.optim.Adam's state, and by Adam itself
    results = []
    for cls in (FlatAdam, torch.optim.Adam):
        net, _ = _train(torch.optim.Adam, 3)
        opt = FlatAdam(_groups(net)) if cls is FlatAdam else torch.optim.Adam(_groups(net), fused=True)
        opt.load_state_dict(state)
        for step in range(3, 6):
            opt.zero_grad()
            _loss(net, step).backward()
            opt.step()
        results.append((net, opt.state_dict()))
    for a, b in zip(results[0][0].parameters(), results[1][0].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    flat_state = results[0][1]["state"]
    assert {float(s["step"]) for s in flat_state.values()} == {6.0}
    # the saved moments do not share memory with the live ones (a checkpoint is a copy)
    live = FlatAdam(_groups(_net()))
    live.load_state_dict(results[0][1])
    saved = live.state_dict()["state"][0]["exp_avg"]
    saved.zero_()
    assert live.state_dict()["state"][0]["exp_avg"].abs().sum() > 0


def test_clip_flat_gradients_matches_torch_clipping():
    grads = [torch.randn(7), torch.randn(20)]
    params = [torch.zeros(7, requires_grad=True), torch.zeros(20, requires_grad=True)]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(params, 1.5)
    flats = [g.clone() for g in grads]
    total = clip_flat_gradients(flats, 1.5)
    torch.testing.assert_close(total, expected)
    for f, p in zip(flats, params):
        torch.testing.assert_close(f, p.grad)
    untouched = [g.clone() for g in grads]
    clip_flat_gradients(untouched, float("inf"))
    assert all(torch.equal(a, b) for a, b in zip(untouched, grads))


def test_bad_parameters_are_refused():
    w = torch.zeros(4, 6).t().requires_grad_()  # a transposed (not contiguous) parameter
    assert not packable([w])
    with pytest.raises(ValueError, match="dense floating-point"):
        FlatAdam([w])
    with pytest.raises(ValueError, match="amsgrad"):
        FlatAdam([torch.zeros(3, requires_grad=True)], amsgrad=True)


def test_gathered_gradients_are_the_parameters_gradients():
    """Clipping the gathered flat gradients clips what ``p.grad`` shows, and the step uses them."""
    net = _net()
    opt = FlatAdam(_groups(net))
    _loss(net, 0).backward()
    before = [p.grad.clone() for p in net.parameters()]
    flats = opt.gather_gradients()
    for f in flats:
        f.mul_(0.5)
    for p, g in zip(net.parameters(), before):
        torch.testing.assert_close(p.grad, 0.5 * g)
        assert p.grad.stride() == p.stride()


def test_parameters_without_grad_stay_outside_and_a_late_gradient_takes_the_plain_path():
    """A frozen parameter (SPAIR's fixed background) does not hold the others back from the flat
    step; if it is unfrozen later, the step goes per parameter and still updates it as Adam does."""
    results = []
    for cls in (FlatAdam, torch.optim.Adam):
        net = _net()
        net[4].bias.requires_grad_(False)
        opt = FlatAdam(_groups(net)) if cls is FlatAdam else torch.optim.Adam(_groups(net), fused=True)
        for step in range(4):
            if step == 2:
                net[4].bias.requires_grad_(True)
            opt.zero_grad()
            _loss(net, step).backward()
            if cls is FlatAdam:
                assert (opt.gather_gradients() is None) == (step >= 2)
            opt.step()
        results.append(net)
    for a, b in zip(results[0].parameters(), results[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_nan_gradient_leaves_the_buffers_padding_zero_for_later_steps():
    """Clipping a NaN gradient scales by 0, not NaN: the zero padding between parameters, which no
    later gradient overwrites, stays zero, so the next good step's norm is finite."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 1))  # sizes that leave padding in the buffer
    opt = FlatAdam(net.parameters(), lr=1e-3)
    net(torch.full((2, 3), float("nan"))).sum().backward()
    (flat,) = opt.gather_gradients()
    assert not torch.isfinite(clip_flat_gradients([flat], 1.0))
    opt.zero_grad(set_to_none=True)  # the trainer refuses the step
    net(torch.randn(2, 3)).sum().backward()
    (flat,) = opt.gather_gradients()
    assert torch.isfinite(clip_flat_gradients([flat], 1.0))
    assert torch.isfinite(flat).all()
