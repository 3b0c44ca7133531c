"""The scene models, one module per family; all share :class:`ppl_scenes.models.base.SceneModel`."""

from ppl_scenes.models.base import MODELS, SceneModel, SceneParse
from ppl_scenes.models.gmair import GMAIR, GMAIRConfig, GMAIRGuide
from ppl_scenes.models.mist import MIST, MISTConfig
from ppl_scenes.models.saccade import SaccadeConfig, VariationalSaccading
from ppl_scenes.models.spair import SPAIR, SPAIRConfig, SPAIRGuide
from ppl_scenes.models.ssdir import SSDIR, SSDIRConfig

__all__ = [
    "GMAIR",
    "GMAIRConfig",
    "GMAIRGuide",
    "MIST",
    "MISTConfig",
    "MODELS",
    "SPAIR",
    "SPAIRConfig",
    "SPAIRGuide",
    "SSDIR",
    "SSDIRConfig",
    "SaccadeConfig",
    "SceneModel",
    "SceneParse",
    "VariationalSaccading",
]
