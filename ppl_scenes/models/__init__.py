"""The scene models, one module per family; all share :class:`ppl_scenes.models.base.SceneModel`."""

from ppl_scenes.models.base import MODELS, SceneModel, SceneParse
from ppl_scenes.models.spair import SPAIR, SPAIRConfig, SPAIRGuide

__all__ = ["MODELS", "SPAIR", "SPAIRConfig", "SPAIRGuide", "SceneModel", "SceneParse"]
