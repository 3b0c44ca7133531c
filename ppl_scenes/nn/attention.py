"""Where to look next: soft-argmax attention over a convolutional map of a small image.

Used by the saccade model's guide to place each glimpse from the proxy (``where_attention``). Each
place of a map of the image is scored against a query from a recurrent state, plus a learned prior
map per step and minus an inhibition of return around the places already looked at; the point looked
at is the soft-argmax of the scores. One channel of the map is the image's local brightness, whose
query entry starts at ``saliency``, so that the untrained attention already goes to the brightest
blobs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppl_scenes.nn.mlp import Dense
from ppl_scenes.ops.constants import cached_constant, scalar


def spread_grid(num_steps: int) -> Tensor:
    """``[T, 2]`` (x, y) centres, as fractions of the image, of a ``ceil(sqrt(T))``-square grid's cells."""
    side = math.ceil(math.sqrt(num_steps))
    steps = torch.arange(num_steps)
    return torch.stack(((steps % side + 0.5) / side, (steps // side + 0.5) / side), -1)


@cached_constant
def pixel_centres(height: int, width: int, dtype=torch.float32, device=None) -> Tensor:
    """``[H*W, 2]`` the (x, y) centres of a ``H x W`` map's pixels, row by row, as fractions of its sides."""
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
    return torch.stack((xs.repeat(height), ys.repeat_interleave(width)), -1)


def initial_attention_maps(num_steps: int, side: int, spread: bool = True) -> Tensor:
    """``[T, side, side]`` starting prior scores of :class:`ProxyAttention`.

    With ``spread``, step ``t``'s map is a log-Gaussian bump on its cell of the spread grid
    (:func:`spread_grid`), with sigma half a cell: alone it puts the point on that cell, and a
    neighbouring cell's centre scores 2 lower, so features of the image can outweigh it. Otherwise flat.
    """
    maps = torch.zeros(num_steps, side, side)
    if not spread:
        return maps
    sigma = 0.5 / math.ceil(math.sqrt(num_steps))
    coords = (torch.arange(side) + 0.5) / side
    for t, (cx, cy) in enumerate(spread_grid(num_steps)):
        maps[t] = -((coords[None, :] - cx) ** 2 + (coords[:, None] - cy) ** 2) / (2 * sigma**2)
    return maps


class ProxyAttention(nn.Module):
    """Soft-argmax attention over a convolutional map of an image, for ``num_steps`` recurrent steps.

    Args:
        channels: image channels.
        width: channels of the convolutional map (its side is half the image's).
        state_dim: size of the recurrent state the query is made from.
        num_steps: steps, each with its own learned prior map.
        image_size: side of the (square) images attended over.
        spread: start the prior maps as bumps on a grid (:func:`initial_attention_maps`), else flat.
        saliency: starting weight of the local brightness in the scores (a learned query entry).
        inhibition: starting strength of the learned inhibition of return (0: none at first).
        inhibition_sigma: width, as a fraction of the side, of the inhibition's Gaussian bumps.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        state_dim: int,
        num_steps: int,
        image_size: int,
        spread: bool = True,
        saliency: float = 0.0,
        inhibition: float = 0.0,
        inhibition_sigma: float = 0.15,
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.GroupNorm(min(8, width), width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        # one query entry per channel of the map, and one for the local brightness; all zero at
        # first but the brightness's, so the untrained attention reads brightness and prior alone
        self.query = Dense(state_dim, width + 1)
        with torch.no_grad():
            self.query.weight.zero_()
            self.query.bias.zero_()
            self.query.bias[-1] = saliency
        #: Each step's learned prior scores over the map.
        self.prior = nn.Parameter(initial_attention_maps(num_steps, image_size // 2, spread))
        #: The learned strength of the inhibition of return.
        self.return_penalty = nn.Parameter(torch.tensor(float(inhibition)))
        self.inhibition_sigma = inhibition_sigma

    def keys(self, image: Tensor) -> Tensor:
        """``[B, width + 1, s, s]``: the convolutional map of ``image`` and its local brightness."""
        features = self.net(image)
        brightness = F.adaptive_avg_pool2d(image.mean(1, keepdim=True), features.shape[-2:])
        brightness = F.avg_pool2d(brightness, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat((features, brightness), 1)

    def forward(self, keys: Tensor, state: Tensor, t: int, visited: Tensor | None = None) -> Tensor:
        """``[B, 2]`` (x, y) in (0, 1): where step ``t`` looks, the soft-argmax of its scores.

        Args:
            keys: :meth:`keys` of the images.
            state: ``[B, state_dim]`` the recurrent state the query is made from.
            t: the step, for its prior map.
            visited: ``[B, n, 2]`` centres (fractions of the side) already looked at, or None.
        """
        b, _, h, w = keys.shape
        query = self.query(state)
        scores = torch.bmm(query[:, None], keys.reshape(b, -1, h * w)).view(b, h * w)
        scores = scores + self.prior.view(-1, h * w)[t]
        centres = pixel_centres(h, w, keys.dtype, keys.device)  # [H*W, 2] (x, y), fractions of the side
        if visited is not None and visited.shape[1]:
            distances = (centres - visited[:, :, None]).square().sum(-1)  # [B, n, H*W]
            bumps = torch.exp(distances * scalar(-0.5 / self.inhibition_sigma**2, distances)).sum(1)
            scores = scores - self.return_penalty * bumps
        return scores.softmax(-1).mm(centres)  # the soft-argmax: expected centre under the softmax
