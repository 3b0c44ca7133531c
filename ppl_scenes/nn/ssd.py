"""Networks of a small single-shot detector (SSD, Liu et al. 2016) sized for scene images, and the
per-anchor encoders and patch decoder SSDIR builds on it.

The detector is torchvision's :class:`~torchvision.models.detection.SSD` with a VGG-style backbone of
our own (no pretrained weights): a few convolution stages bring the image to its first pyramid level
(stride 8), then strided convolutions halve the map per further level. Anchors of every level follow
torchvision's order (level, row, column, default box), which :class:`AnchorEncoder` keeps, so the
``i``-th row of every per-anchor output belongs to the ``i``-th default box.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead, SSDScoringHead

from ppl_scenes.nn.blocks import channels_last
from ppl_scenes.nn.mlp import MLP
from ppl_scenes.ops.constants import cached_constant, indices

__all__ = [
    "AnchorEncoder",
    "AnchorWindows",
    "CodeDecoder",
    "ConvNormReLU",
    "PyramidBackbone",
    "anchor_encodings",
    "anchor_windows",
    "build_ssd",
]


class ConvNormReLU(nn.Sequential):
    """A convolution without bias, batch normalisation and a ReLU (children ``0``, ``1``, ``2``).

    While the normalisation is in evaluation mode (an affine map of its running statistics) it is folded
    into the convolution's weights and bias: one convolution instead of a convolution and a pass of
    the normalisation over its output (the same values up to rounding).
    """

    def forward(self, x: Tensor) -> Tensor:
        conv, norm, activation = self
        if norm.training:  # the normalisation's own mode decides (a calibration may set it alone)
            return super().forward(x)
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        bias = norm.bias - norm.running_mean * scale
        return activation(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))


def _conv(cin: int, cout: int, stride: int = 1, norm: bool = False) -> nn.Sequential:
    """A 3x3 convolution (then batch normalisation when ``norm``) and a ReLU."""
    if not norm:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    return ConvNormReLU(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidBackbone(nn.Module):
    """VGG-style feature extractor returning an ``OrderedDict`` of pyramid levels (SSD's backbone).

    Args:
        channels: image channels.
        widths: channels of the stride-2 stages that reach the first level (three stages: stride 8);
            each stage is a strided 3x3 convolution, followed (after the first) by a 3x3 convolution.
        level_channels: channels of each pyramid level; level 0 has stride 8, each further level
            halves the map with a stride-2 convolution.
        norm: batch normalisation after every convolution (in evaluation mode it is a per-channel
            affine map of the running statistics).
    """

    def __init__(
        self,
        channels: int,
        widths: tuple[int, ...] = (8, 16, 32),
        level_channels: tuple[int, ...] = (64,) * 4,
        norm: bool = False,
    ):
        super().__init__()
        stages: list[nn.Module] = []
        cin = channels
        for i, width in enumerate(widths):
            # Strided convolutions rather than convolution + pooling: no 3x3 convolution runs at the
            # image's full resolution, which made the backbone six times slower on a CPU.
            stages.append(_conv(cin, width, stride=2, norm=norm))
            if i > 0:
                stages.append(_conv(width, width, norm=norm))
            cin = width
        self.stem = nn.Sequential(*stages)
        self.levels = nn.ModuleList()
        for i, width in enumerate(level_channels):
            level = _conv(cin, width, norm=norm) if i == 0 else nn.Sequential(_conv(cin, width, 2, norm))
            self.levels.append(level)
            cin = width
        self.out_channels = list(level_channels)
        self.stride = 2 ** len(widths)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        h = self.stem(channels_last(images))
        out = OrderedDict()
        for i, level in enumerate(self.levels):
            h = level(h)
            out[str(i)] = h
        return out


def build_ssd(
    channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    widths: tuple[int, ...] = (8, 16, 32),
    level_channels: tuple[int, ...] = (64,) * 4,
    aspect_ratios: tuple[int, ...] = (2,),
    min_ratio: float = 0.08,
    max_ratio: float = 0.45,
    score_threshold: float = 0.3,
    nms_threshold: float = 0.45,
    max_detections: int = 32,
    norm: bool = False,
) -> SSD:
    """A torchvision SSD over :class:`PyramidBackbone`, for images of exactly ``image_size``.

    Args:
        channels: image channels; images in [0, 1] are normalised to [-1, 1] by the SSD's transform.
        image_size: ``(H, W)`` the detector works at (the transform resizes to it; SSDIR feeds it
            images of this size, so nothing is resampled).
        num_classes: object classes plus one for the background (torchvision's convention).
        widths, level_channels: see :class:`PyramidBackbone`.
        aspect_ratios: extra aspect ratios of the default boxes at every level (each adds ``r:1`` and
            ``1:r``), beside the two square boxes.
        min_ratio, max_ratio: default-box scales of the finest and coarsest level, as fractions of
            the image side.
        score_threshold, nms_threshold, max_detections: torchvision's post-processing settings.
        norm: batch normalisation in the backbone (see :class:`PyramidBackbone`).
    """
    backbone = PyramidBackbone(channels, widths, level_channels, norm)
    anchors = DefaultBoxGenerator(
        [list(aspect_ratios)] * len(level_channels), min_ratio=min_ratio, max_ratio=max_ratio
    )
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    ssd = SSD(
        backbone,
        anchors,
        tuple(image_size),
        num_classes,
        image_mean=[0.5] * channels,
        image_std=[0.5] * channels,
        head=head,
        score_thresh=score_threshold,
        nms_thresh=nms_threshold,
        detections_per_img=max_detections,
        topk_candidates=4 * max_detections,
    )
    # channels-last weights and maps: the CPU convolutions run 1.3-2x faster (measured at 128x128)
    return ssd.to(memory_format=torch.channels_last)


class AnchorEncoder(SSDScoringHead):
    """A convolutional head per pyramid level giving ``dim`` numbers per default box: ``[B, A, dim]``.

    The rows follow torchvision's anchor order, so they line up with the SSD head's box and class
    outputs (SSDIR's what and depth encoders).

    Args:
        in_channels: channels of each pyramid level.
        num_anchors: default boxes per location of each level.
        dim: numbers per default box.
        hidden: 0 for one 3x3 convolution per level (a linear map of the 3x3 neighbourhood);
            otherwise a 3x3 convolution to ``hidden`` channels, a ReLU, then a 1x1 convolution.
    """

    def __init__(self, in_channels: list[int], num_anchors: list[int], dim: int, hidden: int = 0):
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")

        def head(c: int, a: int) -> nn.Module:
            if not hidden:
                return nn.Conv2d(c, a * dim, kernel_size=3, padding=1)
            return nn.Sequential(
                nn.Conv2d(c, hidden, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, a * dim, kernel_size=1),
            )

        super().__init__(nn.ModuleList(head(c, a) for c, a in zip(in_channels, num_anchors)), dim)
        self.num_anchors = list(num_anchors)

    def at(self, features: list[Tensor], index: Tensor, windows: AnchorWindows | None = None) -> Tensor:
        """The head's output for the default boxes ``index`` only: ``[B, M, dim]`` for ``index [B, M]``.

        Equal to ``self(features).gather(1, index)`` -- each row is the 3x3 convolution at its box's
        location -- but the convolutions run only at those locations, so the cost grows with the
        objects, not with the pyramid (``forward`` computes every default box of every level). All
        levels at once: each window meets every level's kernels in one product, and each row keeps
        its own level's and box's columns. A level without boxes in ``index`` gets zero gradients, as
        through the full convolution (not none: Adam's moments then move its kernels as they would).

        Args:
            features: the pyramid's maps, ``[B, C, H_l, W_l]`` per level.
            index: ``[B, M]`` default boxes in torchvision's anchor order (level, row, column, box).
            windows: :func:`anchor_windows` of ``features`` and ``index``, when several encoders share
                them.
        """
        if windows is None:
            windows = anchor_windows(features, index, self.num_anchors)
        heads = list(self.module_list)
        dim = self.num_columns
        if isinstance(heads[0], nn.Conv2d):
            values = windows.values
        else:  # a hidden layer: every level's, then each row's own level's
            hidden = heads[0][0].out_channels
            values = F.linear(windows.values, *_stacked([h[0] for h in heads]))
            picked = windows.level[:, None] * hidden + indices(hidden, values.device)
            values = heads[0][1](values.gather(1, picked))
            heads = [h[2] for h in heads]
        out = F.linear(values, *_stacked(heads))  # [N, sum over levels of boxes * dim]
        first = _column_starts(tuple(self.num_anchors), dim, out.device)[windows.level]
        picked = (first + windows.box * dim)[:, None] + indices(dim, out.device)
        return out.gather(1, picked).view(*index.shape, dim)


def anchor_encodings(
    encoders: Sequence[AnchorEncoder], features: list[Tensor], index: Tensor
) -> list[Tensor]:
    """``[e.at(features, index) for e in encoders]`` from one gather of the windows and, for encoders of
    one 3x3 convolution per level over the same anchors, one product with all their kernels."""
    windows = anchor_windows(features, index, encoders[0].num_anchors)
    single = all(isinstance(e.module_list[0], nn.Conv2d) for e in encoders)
    if not single or len({tuple(e.num_anchors) for e in encoders}) > 1:
        return [e.at(features, index, windows) for e in encoders]
    out = F.linear(windows.values, *_stacked([h for e in encoders for h in e.module_list]))
    sizes = tuple(tuple(f.shape[-2:]) for f in features)
    dims = tuple(e.num_columns for e in encoders)
    columns = _encoder_columns(sizes, tuple(encoders[0].num_anchors), dims, index.device)
    picked = out.gather(1, columns[index.reshape(-1)])  # each row's own level's and box's columns
    return list(picked.view(*index.shape, -1).split(dims, -1))


@cached_constant
def _encoder_columns(sizes, num_anchors: tuple[int, ...], dims: tuple[int, ...], device) -> Tensor:
    """``[A, sum(dims)]``: for each default box, the columns of :func:`anchor_encodings`' product that
    hold each encoder's output for it (encoder by encoder, each level's kernels box by box)."""
    per_encoder, first = [], 0
    for dim in dims:
        columns = []
        for (h, w), a in zip(sizes, num_anchors):
            boxes = first + torch.arange(a * dim).view(a, dim)  # this level's block of columns
            columns.append(boxes.repeat(h * w, 1))
            first += a * dim
        per_encoder.append(torch.cat(columns))
    return torch.cat(per_encoder, 1).to(device)


class AnchorWindows(NamedTuple):
    """The 3x3 neighbourhoods of some default boxes' locations in a pyramid (:func:`anchor_windows`)."""

    #: ``[N, C * 9]`` each box's window, flattened in (channel, row, column) order as a kernel is.
    values: Tensor
    #: ``[N]`` the pyramid level of each box.
    level: Tensor
    #: ``[N]`` which of its location's default boxes each is.
    box: Tensor


def anchor_windows(features: list[Tensor], index: Tensor, num_anchors: list[int]) -> AnchorWindows:
    """The zero-padded 3x3 windows of the pyramid ``features`` around the locations of the default
    boxes ``index`` (``[B, M]``, torchvision's anchor order; ``num_anchors`` boxes per location of each
    level), gathered from all levels at once: what :meth:`AnchorEncoder.at` multiplies by its kernels.
    Pixels of a window outside its map are zero, as a convolution's padding."""
    b, m = index.shape
    sizes = tuple(tuple(f.shape[-2:]) for f in features)
    level, box, pixels = _anchor_table(sizes, tuple(num_anchors), index.device)
    flat = index.reshape(-1)
    # the maps flattened one after another, and one zero pixel last for the windows' outside
    maps = torch.cat(
        [*(f.flatten(2) for f in features), features[0].new_zeros(b, features[0].shape[1], 1)], 2
    )
    image = indices(b, index.device).repeat_interleave(m)
    values = maps[image[:, None], :, pixels[flat]]  # [N, 9, C]
    return AnchorWindows(values.transpose(1, 2).flatten(1), level[flat], box[flat])


@cached_constant
def _anchor_table(sizes: tuple[tuple[int, int], ...], num_anchors: tuple[int, ...], device):
    """Per default box of a pyramid (torchvision's order; long tensors on ``device``): its level, its
    box at its location, and the nine pixels ``[A, 9]`` of its location's 3x3 window in the maps
    flattened one after another, a pixel outside its map pointing one past the last (a zero)."""
    levels, boxes, pixels, start = [], [], [], 0
    outside = sum(h * w for h, w in sizes)
    for level, ((h, w), a) in enumerate(zip(sizes, num_anchors)):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        dy, dx = torch.meshgrid(torch.arange(-1, 2), torch.arange(-1, 2), indexing="ij")
        ys, xs = y.reshape(-1, 1) + dy.reshape(1, -1), x.reshape(-1, 1) + dx.reshape(1, -1)  # [H*W, 9]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        window = torch.where(inside, start + ys * w + xs, torch.tensor(outside))
        pixels.append(window.repeat_interleave(a, 0))
        levels.append(torch.full((h * w * a,), level))
        boxes.append(torch.arange(a).repeat(h * w))
        start += h * w
    return tuple(torch.cat(t).to(device) for t in (levels, boxes, pixels))


@cached_constant
def _column_starts(num_anchors: tuple[int, ...], dim: int, device) -> Tensor:
    """The first column of each level's output in :meth:`AnchorEncoder.at`'s stacked product."""
    starts = [0]
    for a in num_anchors[:-1]:
        starts.append(starts[-1] + a * dim)
    return torch.tensor(starts, dtype=torch.long, device=device)


def _stacked(convs: list[nn.Conv2d]) -> tuple[Tensor, Tensor]:
    """The levels' kernels as one linear map of a flattened window: weight ``[sum of outputs, C * k * k]``
    and bias."""
    weight = torch.cat([c.weight.view(c.weight.shape[0], -1) for c in convs])  # one view each
    return weight, torch.cat([c.bias for c in convs])


class CodeDecoder(nn.Module):
    """Codes ``[..., dim]`` to patches ``[..., C, S, S]`` in [0, 1] by transposed convolutions.

    Args:
        dim: code size.
        channels: image channels.
        size: patch side ``S``, ``4 * 2**k`` for some ``k >= 1``.
        width: channels of the first feature map (halved per upsampling, at least 8).
    """

    def __init__(self, dim: int, channels: int, size: int = 64, width: int = 64):
        super().__init__()
        ups = size // 4
        if size < 8 or size % 4 or ups & (ups - 1):
            raise ValueError(f"patch size must be 4 * 2**k with k >= 1 (8, 16, 32, 64, ...), got {size}")
        self.width, self.size, self.channels = width, size, channels
        self.project = MLP(nn.Linear(dim, width * 16), nn.ReLU())  # one autograd node (nn.Sequential names)
        layers: list[nn.Module] = []
        cin = width
        while ups > 1:
            cout = max(cin // 2, 8)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin, ups = cout, ups // 2
        layers.append(nn.Conv2d(cin, channels, 3, padding=1))
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # as its maps: no copies

    def forward(self, codes: Tensor) -> Tensor:
        lead = codes.shape[:-1]
        h = self.project(codes.reshape(-1, codes.shape[-1])).reshape(-1, self.width, 4, 4)
        # channels-last maps: the convolutions with few channels at the patch's full size run twice as
        # fast on the CPU (384 patches of 64 px, forward and backward: 1,045 -> 471 ms), same values
        h = channels_last(h)
        return torch.sigmoid(self.net(h)).reshape(*lead, self.channels, self.size, self.size)
