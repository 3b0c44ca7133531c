"""Linear probe: how linearly decodable a class is from learned object codes (e.g. ``z_what``).

A logistic regression (scikit-learn) is fitted on standardised features of a training split and
scored on the held-out split; high accuracy means the codes carry the class in a linearly separable
form (SSDIR's and GMAIR's evaluation of ``what`` representations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from ppl_scenes.checks import check_positive_int
from ppl_scenes.metrics._validation import as_1d_array, check_threshold

__all__ = ["linear_probe"]


def _features(features: Tensor | np.ndarray) -> np.ndarray:
    arr = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"features is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise ValueError(f"features must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or Inf values")
    return arr.astype(np.float64)


def linear_probe(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    test_fraction: float = 0.25,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict:
    """Fit a logistic-regression probe on a training split and score it on the held-out split.

    Features are standardised with statistics of the training split only (a
    ``StandardScaler`` → ``LogisticRegression`` pipeline, default L2 regularisation, lbfgs). The split
    is stratified by label when every class has at least two items and both parts can hold one item
    of each class; otherwise it is a plain random split (reported as ``stratified: False``).

    Args:
        features: ``[N, D]`` feature vectors (e.g. ``what`` codes of matched detections).
        labels: ``[N]`` integer class per row.
        test_fraction: share of rows held out, in (0, 1); the test size is rounded up as in
            :func:`sklearn.model_selection.train_test_split`.
        seed: seed of the split and of the solver.
        max_iter: iteration limit of the solver.

    Returns:
        ``{"accuracy", "precision", "recall", "f1", "n_train", "n_test", "stratified"}``; precision,
        recall and F1 are macro averages over the classes present in the test labels or predictions
        (:mod:`sklearn.metrics`, an undefined precision counts as 0).

    Raises:
        ValueError: on features not ``[N, D]``, labels not matching, NaN/Inf, fewer than two classes
            (overall or in the training split), a split leaving a part empty, or bad arguments.
    """
    test_fraction = check_threshold(test_fraction, "test_fraction")
    max_iter = check_positive_int(max_iter, "max_iter")
    x = _features(features)
    y = as_1d_array(labels, "labels", integer=True)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"features has {x.shape[0]} rows but labels has {y.shape[0]} entries")
    n = x.shape[0]
    classes, class_counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("labels hold a single class: a probe needs at least two")
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    if n_train < 2 or n_test < 1:
        raise ValueError(f"{n} rows with test_fraction={test_fraction} leave too few for train and test")
    stratified = bool(class_counts.min() >= 2 and n_test >= len(classes) and n_train >= len(classes))
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=n_test, random_state=seed, stratify=y if stratified else None
    )
    if len(np.unique(y_tr)) < 2:
        raise ValueError("the training split holds a single class; give more data or a smaller test_fraction")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    probe.fit(x_tr, y_tr)
    y_hat = probe.predict(x_te)
    precision, recall, f1, _ = precision_recall_fscore_support(y_te, y_hat, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_te, y_hat)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        "stratified": stratified,
    }
