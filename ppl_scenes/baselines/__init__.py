"""Baselines the papers compare against: SPAIR's ConnComp, GMAIR's SPAIR + GMM."""

from ppl_scenes.baselines.conncomp import ConnComp, conncomp_detect
from ppl_scenes.baselines.what_gmm import WhatGMM

__all__ = ["ConnComp", "WhatGMM", "conncomp_detect"]
