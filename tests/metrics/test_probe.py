"""Linear probe: separable data, chance-level data, split bookkeeping, bad inputs."""

import numpy as np
import pytest
import torch

from ppl_scenes.metrics import linear_probe


def _blobs(n_per_class=40, classes=3, dim=5, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(classes, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_separable_data_is_perfect():
    x, y = _blobs()
    res = linear_probe(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    assert res["accuracy"] == pytest.approx(1.0)
    assert res["precision"] == res["recall"] == res["f1"] == pytest.approx(1.0)
    assert (res["n_train"], res["n_test"]) == (90, 30)
    assert res["stratified"] is True


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = rng.integers(0, 2, size=400)
    res = linear_probe(x, y, test_fraction=0.5)
    assert 0.35 < res["accuracy"] < 0.65


def test_deterministic_and_unstratified_fallback():
    x, y = _blobs(n_per_class=10, classes=2)
    x = np.concatenate([x, [[100.0] * 5]])
    y = np.concatenate([y, [2]])  # a class with one member cannot be stratified
    a = linear_probe(x, y, seed=3)
    assert a == linear_probe(x, y, seed=3)
    assert a["stratified"] is False
    assert a["n_train"] + a["n_test"] == 21


def test_bad_inputs():
    x, y = _blobs(n_per_class=5)
    with pytest.raises(ValueError, match="rows"):
        linear_probe(x, y[:-1])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        linear_probe(x[:, 0], y)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, np.zeros(len(y), dtype=int))
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="test_fraction"):
            linear_probe(x, y, test_fraction=bad)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match="too few"):
        linear_probe(x[[0, 5]], y[[0, 5]])
