"""Atari frames through ale-py (optional): deterministic plays, a clear error without ale-py."""

import sys

import pytest
import torch

from ppl_scenes.data import AtariFrames
from ppl_scenes.data.atari import play_atari


def test_missing_ale_py_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(ImportError, match=r"pip install 'ppl_scenes\[atari\]'"):
        play_atari(2)


def test_frames_are_rgb_in_unit_range_and_deterministic():
    pytest.importorskip("ale_py")
    train = AtariFrames(num_frames=3, every=4)
    image, target = train[0]
    assert image.shape == (3, 210, 160) and image.dtype == torch.float32 and target == {}
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0
    assert torch.equal(AtariFrames(num_frames=3, every=4).frames, train.frames)
    later = AtariFrames(num_frames=2, every=300)  # random play diverges once the game is under way
    assert not torch.equal(AtariFrames(num_frames=2, every=300, split="test").frames, later.frames)
    with pytest.raises(ValueError, match="split"):
        AtariFrames(num_frames=1, split="valid")
