"""Reusable networks shared by the models."""

from ppl_scenes.nn.blocks import (
    GlimpseDecoder,
    GlimpseEncoder,
    GridBackbone,
    inverse_positive,
    mlp,
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

__all__ = [
    "GlimpseDecoder",
    "GlimpseEncoder",
    "GridBackbone",
    "MultiscaleHeatmapNet",
    "PatchAutoEncoder",
    "PatchClassifier",
    "PatchDecoder",
    "PatchEncoder",
    "ResidualBlock",
    "inverse_positive",
    "mlp",
    "positive",
    "stride_factors",
]
