"""Non-learned baselines the papers compare against (SPAIR's ConnComp)."""

from ppl_scenes.baselines.conncomp import ConnComp, conncomp_detect

__all__ = ["ConnComp", "conncomp_detect"]
