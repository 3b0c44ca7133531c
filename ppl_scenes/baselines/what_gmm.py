"""SPAIR + GMM: GMAIR's clustering baseline (Zhu et al. 2021, §4.3, Table 2).

A trained scene model finds the objects; a Gaussian mixture (scikit-learn's ``GaussianMixture``) fitted
afterwards on the ``what`` codes of its detections assigns each object a cluster. Detection is the
model's own, so the comparison with GMAIR isolates what learning the mixture *inside* the model buys.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor

from ppl_scenes.checks import check_positive_int
from ppl_scenes.metrics.scoring import parse_dataset
from ppl_scenes.scene import RankedParse, SceneParse

__all__ = ["WhatGMM"]


class WhatGMM(RankedParse):
    """A scene model's detections, each labelled by a Gaussian mixture over its ``what`` code.

    Call :meth:`fit` on training scenes, then :meth:`parse` like any model (the parses carry
    ``labels``), e.g. with :func:`~ppl_scenes.metrics.scoring.evaluate_detection`, which then also
    reports clustering ACC and NMI.

    Args:
        model: a trained scene model whose ``parse`` returns ``what`` codes (e.g. SPAIR).
        num_components: mixture components (GMAIR's baseline: 10).
        covariance_type: scikit-learn's ``covariance_type`` (``"full"``, ``"diag"``, ...).
        seed: the mixture's ``random_state``.
    """

    def __init__(self, model, num_components: int = 10, covariance_type: str = "full", seed: int = 0):
        self.model = model
        self.num_components = check_positive_int(num_components, "num_components")
        self.mixture = GaussianMixture(
            self.num_components, covariance_type=covariance_type, random_state=seed, n_init=3
        )
        self.fitted = False

    @property
    def config(self):
        """The wrapped model's config."""
        return self.model.config

    @property
    def presence_threshold(self) -> float:
        """The wrapped model's: it decides which objects are present."""
        return self.model.presence_threshold

    @property
    def device(self) -> torch.device:
        return self.model.device

    def codes(
        self, dataset, max_scenes: int | None = None, batch_size: int = 64, progress: bool = False
    ) -> Tensor:
        """The ``what`` codes ``[N, A]`` of every object the model finds in ``dataset``'s images."""
        parses, _, _ = parse_dataset(
            self.model, dataset, batch_size, max_scenes, None, progress, keep_images=False
        )
        if any(p.what is None for p in parses):
            raise ValueError("the model's parse gives no what codes to cluster")
        codes = [w.cpu() for p in parses for w in p.what]
        return torch.cat(codes) if codes else torch.empty(0)

    def fit(self, dataset, max_scenes: int | None = None, batch_size: int = 64, progress: bool = False):
        """Fit the mixture on the codes of the objects found in ``dataset``; returns ``self``.

        Raises:
            ValueError: fewer objects were found than the mixture has components.
        """
        codes = self.codes(dataset, max_scenes, batch_size, progress)
        if len(codes) < self.num_components:
            raise ValueError(f"found {len(codes)} objects, fewer than {self.num_components} components")
        self.mixture.fit(codes.double().numpy())
        self.fitted = True
        return self

    def predict(self, codes: Tensor) -> Tensor:
        """The mixture component of each code ``[N, A] -> [N]``."""
        if not self.fitted:
            raise RuntimeError("call fit(dataset) before predicting clusters")
        if len(codes) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.as_tensor(self.mixture.predict(codes.detach().cpu().double().numpy()).astype(np.int64))

    @torch.no_grad()
    def parse(self, x: Tensor, score_threshold: float | None = None) -> SceneParse:
        """The model's parse with a cluster per object in ``labels``."""
        parse = self.model.parse(x, score_threshold=score_threshold)
        return dataclasses.replace(parse, labels=[self.predict(w) for w in parse.what])
