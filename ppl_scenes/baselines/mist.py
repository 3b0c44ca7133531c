"""MIST's baselines (Angles et al., §5.1): the grid and the channel-wise localiser.

Both keep MIST's patch sampler, task networks, synthesis and losses (they subclass
:class:`ppl_scenes.models.mist.MIST`) and change only where the patches come from:

* :class:`GridPatches` -- the image split into a ``g x g`` grid (``num_patches = g**2``, 3x3 in the
  paper), one patch per cell, the same auto-encoder on each; nothing is localised.
* :class:`ChannelwiseMIST` -- a heatmap network with ``K`` output channels, one per instance, each
  located by a soft-argmax (Zhang et al. 2018). The positions are differentiable, so it trains end to
  end on the task loss without lifting.

Both train with :class:`ppl_scenes.infer.lifting.TaskTrainer` and are registered models
(``ppl-scenes train mist_grid`` / ``mist_channelwise``), configured by :class:`MISTConfig`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ppl_scenes.models.mist import MIST, MISTConfig, Patches
from ppl_scenes.nn.mist import MultiscaleHeatmapNet
from ppl_scenes.ops.heatmaps import soft_argmax


class GridPatches(MIST):
    """The grid baseline: ``K = g**2`` patches, one per cell of a ``g x g`` grid (square images).

    Args:
        config: a :class:`MISTConfig`; ``num_patches`` must be a perfect square (9: the paper's 3x3).
            ``patch_side`` and the heatmap settings are unused (the cells decide the patches).
        **overrides: individual config fields.
    """

    name: ClassVar[str] = "mist_grid"

    trainer: ClassVar[str] = "task"  # trained end to end on the task loss

    def __init__(self, config: MISTConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        side = math.isqrt(self.config.num_patches)
        if side * side != self.config.num_patches:
            raise ValueError(
                f"the grid baseline needs a square num_patches (g x g), got {self.config.num_patches}"
            )
        self.grid = side

    def build_heatmap_net(self) -> None:
        return None

    def min_image_size(self) -> tuple[int, int]:
        return (self.grid, self.grid)

    def locate(self, x: Tensor) -> Patches:
        """The cells' centres, their side as the scale, and a score of 1."""
        b, _, h, w = x.shape
        if h != w:
            raise ValueError(f"the grid baseline needs square images, got {h}x{w}")
        cell = w / self.grid
        centres = (torch.arange(self.grid, dtype=x.dtype, device=x.device) + 0.5) * cell
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        positions = torch.stack((xs.flatten(), ys.flatten()), -1).expand(b, -1, -1)
        scales = torch.full((b, self.grid**2), cell, dtype=x.dtype, device=x.device)
        return Patches(positions, scales, torch.ones_like(scales))


class ChannelwiseMIST(MIST):
    """The channel-wise baseline: ``K`` heatmap channels, one soft-argmax position each.

    Args:
        config: a :class:`MISTConfig`; one heatmap scale only (the patches have side ``patch_side``);
            ``softmax_window``, ``nms_window`` and the refinement settings are unused.
        **overrides: individual config fields.
    """

    name: ClassVar[str] = "mist_channelwise"

    trainer: ClassVar[str] = "task"  # trained end to end on the task loss

    def __init__(self, config: MISTConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        if len(self.config.heatmap_scales) != 1:
            raise ValueError(
                f"the channel-wise baseline has one scale, got heatmap_scales={self.config.heatmap_scales}"
            )

    def build_heatmap_net(self) -> MultiscaleHeatmapNet:
        cfg = self.config
        return MultiscaleHeatmapNet(
            cfg.channels,
            cfg.heatmap_scales,
            cfg.heatmap_channels,
            cfg.heatmap_blocks,
            out_channels=cfg.num_patches,
        )

    def locate(self, x: Tensor) -> Patches:
        """Soft-argmax of each channel; differentiable in the heatmap network. Scores: the map's peak."""
        positions, peaks = soft_argmax(self.heatmap_net(x))
        scales = torch.full_like(peaks, self.config.scale_values[0])
        return Patches(positions, scales, peaks)
