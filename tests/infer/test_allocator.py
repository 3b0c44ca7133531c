"""keep_freed_memory: glibc's malloc thresholds fixed when training starts."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

import ppl_scenes.data.loading as loading_mod
import ppl_scenes.infer.trainer as trainer_mod
from ppl_scenes.data.loading import LazyScenes
from ppl_scenes.infer import SVITrainer, TrainConfig, allocator
from ppl_scenes.models.spair import SPAIR, SPAIRConfig


@pytest.mark.parametrize("limit", [0, -5, 2**31, 1.5, True, "1"])
def test_bad_limits_are_refused(limit):
    with pytest.raises(ValueError, match="limit_bytes"):
        allocator.keep_freed_memory(limit)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_sets_the_thresholds_once_on_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    assert allocator.keep_freed_memory(2**28) is True
    assert allocator._done is True
    assert allocator.keep_freed_memory() is True  # a second call changes nothing
    big = torch.ones(2**22)  # 16 MiB: allocation still works with the thresholds set
    assert float(big.sum()) == 2**22


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
    assert allocator._done is False


class Scenes:
    """Six 16x16 scenes as (image, target) pairs."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((1, 16, 16), 0.1 * i), {}


@pytest.mark.parametrize("keep", [True, False])
def test_training_sets_it_when_configured(monkeypatch, keep):
    calls = []
    monkeypatch.setattr(trainer_mod, "keep_freed_memory", lambda: calls.append(1) or True)
    model = SPAIR(SPAIRConfig(cell_size=(8, 8), anchor=(12.0, 12.0), what_dim=4, backbone_width=8))
    trainer = SVITrainer(model, TrainConfig(steps=1, keep_freed_memory=keep), progress=False)
    assert isinstance(trainer.prepare_data(Scenes()), torch.Tensor)  # small: held in memory
    assert calls == ([1] if keep else [])
    monkeypatch.setattr(loading_mod, "MAX_IN_MEMORY_BYTES", 100)
    assert isinstance(trainer.prepare_data(Scenes()), LazyScenes)  # generated batch by batch
    assert calls == ([1, 1] if keep else [])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_large_tensors_are_not_paged_in_again(monkeypatch):
    """A training step's large temporaries in miniature: tensors of 1 to 8 MiB made and freed, eight
    rounds. glibc's adaptive thresholds page them in afresh in some processes and not in others;
    with the thresholds fixed, the last four rounds reuse most of the heap's pages."""
    monkeypatch.setattr(allocator, "_done", False)
    assert allocator.keep_freed_memory() is True
    sizes = [2**18, 2**21, 2**19, 2**20, 2**18, 2**21, 2**20, 2**19]  # 30 MiB of float32
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(n) for n in sizes]
        del blocks
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    pages = 30 * 2**20 // resource.getpagesize()
    assert sum(faults[4:]) < pages, faults  # most pages reused: at most one round's worth paged in


def test_config_flag_must_be_a_bool():
    with pytest.raises(ValueError, match="keep_freed_memory"):
        TrainConfig(keep_freed_memory="yes")
