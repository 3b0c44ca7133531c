"""MIST's networks: the multiscale heatmap network ``H_eta`` and the patch task networks ``T_tau``.

Angles et al., "MIST: Multiple Instance Spatial Transformer" (CVPR 2021), §3.1 and Appendix B. The
heatmap network scores every pixel of an image at ``S`` scales; the post-processing of those scores
(local spatial softmax, scale pooling, top-K, its inverse) lives in :mod:`ppl_scenes.ops.heatmaps`.
The task networks work on the ``K`` extracted patches: an auto-encoder for reconstruction and a
classifier, which share :class:`PatchEncoder`.

"Layer normalization before each convolution" (Appendix B) is :class:`torch.nn.GroupNorm` with one
group: it normalises each sample over channels and space like a layer norm, but with per-channel
affine parameters, so it does not tie the network to one spatial size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppl_scenes.checks import check_int
from ppl_scenes.nn.blocks import channels_last


def _layer_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)


class ResidualBlock(nn.Module):
    """A ResNet v1 basic block: ``relu(shortcut(x) + conv(relu(conv(x))))`` with 3x3 stride-1 convs.

    Maps ``[N, in_channels, H, W]`` to ``[N, out_channels, H, W]``. With ``norm`` a layer norm comes
    before each 3x3 convolution (the task networks, Appendix B); the heatmap network uses none (§3.1
    names none). The shortcut is the identity, or a 1x1 convolution when the channel count changes; it
    is never normalised, so absolute intensities (which a per-sample norm divides out) still get through.

    Args:
        in_channels: input channels.
        out_channels: output channels (default: ``in_channels``).
        norm: put a layer norm before each 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, norm: bool = True):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        check_int(in_channels, "in_channels")
        check_int(out_channels, "out_channels")
        self.branch = nn.Sequential(
            _layer_norm(in_channels) if norm else nn.Identity(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            _layer_norm(out_channels) if norm else nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.shortcut = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.branch(x))


class MultiscaleHeatmapNet(nn.Module):
    """``H_eta``: images ``[B, C, H, W]`` to raw multiscale heatmap scores ``[B, S, H, W]`` (§3.1).

    One fully convolutional network (an input 3x3 conv to ``channels``, ``num_blocks`` residual blocks
    without downsampling, an output 3x3 conv to one map) runs on the image resized by each factor in
    ``scales``, and each map is resized back to ``H x W``. The weights are shared across scales so the
    network cannot favour one scale. Outputs are unnormalised scores, ready for
    :func:`ppl_scenes.ops.local_spatial_softmax`.

    Resizing: at factor ``s`` the image becomes ``max(1, floor(H * s + 0.5)) x max(1, floor(W * s +
    0.5))`` (nearest integer, halves up), so any image size works and nothing needs to divide anything;
    downsampling is bilinear with antialiasing, upsampling back to exactly ``H x W`` is bilinear
    (``align_corners=False``). Factor 1 skips both resizes, so that map is the base network's output.

    Args:
        in_channels: image channels.
        scales: resize factors in ``(0, 1]``, distinct; map ``s`` of the output is for ``scales[s]``
            (a smaller factor shows the network smaller objects, so it finds larger ones).
        channels: width of the residual blocks (32 in the paper).
        num_blocks: residual blocks (4 in the paper).
        norm: layer norms in the residual blocks (the paper names none).
        out_channels: maps per scale (1 for MIST; ``K`` for the channel-wise baseline, which gives
            each instance its own map). The output has ``len(scales) * out_channels`` maps, scale-major.
    """

    def __init__(
        self,
        in_channels: int = 1,
        scales: Sequence[float] = (1.0, 0.5),
        channels: int = 32,
        num_blocks: int = 4,
        norm: bool = False,
        out_channels: int = 1,
    ):
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(channels, "channels")
        check_int(out_channels, "out_channels")
        check_int(num_blocks, "num_blocks", minimum=0)
        scales = tuple(float(s) for s in scales)
        if not scales:
            raise ValueError("scales must name at least one resize factor")
        if any(not 0.0 < s <= 1.0 for s in scales):
            raise ValueError(f"scales must be resize factors in (0, 1], got {scales}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct, got {scales}")
        self.in_channels, self.scales = in_channels, scales
        self.base = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            *[ResidualBlock(channels, norm=norm) for _ in range(num_blocks)],
            nn.Conv2d(channels, out_channels, 3, padding=1),
        ).to(memory_format=torch.channels_last)

    def scaled_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The ``(height, width)`` an ``height x width`` image is resized to at factor ``scale``."""
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be [B, {self.in_channels}, H, W], got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        images = channels_last(images)
        maps = []
        for scale in self.scales:
            if scale == 1.0:
                maps.append(self.base(images))
                continue
            size = self.scaled_size(height, width, scale)
            small = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            h = self.base(small)
            maps.append(F.interpolate(h, size=(height, width), mode="bilinear", align_corners=False))
        return torch.cat(maps, dim=1)


def _over_leading_dims(net: nn.Module, x: Tensor) -> Tensor:
    """``net`` applied to ``x [*, C, H, W]`` as one batch, the leading dimensions ``*`` kept."""
    out = net(channels_last(x.reshape(-1, *x.shape[-3:])))
    return out.reshape(*x.shape[:-3], *out.shape[-3:])


def _check_patches(patches: Tensor, channels: int, size: int) -> None:
    if patches.dim() < 4 or patches.shape[-3:] != (channels, size, size):
        raise ValueError(
            f"patches must be [..., {channels}, {size}, {size}], got shape {tuple(patches.shape)}"
        )


class _PatchNet(nn.Module):
    """Base of the patch networks: checks their shared arguments (see :class:`PatchEncoder`), keeps
    ``in_channels`` and ``patch_size``, and makes the modules in :meth:`build`."""

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 32,
        levels: int = 5,
        blocks_per_level: int = 3,
        width: int = 16,
    ):
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(patch_size, "patch_size")
        check_int(levels, "levels")
        check_int(blocks_per_level, "blocks_per_level")
        check_int(width, "width")
        if patch_size % 2**levels:
            raise ValueError(f"patch_size {patch_size} must be divisible by 2**levels = {2**levels}")
        self.in_channels, self.patch_size = in_channels, patch_size
        self.build(levels, blocks_per_level, width)

    def build(self, levels: int, blocks_per_level: int, width: int) -> None:
        """Make the network's modules (``in_channels`` and ``patch_size`` are set)."""
        raise NotImplementedError


