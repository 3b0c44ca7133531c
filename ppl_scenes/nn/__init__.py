"""Reusable networks shared by the models."""

from ppl_scenes.nn.attention import ProxyAttention
from ppl_scenes.nn.blocks import (
    GlimpseDecoder,
    GlimpseEncoder,
    GridBackbone,
    inverse_positive,
    positive,
    stride_factors,
)
from ppl_scenes.nn.mist import (
    MultiscaleHeatmapNet,
    PatchAutoEncoder,
    PatchClassifier,
    PatchDecoder,
    PatchEncoder,
    ResidualBlock,
)
from ppl_scenes.nn.mlp import MLP, Dense, GRUCell, mlp, summed_weight_gradients
from ppl_scenes.nn.ssd import AnchorEncoder, CodeDecoder, PyramidBackbone, build_ssd

__all__ = [
    "AnchorEncoder",
    "CodeDecoder",
    "Dense",
    "GlimpseDecoder",
    "GlimpseEncoder",
    "GRUCell",
    "GridBackbone",
    "MLP",
    "MultiscaleHeatmapNet",
    "PatchAutoEncoder",
    "PatchClassifier",
    "PatchDecoder",
    "PatchEncoder",
    "ProxyAttention",
    "PyramidBackbone",
    "ResidualBlock",
    "inverse_positive",
    "build_ssd",
    "mlp",
    "positive",
    "stride_factors",
    "summed_weight_gradients",
]
