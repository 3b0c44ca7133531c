"""The model contract, checked for every registered model (``ppl_scenes.models.base``).

Each model trains two steps into a run directory, parses, evaluates, and comes back from the run
directory parsing the same; each capability it declares is exercised; its model and guide make no
tensor without a device. A new model adds one line to :data:`TINY` (a small config) and is covered.
The paper-specific behaviour of each model stays in its own test file.
"""

from __future__ import annotations

import math
import traceback

import pyro
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ppl_scenes import MODELS, SceneModel, SceneParse, fit, load
from ppl_scenes.infer import TRAINERS
from ppl_scenes.infer.posterior import posterior_boxes, sample_posterior
from ppl_scenes.models.base import DetectorStage, PresenceBoxes, PriorSampling, Supervised, Variational
from ppl_scenes.scene import RankedParse, TargetedParse
from tests.helpers import (
    GMAIR_TINY,
    MIST_TINY,
    SACCADE_TINY,
    SPAIR_TINY,
    SQUARE_SCENE_SIZE,
    SSDIR_TINY,
)
from tests.helpers import square_scenes as scenes

#: A small config of every registered model: what the contract test trains.
TINY = {
    "spair": {**SPAIR_TINY, "cell_size": (8, 8), "anchor": (10.0, 10.0)},
    "gmair": {**GMAIR_TINY, "cell_size": (8, 8), "anchor": (10.0, 10.0)},
    "ssdir": {**SSDIR_TINY, "detector_classes": 4, "detector_steps": 1},
    "saccade": SACCADE_TINY,
    "mist": {**MIST_TINY, "num_classes": 4, "task": "classification"},
    "mist_grid": {**MIST_TINY, "num_classes": 4, "num_patches": 4},
    "mist_channelwise": {**MIST_TINY, "num_classes": 4},
    "resnet": dict(num_classes=4, max_sum=6),
}


def test_every_registered_model_has_a_tiny_config():
    assert set(MODELS) == set(TINY), "add a small config of the new model to TINY"


@pytest.mark.parametrize("name", sorted(TINY))
def test_contract(name, tmp_path):
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    cls = MODELS[name]
    model = cls(**TINY[name])
    assert isinstance(model, SceneModel) and model.name == name and model.trainer in TRAINERS
    assert isinstance(model.config.channels, int) and model.default_dataset
    data = scenes()
    x = torch.stack([im for im, _ in data])
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    fit(model, data, steps=2, batch_size=2, out=tmp_path / "run", progress=False, log_every=1)
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "two steps changed nothing"

    options = model.parse_options([t for _, t in data]) if isinstance(model, TargetedParse) else {}
    parse = model.parse(x, **options)
    assert isinstance(parse, SceneParse) and len(parse.boxes) == len(x) == len(parse.scores)
    for boxes, scores in zip(parse.boxes, parse.scores):
        assert boxes.dim() == 2 and boxes.shape[-1] == 4 and scores.shape == boxes.shape[:1]
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    if parse.reconstruction is not None:
        assert parse.reconstruction.shape == x.shape

    metrics = model.evaluate(data, batch_size=2)
    assert metrics and all(isinstance(v, int | float) for v in metrics.values())
    assert any(math.isfinite(v) for v in metrics.values())

    restored = load(tmp_path / "run")
    assert type(restored) is cls and restored.config == model.config and not restored.training
    again = restored.parse(x, **options)
    for a, b in zip(parse.boxes, again.boxes):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(TINY))
def test_capabilities(name):
    """What each declared capability promises, with the model untrained."""
    torch.manual_seed(0)
    model = MODELS[name](**TINY[name])
    data = scenes()
    x = torch.stack([im for im, _ in data])
    if isinstance(model, Supervised):
        labels = model.supervision([t for _, t in data])
        assert all(v.shape[0] == len(data) for v in labels.values())
    if isinstance(model, PriorSampling):
        with torch.no_grad():
            canvas = model.model(None, batch_size=2, image_size=(16, 24))
        assert canvas.shape == (2, model.config.channels, 16, 24)
    if isinstance(model, PresenceBoxes):
        samples = sample_posterior(model, x[:2], num_samples=3)
        boxes = posterior_boxes(model, samples, (SQUARE_SCENE_SIZE, SQUARE_SCENE_SIZE))
        assert len(boxes) == 2 and all(len(draws) == 3 for draws in boxes)
        assert all(b.dim() == 2 and b.shape[-1] == 4 for draws in boxes for b in draws)
        assert len(model.where_coords) == 4
    if isinstance(model, RankedParse):
        loose = model.parse(x, score_threshold=1e-6)
        strict = model.parse(x)
        assert all(len(lo) >= len(st) for lo, st in zip(loose.boxes, strict.boxes))
        assert 0 < model.presence_threshold < 1


# -- device hygiene --------------------------------------------------------------------------------
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
    outside ``torch`` and the distribution classes is package code.

    CI has no GPU, so a tensor made on the CPU inside a CUDA model's ``model`` or ``guide`` would only
    fail on a GPU machine; this flags every such factory call on the CPU instead.
    """

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


VARIATIONAL = sorted(n for n in TINY if issubclass(MODELS[n], Variational))


@pytest.mark.parametrize("name", VARIATIONAL)
def test_model_and_guide_create_no_tensor_without_a_device(name):
    model = MODELS[name](**TINY[name])
    data = scenes(2)
    x = torch.stack([im for im, _ in data])
    detector = isinstance(model, DetectorStage)
    kwargs = model.supervision([t for _, t in data]) if isinstance(model, Supervised) and not detector else {}
    if detector:
        model.freeze_detector()
    model.train()
    mode = DevicelessFactories()
    with mode:
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, x, **kwargs)
        loss.backward()
        if isinstance(model, PriorSampling):
            with torch.no_grad():
                model.model(None, batch_size=2, image_size=(24, 24))
    assert torch.isfinite(loss)
    assert mode.calls == [], f"tensors made without a device: {sorted(set(mode.calls))}"


def test_the_device_check_catches_a_plain_number_distribution():
    """The check itself: ``Normal(0.0, 1.0)`` in package code is flagged."""
    from ppl_scenes.models import spair

    mode = DevicelessFactories()
    with mode:
        spair.dist.Normal(0.0, 1.0)  # called from this test file: not package code, not flagged
    assert mode.calls == []
    with mode:
        eval(compile("dist.Normal(0.0, 1.0)", spair.__file__, "eval"), vars(spair))
    assert mode.calls and mode.calls[0][1].startswith(spair.__file__)
