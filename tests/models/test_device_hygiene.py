"""Tensors a model creates during training follow the model's device.

CI has no GPU, so a tensor made on the CPU inside a CUDA model's ``model`` or ``guide`` (a python
float as a distribution's parameter, ``torch.arange`` without ``device=``) would only fail on a GPU
machine. These tests run on the CPU and flag, instead, every tensor factory that our code calls
(directly, or through ``torch.distributions`` with plain-number parameters) without naming a device.
"""

from __future__ import annotations

import traceback

import pyro
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ppl_scenes.models import GMAIR, SPAIR, VariationalSaccading

FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.arange,
    torch.linspace,
    torch.eye,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.tensor,
    torch.as_tensor,
}


class DevicelessFactories(TorchFunctionMode):
    """Records ``(function, file:line)`` of factory calls without ``device`` whose nearest caller
    outside ``torch`` and the distribution classes is package code (the tensors Pyro's own
    machinery makes, a plate's indices say, are Pyro's business)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        copies_a_tensor = func is torch.as_tensor and args and isinstance(args[0], torch.Tensor)
        if func in FACTORIES and kwargs.get("device") is None and not copies_a_tensor:
            for frame in reversed(traceback.extract_stack()[:-1]):
                if "/torch/" in frame.filename or "/pyro/distributions/" in frame.filename:
                    continue
                if "ppl_scenes" in frame.filename:
                    self.calls.append((func.__name__, f"{frame.filename}:{frame.lineno}"))
                break
        return func(*args, **kwargs)


def images(b=2, h=24, w=24):
    x = torch.zeros(b, 1, h, w)
    x[..., 2:8, 3:9] = 0.8
    x[..., 12:20, 10:18] = 1.0
    return x


def saccade(**overrides):
    sizes = dict(proxy_size=8, glimpse_size=8, z_dim=4, hidden_dim=16, embed_dim=8, conv_width=4)
    return VariationalSaccading(**sizes, num_saccades=2, num_classes=4, max_sum=6, **overrides)


MULTI_LABEL = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
CASES = {
    "spair": (lambda: SPAIR(cell_size=(8, 8), anchor=(10.0, 10.0)), {}),
    "spair-bernoulli-no-lateral": (
        lambda: SPAIR(cell_size=(8, 8), anchor=(10.0, 10.0), pres_prior="bernoulli", lateral=False),
        {},
    ),
    "gmair": (lambda: GMAIR(cell_size=(8, 8), anchor=(10.0, 10.0), num_clusters=3, what_dim=4), {}),
    "saccade": (saccade, {"y": MULTI_LABEL}),
    "saccade-where-head": (lambda: saccade(where_attention=False), {"y": MULTI_LABEL}),
    "saccade-sum-localized": (lambda: saccade(task="sum", localized=True), {"y": torch.tensor([1, 3])}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_and_guide_create_no_tensor_without_a_device(case):
    make, kwargs = CASES[case]
    model = make()
    model.train()
    mode = DevicelessFactories()
    with mode:
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, images(), **kwargs)
        loss.backward()
        if not kwargs:  # the scene models also generate from the prior
            with torch.no_grad():
                model.model(batch_size=2, image_size=(24, 24))
    assert torch.isfinite(loss)
    assert mode.calls == [], f"tensors made without a device: {sorted(set(mode.calls))}"


def test_the_check_catches_a_plain_number_distribution():
    """The check itself: ``Normal(0.0, 1.0)`` in package code is flagged."""
    from ppl_scenes.models import spair

    mode = DevicelessFactories()
    with mode:
        spair.dist.Normal(0.0, 1.0)  # called from this test file: not package code, not flagged
    assert mode.calls == []
    with mode:
        eval(compile("dist.Normal(0.0, 1.0)", spair.__file__, "eval"), vars(spair))
    assert mode.calls and mode.calls[0][1].startswith(spair.__file__)
