"""Real frames: Atari games through the Arcade Learning Environment (optional extra ``atari``).

``pip install 'ppl_scenes[atari]'`` installs ``ale-py``, whose wheel ships the game ROMs (0.9 on).
SPAIR §5.4 trains on random crops of Space Invaders frames played by a random policy and parses full
210x160 frames; :func:`play_atari` produces those frames, :class:`AtariFrames` serves them as a
dataset. There is no ground truth: targets are empty.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ppl_scenes.checks import check_positive_int

#: How to get the ALE when it is missing.
__all__ = ["INSTALL_HINT", "import_ale", "play_atari"]

INSTALL_HINT = "pip install 'ppl_scenes[atari]'  (or: pip install ale-py)"


def import_ale():
    """The ``ale_py`` module with its ROMs.

    Raises:
        ImportError: naming :data:`INSTALL_HINT` when ale-py (0.9 or later) is not installed.
    """
    try:
        import ale_py
        import ale_py.roms  # the ROMs ship in the wheel from ale-py 0.9 on
    except ImportError:
        raise ImportError(f"Atari frames need ale-py: {INSTALL_HINT}") from None
    return ale_py


def play_atari(
    num_frames: int, every: int = 8, seed: int = 0, game: str = "space_invaders", progress: bool = False
) -> Tensor:
    """``num_frames`` RGB frames ``uint8 [N, 3, 210, 160]`` of ``game`` under a uniformly random policy.

    Every ``every``-th frame of play is kept; the game restarts when it ends. Deterministic in ``seed``.
    """
    num_frames = check_positive_int(num_frames, "num_frames")
    every = check_positive_int(every, "every")
    ale_py = import_ale()
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(seed)
    frames = []
    with tqdm(total=num_frames, desc="playing", leave=False, disable=not progress) as bar:
        step = 0
        while len(frames) < num_frames:
            ale.act(actions[rng.integers(len(actions))])
            step += 1
            if ale.game_over():
                ale.reset_game()
            if step % every == 0:
                frames.append(ale.getScreenRGB())
                bar.update(1)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


class AtariFrames(Dataset):
    """Frames of an Atari game as ``(image [3, 210, 160] float32 in [0, 1], {})`` pairs.

    Train and test frames come from separate plays (different seeds).

    Args:
        num_frames: frames in the dataset.
        split: ``"train"`` or ``"test"``.
        seed: seed of the play (the test split plays with ``seed + 1``).
        every: keep every ``every``-th frame.
        game: an ALE ROM name.
        progress: show a progress bar while playing.
    """

    def __init__(
        self,
        num_frames: int = 500,
        split: str = "train",
        seed: int = 0,
        every: int = 8,
        game: str = "space_invaders",
        progress: bool = False,
    ):
        splits = ("train", "test", "val")
        if split not in splits:
            raise ValueError(f"split must be one of {splits}, got {split!r}")
        # Each (seed, split) plays its own game: seed 1's training frames are not seed 0's test frames.
        self.frames = play_atari(num_frames, every, len(splits) * seed + splits.index(split), game, progress)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        return self.frames[i].float() / 255.0, {}
