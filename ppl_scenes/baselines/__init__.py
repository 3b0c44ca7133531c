"""Baselines the papers compare against: SPAIR's ConnComp, GMAIR's SPAIR + GMM, MIST's grid and
channel-wise localisers (registered models: ``mist_grid``, ``mist_channelwise``), the saccading paper's
ResNet-18 classifiers (registered model ``resnet``)."""

from ppl_scenes.baselines.conncomp import ConnComp, conncomp_detect
from ppl_scenes.baselines.mist import ChannelwiseMIST, GridPatches
from ppl_scenes.baselines.resnet import ResNetClassifier, ResNetConfig
from ppl_scenes.baselines.what_gmm import WhatGMM

__all__ = [
    "ChannelwiseMIST",
    "ConnComp",
    "GridPatches",
    "ResNetClassifier",
    "ResNetConfig",
    "WhatGMM",
    "conncomp_detect",
]
