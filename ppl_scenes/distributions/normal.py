"""A Normal whose log-density takes fewer operations, forward and backward (issue 36)."""

from __future__ import annotations

import math

import pyro.distributions as dist
from torch import Tensor

from ppl_scenes.ops.constants import scalar

__all__ = ["Normal"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Normal(dist.Normal):
    """``pyro.distributions.Normal`` with ``log_prob = -z^2 / 2 - log(scale) - log(sqrt(2 pi))``,
    ``z = (value - loc) / scale``.

    The same density (to float rounding) as torch's, which squares twice (``(value - loc) ** 2`` and
    ``scale ** 2``): each power's backward node costs ten operations. The models' Gaussian sites use it.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return (z * z).mul(scalar(-0.5, z)) - self.scale.log() - scalar(_LOG_SQRT_2PI, z)
