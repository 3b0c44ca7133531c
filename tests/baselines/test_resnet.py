"""The saccading paper's ResNet-18 baselines: standard test, crop grid, supervised training, errors."""

import pytest
import torch

from ppl_scenes.baselines import ResNetClassifier
from ppl_scenes.infer import TRAINERS, fit
from ppl_scenes.infer.supervised import SupervisedTrainer
from ppl_scenes.models import MODELS
from ppl_scenes.runs import load, read_metrics


def scenes(n=4, size=32):
    items = []
    for i in range(n):
        x = torch.zeros(1, size, size)
        x[:, 4:10, 4 + i : 10 + i] = 1.0
        multi = torch.zeros(10)
        multi[[i % 10, (i + 3) % 10]] = 1.0
        items.append((x, {"multi_label": multi, "sum": torch.tensor(i + (i + 3) % 10)}))
    return items


@pytest.mark.parametrize("overrides", [{}, {"task": "sum"}, {"crop_grid": 2, "crop_features": 8}])
def test_standard_model_test(overrides, tmp_path):
    model = ResNetClassifier(**overrides)
    assert MODELS["resnet"] is ResNetClassifier and TRAINERS[model.trainer] is SupervisedTrainer
    data = scenes()
    x = torch.stack([im for im, _ in data])
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, data, steps=2, batch_size=2, out=tmp_path / "run", progress=False, log_every=1)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before))
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    parse = model.parse(x)
    expected = (4, 10) if model.config.task == "identify" else (4,)
    assert parse.image_labels.shape == expected and all(len(b) == 0 for b in parse.boxes)
    again = load(tmp_path / "run").parse(x)
    assert torch.equal(parse.image_labels, again.image_labels)
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
