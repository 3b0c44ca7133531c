"""The digit source: root resolution, MNIST loading and caching, the offline fallback."""

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from ppl_scenes.data import DigitFallbackWarning, load_digits, resolve_data_root
from ppl_scenes.data import digits as digits_mod


def test_resolve_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PPL_SCENES_DATA", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("PPL_SCENES_DATA")
    assert resolve_data_root(None) == Path.home() / ".cache" / "ppl_scenes"


def test_bad_split_raises(fallback_root):
    with pytest.raises(ValueError, match="split"):
        load_digits("validation", root=fallback_root, download=False)


def test_mnist_splits_come_from_different_files(data_root):
    train_x, train_y = load_digits("train", root=data_root, download=False)
    val_x, val_y = load_digits("val", root=data_root, download=False)
    test_x, test_y = load_digits("test", root=data_root, download=False)
    # MNIST's last 10,000 training digits are the validation split: disjoint from training's 50,000.
    assert train_x.shape == (50_000, 28, 28) and val_x.shape == (10_000, 28, 28)
    assert test_x.shape == (10_000, 28, 28)
    assert set(val_y.unique().tolist()) == set(range(10))
    whole = torch.cat([train_x, val_x]).flatten(1)
    assert len(torch.unique(whole[49_000:51_000], dim=0)) > 1_990  # no digit repeated across the seam
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert set(train_y.unique().tolist()) == set(range(10))
    assert not torch.equal(train_x[:100], test_x[:100])
    # Cached: the same (split, root) is not read again.
    assert load_digits("train", root=data_root, download=False)[0] is train_x


def _fresh_fallback(monkeypatch):
    monkeypatch.setattr(digits_mod, "_fallback_warned", False)
    monkeypatch.setattr(digits_mod, "_digit_cache", {})
    monkeypatch.setattr(digits_mod, "_bank_cache", {})


def test_fallback_used_with_exactly_one_warning(monkeypatch, tmp_path):
    _fresh_fallback(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_x, train_y = load_digits("train", root=str(tmp_path), download=False)
        test_x, test_y = load_digits("test", root=str(tmp_path), download=False)
        val_x, _ = load_digits("val", root=str(tmp_path), download=False)
        load_digits("train", root=str(tmp_path / "other"), download=False)
    fallback = [w for w in caught if issubclass(w.category, DigitFallbackWarning)]
    assert len(fallback) == 1
    assert "MNIST was NOT found" in str(fallback[0].message) and str(tmp_path) in str(fallback[0].message)
    assert train_x.shape[1:] == (28, 28) and train_x.dtype == torch.uint8
    assert len(train_x) + len(val_x) + len(test_x) == 1797 and len(test_x) == len(val_x) == 360
    assert set(train_y.tolist()) == set(range(10)) == set(test_y.tolist())
    # Framed like MNIST: ink only inside the central 20x20.
    assert train_x[:, :4].max() == 0 and train_x[:, :, -4:].max() == 0
    assert train_x.max() > 200


def test_failed_download_falls_back_and_restores_timeout(monkeypatch, tmp_path):
    _fresh_fallback(monkeypatch)
    calls = []

    class OfflineMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            if download:
                raise OSError("network unreachable")
            raise RuntimeError("Dataset not found.")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    before = socket.getdefaulttimeout()
    with pytest.warns(DigitFallbackWarning):
        images, _ = load_digits("test", root=str(tmp_path), download=True)
    assert calls == [False, True]
    assert len(images) == 360
    assert socket.getdefaulttimeout() == before


def test_ink_boxes_are_tight():
    patch = np.zeros((2, 10, 10), dtype=np.uint8)
    patch[0, 2:5, 3:8] = 200
    patch[0, 9, 9] = 5  # below the ink threshold
    boxes = digits_mod.ink_boxes(patch)
    assert boxes[0].tolist() == [3, 2, 8, 5]
    assert boxes[1].tolist() == [0, 0, 10, 10]  # no ink: the whole patch


def test_digit_bank_is_resized_once_and_read_only(offline):
    bank = digits_mod.digit_bank("train", 14, **offline)
    assert bank.images.shape[1:] == (14, 14) and bank.images.dtype == np.uint8
    assert bank.source == "sklearn-fallback"
    assert digits_mod.digit_bank("train", 14, **offline) is bank
    with pytest.raises(ValueError):
        bank.images[0, 0, 0] = 1


def test_fallback_splits_share_no_digit(offline):
    train_x, _ = load_digits("train", **offline)
    test_x, _ = load_digits("test", **offline)
    train_set = {bytes(x) for x in train_x.numpy()}
    assert not any(bytes(x) in train_set for x in test_x.numpy())
