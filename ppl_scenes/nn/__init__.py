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

__all__ = [
    "GlimpseDecoder",
    "GlimpseEncoder",
    "GridBackbone",
    "inverse_positive",
    "mlp",
    "positive",
    "stride_factors",
]
