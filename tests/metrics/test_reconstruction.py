"""MSE / RMSE against direct computations."""

import math

import pytest
import torch

from ppl_scenes.metrics import mse, per_image_rmse, rmse


def test_against_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 5, 4, generator=g)
    x_hat = torch.rand(3, 1, 5, 4, generator=g)
    direct = torch.sqrt(((x.double() - x_hat.double()) ** 2).mean()).item()
    assert rmse(x, x_hat) == pytest.approx(direct, rel=1e-12)
    assert mse(x, x_hat) == pytest.approx(direct**2, rel=1e-12)
    per = per_image_rmse(x, x_hat)
    assert per.shape == (3,) and per.dtype == torch.float32
    for b in range(3):
        assert per[b].item() == pytest.approx(((x[b] - x_hat[b]) ** 2).mean().sqrt().item(), rel=1e-6)


def test_hand_values():
    x = torch.zeros(2, 1, 1, 2)
    x_hat = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.0]]]])
    assert mse(x, x_hat) == pytest.approx(0.5)
    assert rmse(x, x_hat) == pytest.approx(math.sqrt(0.5))
    assert per_image_rmse(x, x_hat).tolist() == [1.0, 0.0]
    assert rmse(x, x) == 0.0


def test_bad_inputs():
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        rmse(x, torch.zeros(2, 1, 3, 4))
    with pytest.raises(ValueError, match="empty"):
        mse(torch.zeros(0, 1, 3, 3), torch.zeros(0, 1, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        rmse(x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="floating"):
        rmse(x.long(), x.long())
    with pytest.raises(ValueError, match="rank"):
        per_image_rmse(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="Tensor"):
        mse([0.0], [0.0])