class PatchEncoder(_PatchNet):
    """Patches ``[*, C, p, p]`` to feature maps ``[*, width * 2**(levels-1), p / 2**levels, p / 2**levels]``.

    Appendix B's encoder: a 3x3 input convolution to ``width`` channels (un-normalised, so a patch's
    overall intensity reaches the code), then ``levels`` levels, each ``blocks_per_level`` residual
    blocks (layer norm before each convolution) followed by a 2x2 max pooling; channels double at the
    first block after each pooling. The paper's defaults are 32x32 patches, 5 levels of 3 blocks (so a
    1x1 code); its base width is not given. ``*`` is any number (at least one) of leading dimensions,
    e.g. ``[B, K]`` for ``K`` patches per image.

    Args:
        in_channels: patch channels.
        patch_size: patch side ``p`` (divisible by ``2**levels``).
        levels: downsampling levels.
        blocks_per_level: residual blocks per level.
        width: channels of the first level.
    """

    def build(self, levels: int, blocks_per_level: int, width: int) -> None:
        layers: list[nn.Module] = [nn.Conv2d(self.in_channels, width, 3, padding=1), nn.ReLU()]
        ch = width
        for level in range(levels):
            out = width * 2**level
            layers += [ResidualBlock(ch if i == 0 else out, out) for i in range(blocks_per_level)]
            layers.append(nn.MaxPool2d(2))
            ch = out
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.out_channels, self.out_size = ch, self.patch_size // 2**levels
        self.latent_dim = self.out_channels * self.out_size**2

    def forward(self, patches: Tensor) -> Tensor:
        _check_patches(patches, self.in_channels, self.patch_size)
        return _over_leading_dims(self.net, patches)


