"""Non-learned baselines the papers compare against (SPAIR's ConnComp)."""

from ppl_scenes.baselines.conncomp import conncomp_detect

__all__ = ["conncomp_detect"]
