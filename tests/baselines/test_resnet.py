"""The saccading paper's ResNet-18 baselines: image labels per variant, supervised training, errors."""

import pytest
import torch

from ppl_scenes.baselines import ResNetClassifier
from ppl_scenes.infer import TRAINERS, fit
from ppl_scenes.infer.supervised import SupervisedTrainer
from ppl_scenes.models import MODELS


def scenes(n=4, size=32):
    items = []
    for i in range(n):
        x = torch.zeros(1, size, size)
        x[:, 4:10, 4 + i : 10 + i] = 1.0
        multi = torch.zeros(10)
        multi[[i % 10, (i + 3) % 10]] = 1.0
        items.append((x, {"multi_label": multi, "sum": torch.tensor(i + (i + 3) % 10)}))
    return items


def test_registered_with_the_supervised_trainer():
    assert MODELS["resnet"] is ResNetClassifier
    assert TRAINERS[ResNetClassifier().trainer] is SupervisedTrainer


@pytest.mark.parametrize("overrides", [{}, {"task": "sum"}, {"crop_grid": 2, "crop_features": 8}])
def test_image_labels_and_no_boxes(overrides):
    """Each variant scores the task's labels, and parses to image labels of the task's shape only."""
    model = ResNetClassifier(**overrides)
    data = scenes()
    x = torch.stack([im for im, _ in data])
    assert torch.isfinite(model.loss(x, **model.supervision([t for _, t in data])))
    parse = model.parse(x)
    expected = (4, 10) if model.config.task == "identify" else (4,)
    assert parse.image_labels.shape == expected and all(len(b) == 0 for b in parse.boxes)
    assert set(model.evaluate(data)) >= {"accuracy", "num_scenes"}


def test_it_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = ResNetClassifier(task="sum", max_sum=12)
    data = scenes()
    x = torch.stack([im for im, _ in data])
    y = torch.stack([t["sum"] for _, t in data])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = model.loss(x, y).item()
    for _ in range(15):
        opt.zero_grad()
        model.loss(x, y).backward()
        opt.step()
    assert model.loss(x, y).item() < 0.5 * first


def test_bad_inputs():
    with pytest.raises(ValueError, match="task"):
        ResNetClassifier(task="count")
    with pytest.raises(ValueError, match="crop_grid"):
        ResNetClassifier(crop_grid=-1)
    with pytest.raises(ValueError, match="image labels"):
        fit(ResNetClassifier(), torch.zeros(4, 1, 32, 32), steps=1, progress=False)
    with pytest.raises(ValueError, match="too small"):
        ResNetClassifier(crop_grid=12).parse(torch.zeros(1, 1, 32, 32))