class PatchDecoder(_PatchNet):
    """Feature maps ``[*, width * 2**(levels-1), p / 2**levels, p / 2**levels]`` to patches ``[*, C, p, p]``.

    The mirror of :class:`PatchEncoder` (Appendix B): ``levels`` levels, each a layer norm and a 2x2
    stride-2 transposed convolution (halving the channels after the first level) followed by
    ``blocks_per_level`` residual blocks, then a layer norm, a 3x3 convolution to ``C`` channels and a
    sigmoid, so patches are in [0, 1]. Arguments as for :class:`PatchEncoder`.
    """

    def build(self, levels: int, blocks_per_level: int, width: int) -> None:
        ch = width * 2 ** (levels - 1)
        self.in_shape = (ch, self.patch_size // 2**levels, self.patch_size // 2**levels)
        layers: list[nn.Module] = []
        for level in reversed(range(levels)):
            out = width * 2**level
            layers += [_layer_norm(ch), nn.ConvTranspose2d(ch, out, 2, stride=2)]
            layers += [ResidualBlock(out) for _ in range(blocks_per_level)]
            ch = out
        layers += [_layer_norm(ch), nn.Conv2d(ch, self.in_channels, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() < 4 or tuple(features.shape[-3:]) != self.in_shape:
            raise ValueError(
                f"features must be [..., {', '.join(map(str, self.in_shape))}], got {tuple(features.shape)}"
            )
        return _over_leading_dims(self.net, features)


class PatchAutoEncoder(_PatchNet):
    """``T_tau`` for reconstruction: patches ``[*, C, p, p]`` to reconstructions of the same shape in [0, 1].

    A :class:`PatchEncoder` and its mirror :class:`PatchDecoder` (Appendix B); the code is the
    encoder's feature map (``encoder.latent_dim`` numbers, 256 with the defaults). Arguments as for
    :class:`PatchEncoder`; the defaults are the paper's, and CPU-scale models use fewer levels.
    """

    def build(self, levels: int, blocks_per_level: int, width: int) -> None:
        arch = (self.in_channels, self.patch_size, levels, blocks_per_level, width)
        self.encoder, self.decoder = PatchEncoder(*arch), PatchDecoder(*arch)

    def forward(self, patches: Tensor) -> Tensor:
        return self.decoder(self.encoder(patches))


class PatchClassifier(nn.Module):
    """``T_tau`` for classification: patches ``[*, C, p, p]`` to class logits ``[*, num_classes]``.

    The auto-encoder's :class:`PatchEncoder` with a dense layer from its flattened code to the class
    scores (Appendix B). Logits are unnormalised (use a softmax or cross-entropy on them).

    Args:
        in_channels: patch channels.
        num_classes: number of classes (10 digits in the paper).
        patch_size, levels, blocks_per_level, width: as for :class:`PatchEncoder`.
        decoder: also build the auto-encoder's :class:`PatchDecoder` on the same code (``self.decoder``,
            else None), for a reconstruction term beside the classification.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        patch_size: int = 32,
        levels: int = 5,
        blocks_per_level: int = 3,
        width: int = 16,
        decoder: bool = False,
    ):
        super().__init__()
        check_int(num_classes, "num_classes")
        arch = (in_channels, patch_size, levels, blocks_per_level, width)
        self.encoder = PatchEncoder(*arch)
        self.head = nn.Linear(self.encoder.latent_dim, num_classes)
        self.decoder = PatchDecoder(*arch) if decoder else None

    def logits(self, features: Tensor) -> Tensor:
        """Class scores ``[..., num_classes]`` of the encoder's codes ``[..., C, h, w]``."""
        return self.head(features.flatten(-3))

    def forward(self, patches: Tensor) -> Tensor:
        return self.logits(self.encoder(patches))
