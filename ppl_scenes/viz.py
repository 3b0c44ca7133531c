"""Matplotlib figures: boxes on images, reconstructions, training curves, per-count metrics, heatmaps
and patches.

Figures are built as :class:`matplotlib.figure.Figure` objects, not through ``pyplot``: no global
figure registry to leak from long loops, and no backend to choose — saving to PNG uses Agg whatever
backend the session has, so importing this module never calls ``matplotlib.use``. In a notebook the
returned figure displays as the cell's value.

Images are drawn with their pixel edges on integer coordinates (``extent=(0, W, H, 0)``), so a box
``(x1, y1, x2, y2)`` in absolute pixels (torchvision's xyxy) outlines exactly the pixels
``x1 <= x < x2``, ``y1 <= y < y2``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ppl_scenes.checks import check_images, check_positive_int
from ppl_scenes.metrics._validation import check_boxes

__all__ = [
    "GT_COLOR",
    "PRED_COLOR",
    "draw_boxes",
    "plot_contingency",
    "plot_count_posterior",
    "plot_curves",
    "plot_heatmaps",
    "plot_metric_by_count",
    "plot_metrics_by_count",
    "plot_patches",
    "plot_posterior_boxes",
    "plot_scenes",
    "show_image",
]

#: Colour of predicted boxes (blue, as in SPAIR Fig. 2).
PRED_COLOR = "dodgerblue"
#: Colour of ground-truth boxes (yellow, as in SPAIR Fig. 2).
GT_COLOR = "yellow"

PathLike = str | os.PathLike


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    """Save ``fig`` to ``path`` (creating parent folders) when a path is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def show_image(ax: Axes, image: Tensor) -> None:
    """Draw one ``[C, H, W]`` image (C = 1 grey, C = 3 RGB) with pixel edges on integer coordinates."""
    _, h, w = image.shape
    arr = image.detach().cpu().float().clamp(0, 1).numpy()
    if arr.shape[0] == 1:
        ax.imshow(arr[0], cmap="gray", vmin=0.0, vmax=1.0, extent=(0, w, h, 0), interpolation="nearest")
    else:
        ax.imshow(arr.transpose(1, 2, 0), extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_boxes(
    ax: Axes,
    boxes: Tensor,
    color: str = PRED_COLOR,
    labels: Sequence[object] | Tensor | None = None,
    linewidth: float = 1.5,
    alpha: float = 1.0,
) -> list[Artist]:
    """Outline boxes on an axes, optionally writing a label at each box's top-left corner.

    Args:
        ax: the axes; boxes are in its data coordinates (pixel edges when the image was drawn by
            :func:`plot_scenes`, or with ``imshow(..., extent=(0, W, H, 0))``).
        boxes: ``[N, 4]`` xyxy in absolute pixels.
        color: any matplotlib colour.
        labels: one label per box (str, int, ...), or ``None``.
        linewidth: outline width in points.
        alpha: opacity of the outlines (overlaid posterior samples read best faint).

    Returns:
        The artists added (rectangles, then texts).

    Raises:
        ValueError: on boxes not shaped ``[N, 4]`` or not xyxy, or a label count that differs from N.
    """
    b = check_boxes(boxes, "boxes")
    if labels is not None:
        labels = labels.tolist() if isinstance(labels, Tensor) else list(labels)
        if len(labels) != b.shape[0]:
            raise ValueError(f"labels has {len(labels)} entries but there are {b.shape[0]} boxes")
    artists: list[Artist] = []
    for x1, y1, x2, y2 in b.tolist():
        rect = Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth, alpha=alpha
        )
        artists.append(ax.add_patch(rect))
    if labels is not None:
        for (x1, y1, _, _), lab in zip(b.tolist(), labels):
            artists.append(
                ax.text(
                    x1,
                    y1,
                    str(lab),
                    color="black",
                    fontsize=7,
                    va="bottom",
                    ha="left",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
                )
            )
    return artists


def _per_image_boxes(boxes: object, name: str, batch: int) -> list[Tensor]:
    if isinstance(boxes, Tensor) or not isinstance(boxes, Sequence):
        raise ValueError(f"{name} must be a list with one [N_i, 4] tensor per image")
    if len(boxes) != batch:
        raise ValueError(f"{name} has {len(boxes)} entries but there are {batch} images")
    return [check_boxes(b, f"{name}[{i}]") for i, b in enumerate(boxes)]


def plot_scenes(
    images: Tensor,
    pred_boxes: Sequence[Tensor] | None = None,
    gt_boxes: Sequence[Tensor] | None = None,
    reconstructions: Tensor | None = None,
    titles: Sequence[str] | None = None,
    path: PathLike | None = None,
    max_images: int = 8,
) -> Figure:
    """A grid of scenes: inputs with boxes on the first row, reconstructions on the second.

    Predicted boxes are blue and ground-truth boxes yellow, as in SPAIR's Fig. 2.

    Args:
        images: ``[B, C, H, W]`` float32 in [0, 1], C = 1 or 3.
        pred_boxes: per image, predicted boxes ``[N_i, 4]`` xyxy pixels.
        gt_boxes: per image, ground-truth boxes ``[M_i, 4]``.
        reconstructions: ``[B, C, H, W]`` like ``images``; adds a second row.
        titles: one title per image (B of them, or at least as many as are shown).
        path: where to save the figure (parents are created); not saved when ``None``.
        max_images: at most this many images (the first ones) are shown.

    Returns:
        The figure.

    Raises:
        ValueError: on invalid images or reconstructions, lists whose length is not B, malformed
            boxes, too few titles, or a non-positive ``max_images``.
    """
    check_images(images)
    batch = images.shape[0]
    n = min(batch, check_positive_int(max_images, "max_images"))
    if reconstructions is not None:
        check_images(reconstructions, name="reconstructions")
        if reconstructions.shape != images.shape:
            raise ValueError(
                f"reconstructions shape {tuple(reconstructions.shape)} differs from images "
                f"shape {tuple(images.shape)}"
            )
    preds = None if pred_boxes is None else _per_image_boxes(pred_boxes, "pred_boxes", batch)
    truths = None if gt_boxes is None else _per_image_boxes(gt_boxes, "gt_boxes", batch)
    if titles is not None:
        titles = list(titles)
        if len(titles) < n:
            raise ValueError(f"titles has {len(titles)} entries but {n} images are shown")

    rows = 1 if reconstructions is None else 2
    fig = Figure(figsize=(2.0 * n, 2.0 * rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(rows, n, squeeze=False))
    for j in range(n):
        ax = axes[0, j]
        show_image(ax, images[j])
        if truths is not None:
            # Wider than the predicted outline drawn over it, so a perfect hit still shows both.
            draw_boxes(ax, truths[j], color=GT_COLOR, linewidth=3.0)
        if preds is not None:
            draw_boxes(ax, preds[j], color=PRED_COLOR)
        if titles is not None:
            ax.set_title(str(titles[j]), fontsize=9)
        if reconstructions is not None:
            show_image(axes[1, j], reconstructions[j])
    axes[0, 0].set_ylabel("input")
    if reconstructions is not None:
        axes[1, 0].set_ylabel("reconstruction")
    handles = []
    if preds is not None:
        handles.append(Line2D([], [], color=PRED_COLOR, label="predicted"))
    if truths is not None:
        handles.append(Line2D([], [], color=GT_COLOR, label="ground truth"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return _finish(fig, path)


def _read_jsonl(path: PathLike) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno} is not valid JSON: {err}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno} is not a JSON object")
            records.append(rec)
    return records


def plot_curves(
    records: Sequence[Mapping] | PathLike,
    keys: str | Sequence[str] = ("loss",),
    path: PathLike | None = None,
) -> Figure:
    """Training curves against ``step``, one panel per key.

    Args:
        records: logged records (dicts with ``"step"`` and the keys), or the path of a run's
            ``metrics.jsonl`` (one JSON object per line).
        keys: which logged values to plot; records without a key are skipped for that key, and
            ``None`` values are skipped.
        path: where to save the figure; not saved when ``None``.

    Returns:
        The figure.

    Raises:
        ValueError: on no records, a key that no record has, a record with a key but no ``step``,
            or non-numeric values.
    """
    if isinstance(records, str | os.PathLike):
        records = _read_jsonl(records)
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise ValueError("records must be a list of dicts or the path of a metrics.jsonl file")
    if len(records) == 0:
        raise ValueError("records is empty: nothing to plot")
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys:
        raise ValueError("keys is empty: name at least one logged value")
    series = {}
    for key in keys:
        xs, ys = [], []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise ValueError(f"records[{i}] is not a dict")
            if key not in rec or rec[key] is None:
                continue
            if "step" not in rec:
                raise ValueError(f"records[{i}] has {key!r} but no 'step'")
            try:
                xs.append(float(rec["step"]))
                ys.append(float(rec[key]))
            except (TypeError, ValueError):
                raise ValueError(f"records[{i}] has a non-numeric 'step' or {key!r}") from None
        if not xs:
            available = sorted({k for rec in records for k in rec} - {"step"})
            raise ValueError(f"no record has {key!r}; logged keys are {available}")
        series[key] = (xs, ys)

    fig = Figure(figsize=(5.0, 2.2 * len(keys)), layout="constrained")
    axes = np.asarray(fig.subplots(len(keys), 1, sharex=True, squeeze=False))[:, 0]
    for ax, (key, (xs, ys)) in zip(axes, series.items()):
        ax.plot(xs, ys, lw=1.2, marker="." if len(xs) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _finish(fig, path)


def _as_series(values: Mapping, name: str) -> tuple[list[int], list[float]]:
    if not values:
        raise ValueError(f"{name} is empty")
    xs, ys = [], []
    for k, v in sorted(values.items(), key=lambda kv: float(kv[0])):
        try:
            xs.append(float(k))
            ys.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must map counts to numbers, got {k!r}: {v!r}") from None
    return xs, ys


def _count_series(results: Mapping, name: str = "results") -> dict[str | None, tuple[list, list]]:
    """``{count: value}`` (one unnamed series) or ``{name: {count: value}}`` as ``{name: (xs, ys)}``."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"{name} must be a non-empty dict {{count: value}} or {{name: {{count: value}}}}")
    nested = [isinstance(v, Mapping) for v in results.values()]
    if all(nested):
        return {str(k): _as_series(vals, f"{name}[{k!r}]") for k, vals in results.items()}
    if not any(nested):
        return {None: _as_series(results, name)}
    raise ValueError(f"{name} mixes numbers and named series")


def _draw_count_axes(ax: Axes, series: Mapping, ylabel: str, xlabel: str, title: str | None) -> None:
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if None not in series:
        ax.legend(fontsize=8)


def plot_metric_by_count(
    results: Mapping[int, float] | Mapping[str, Mapping[int, float]],
    ylabel: str,
    path: PathLike | None = None,
    xlabel: str = "number of objects",
    title: str | None = None,
) -> Figure:
    """A metric against the number of objects (SPAIR Fig. 3), one line per named series.

    Args:
        results: ``{count: value}`` for one series, or ``{name: {count: value}}`` for several (e.g.
            one per model); ``nan`` values leave gaps.
        ylabel: what the metric is (e.g. ``"AP"``, ``"count MAE"``).
        path: where to save the figure; not saved when ``None``.
        xlabel: label of the count axis.
        title: optional title.

    Returns:
        The figure.

    Raises:
        ValueError: on empty results, or values that are neither all numbers nor all mappings.
    """
    series = _count_series(results)
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    _draw_count_axes(fig.subplots(), series, ylabel, xlabel, title)
    return _finish(fig, path)


def plot_metrics_by_count(
    results: Mapping[str, Mapping[int, Mapping[str, float]]],
    metrics: Mapping[str, str],
    path: PathLike | None = None,
    xlabel: str = "number of objects",
    title: str | None = None,
) -> Figure:
    """Several metrics against the number of objects, one panel per metric (SPAIR Fig. 3 and 7).

    Args:
        results: ``{name: {count: {metric: value}}}``, one entry per model or condition -- e.g.
            ``{"SPAIR": evaluate_by_count(model, data)["by_count"]}``; ``nan`` or ``None`` values
            and missing metrics leave gaps.
        metrics: ``{metric key: axis label}`` in panel order, e.g. ``{"ap_spair": "AP"}``.
        path: where to save the figure; not saved when ``None``.
        xlabel: label of the count axes.
        title: optional title over all panels.

    Returns:
        The figure.

    Raises:
        ValueError: on empty ``results`` or ``metrics``, a series that is not ``{count: {metric:
            value}}``, or a metric that no series has.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict {name: {count: {metric: value}}}")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError("metrics must be a non-empty dict {metric key: axis label}")
    for name, by_count in results.items():
        if not isinstance(by_count, Mapping) or not by_count:
            raise ValueError(f"results[{name!r}] must be a non-empty dict {{count: {{metric: value}}}}")
        if not all(isinstance(v, Mapping) for v in by_count.values()):
            raise ValueError(f"results[{name!r}] must map each count to a dict of metrics")
    fig = Figure(figsize=(4.2 * len(metrics), 3.2), layout="constrained")
    axes = np.asarray(fig.subplots(1, len(metrics), squeeze=False))[0]
    for ax, (key, ylabel) in zip(axes, metrics.items()):
        per_series = {
            name: {c: (math.nan if m.get(key) is None else m[key]) for c, m in by_count.items() if key in m}
            for name, by_count in results.items()
        }
        per_series = {name: vals for name, vals in per_series.items() if vals}
        if not per_series:
            raise ValueError(f"no series has the metric {key!r}")
        _draw_count_axes(ax, _count_series(per_series, "results"), ylabel, xlabel, None)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_count_posterior(
    probs: Tensor | np.ndarray,
    path: PathLike | None = None,
    true_counts: Sequence[int] | Tensor | None = None,
    max_images: int = 8,
) -> Figure:
    """Bar charts of per-image distributions over the number of objects.

    Args:
        probs: ``[B, K]``: row b is image b's probability of 0, 1, ..., K-1 objects (rows are drawn
            as given, not renormalised).
        path: where to save the figure; not saved when ``None``.
        true_counts: optional true count per image, drawn as a red bar outline.
        max_images: at most this many images (the first ones) are shown.

    Returns:
        The figure.

    Raises:
        ValueError: on probs that are not a non-empty 2-D array of finite non-negative numbers, a
            ``true_counts`` of the wrong length, or a non-positive ``max_images``.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, Tensor) else np.asarray(probs, float)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must have shape [B, K] with B, K >= 1, got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative (probabilities, not log-probabilities)")
    n = min(p.shape[0], check_positive_int(max_images, "max_images"))
    truth = None
    if true_counts is not None:
        truth = true_counts.tolist() if isinstance(true_counts, Tensor) else list(true_counts)
        if len(truth) != p.shape[0]:
            raise ValueError(f"true_counts has {len(truth)} entries but probs has {p.shape[0]} rows")

    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.0 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    ks = np.arange(p.shape[1])
    for b, ax in enumerate(axes):
        if b >= n:
            ax.set_axis_off()
            continue
        bars = ax.bar(ks, p[b], color="tab:blue", width=0.8)
        if truth is not None and 0 <= int(truth[b]) < len(ks):
            bars[int(truth[b])].set_edgecolor("red")
            bars[int(truth[b])].set_linewidth(1.5)
        ax.set_title(f"image {b}" + ("" if truth is None else f" (true {int(truth[b])})"), fontsize=9)
        ax.set_xlabel("count", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("probability")
    return _finish(fig, path)


def plot_posterior_boxes(
    images: Tensor,
    sample_boxes: Sequence[Sequence[Tensor]],
    gt_boxes: Sequence[Tensor] | None = None,
    titles: Sequence[str] | None = None,
    path: PathLike | None = None,
    max_images: int = 8,
) -> Figure:
    """Images with the boxes of several posterior draws overlaid: where the model is unsure, the
    outlines spread; where it is sure, they coincide.

    Args:
        images: ``[B, C, H, W]`` in [0, 1].
        sample_boxes: per image, per draw, ``[N, 4]`` xyxy boxes
            (:func:`ppl_scenes.infer.posterior.posterior_boxes`).
        gt_boxes: optional true boxes per image (yellow).
        titles: one title per image shown.
        path: where to save the figure; not saved when ``None``.
        max_images: at most this many images (the first ones) are shown.
    """
    check_images(images)
    batch = images.shape[0]
    if len(sample_boxes) != batch:
        raise ValueError(f"sample_boxes has {len(sample_boxes)} entries but there are {batch} images")
    n = min(batch, check_positive_int(max_images, "max_images"))
    truths = None if gt_boxes is None else _per_image_boxes(gt_boxes, "gt_boxes", batch)
    fig = Figure(figsize=(2.0 * n, 2.4), layout="constrained")
    axes = np.asarray(fig.subplots(1, n, squeeze=False))[0]
    for j, ax in enumerate(axes):
        show_image(ax, images[j])
        if truths is not None:
            draw_boxes(ax, truths[j], color=GT_COLOR, linewidth=3.0)
        draws = sample_boxes[j]
        for boxes in draws:
            draw_boxes(ax, boxes, color=PRED_COLOR, linewidth=1.0, alpha=max(0.1, min(1.0, 3.0 / len(draws))))
        if titles is not None:
            ax.set_title(str(titles[j]), fontsize=9)
    handles = [Line2D([], [], color=PRED_COLOR, label="posterior draws")]
    if truths is not None:
        handles.append(Line2D([], [], color=GT_COLOR, label="ground truth"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return _finish(fig, path)


def plot_heatmaps(
    maps: Sequence[Tensor] | Tensor,
    titles: Sequence[str] | None = None,
    points: Sequence[Tensor] | None = None,
    path: PathLike | None = None,
    cmap: str = "magma",
) -> Figure:
    """A row of 2-D maps (heatmaps, targets, ...), each on its own colour scale, optionally with points.

    Args:
        maps: ``M`` maps ``[H, W]`` (a list, or a tensor ``[M, H, W]``).
        titles: one title per map.
        points: per map, ``[K, 2]`` ``(x, y)`` pixel coordinates to mark (e.g. MIST's top-K), or
            None for no marks on that map.
        path: where to save the figure; not saved when ``None``.
        cmap: matplotlib colour map.

    Returns:
        The figure.

    Raises:
        ValueError: on no maps, a map that is not 2-D, or titles/points of the wrong length.
    """
    maps = list(maps)
    if not maps:
        raise ValueError("maps is empty: give at least one [H, W] map")
    for i, m in enumerate(maps):
        if not isinstance(m, Tensor) or m.dim() != 2:
            raise ValueError(f"maps[{i}] must be a 2-D tensor [H, W], got {getattr(m, 'shape', type(m))}")
    for name, seq in (("titles", titles), ("points", points)):
        if seq is not None and len(seq) != len(maps):
            raise ValueError(f"{name} must have one entry per map ({len(maps)}), got {len(seq)}")
    fig = Figure(figsize=(2.2 * len(maps), 2.4), layout="constrained")
    axes = np.asarray(fig.subplots(1, len(maps), squeeze=False))[0]
    for i, (ax, m) in enumerate(zip(axes, maps)):
        h, w = m.shape
        ax.imshow(m.detach().cpu().float().numpy(), cmap=cmap, extent=(0, w, h, 0), interpolation="nearest")
        if points is not None and points[i] is not None and len(points[i]):
            xy = points[i].detach().cpu().float()
            ax.scatter(xy[:, 0], xy[:, 1], s=18, facecolors="none", edgecolors="cyan", linewidths=1.2)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return _finish(fig, path)


def plot_patches(
    patches: Tensor,
    reconstructions: Tensor | None = None,
    titles: Sequence[str] | None = None,
    path: PathLike | None = None,
) -> Figure:
    """The ``K`` patches of one image in a row, with the task network's reconstructions below.

    Args:
        patches: ``[K, C, p, p]`` in [0, 1].
        reconstructions: ``[K, C, p, p]`` like ``patches``; adds a second row.
        titles: one title per patch (e.g. its class).
        path: where to save the figure; not saved when ``None``.

    Returns:
        The figure.

    Raises:
        ValueError: on patches that are not ``[K, C, p, p]`` images, or a reconstruction of another shape.
    """
    check_images(patches, name="patches", check_range=False)
    if reconstructions is not None and reconstructions.shape != patches.shape:
        raise ValueError(
            f"reconstructions must have the patches' shape {tuple(patches.shape)}, "
            f"got {tuple(reconstructions.shape)}"
        )
    if titles is not None and len(titles) != len(patches):
        raise ValueError(f"titles must have one entry per patch ({len(patches)}), got {len(titles)}")
    rows = [patches] if reconstructions is None else [patches, reconstructions]
    k = len(patches)
    fig = Figure(figsize=(1.1 * k, 1.2 * len(rows)), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), k, squeeze=False))
    for r, row in enumerate(rows):
        for j in range(k):
            show_image(axes[r, j], row[j])
            if r == 0 and titles is not None:
                axes[r, j].set_title(str(titles[j]), fontsize=8)
    axes[0, 0].set_ylabel("patch", fontsize=8)
    if reconstructions is not None:
        axes[1, 0].set_ylabel("decoded", fontsize=8)
    return _finish(fig, path)


def plot_contingency(
    labelings: Mapping[str, tuple[Tensor | np.ndarray, Tensor | np.ndarray]],
    path: PathLike | None = None,
    class_name: str = "true class",
) -> Figure:
    """Class-by-cluster count tables side by side: which classes each clustering merges or splits.

    Each panel is :func:`~ppl_scenes.metrics.contingency_table` of one ``(pred, true)`` labelling, its
    columns ordered so that the cluster matched to each class by the Hungarian map of clustering ACC
    stands on the diagonal (clusters left unmatched come last); those matched cells are outlined. The
    colour is the share of the row (the class) in each cluster; the numbers are counts.

    Args:
        labelings: panel title -> ``(predicted cluster per item, true class per item)``.
        path: where to save the figure; not saved when ``None``.
        class_name: the rows' axis label.

    Returns:
        The figure.

    Raises:
        ValueError: on no labelings, or a labelling :func:`~ppl_scenes.metrics.contingency_table` refuses.
    """
    from scipy.optimize import linear_sum_assignment

    from ppl_scenes.metrics import cluster_accuracy, contingency_table

    if not labelings:
        raise ValueError("labelings is empty: give at least one (pred, true) pair")
    fig = Figure(figsize=(5.2 * len(labelings), 4.6), layout="constrained")
    axes = np.asarray(fig.subplots(1, len(labelings), squeeze=False))[0]
    for ax, (title, (pred, true)) in zip(axes, labelings.items()):
        table, classes, clusters = contingency_table(pred, true)
        # the matching of metrics.cluster_class_map, on the table at hand: class row -> cluster column
        match = dict(zip(*linear_sum_assignment(table, maximize=True)))
        order = [int(match[r]) for r in sorted(match)]
        order += [j for j in range(len(clusters)) if j not in order]
        table = table[:, order]
        share = table / np.maximum(table.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if table[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(table[i, j]), ha="center", va="center", fontsize=7, color=color)
        for r, j in match.items():
            ax.add_patch(Rectangle((order.index(j) - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
        ax.set_xticks(range(len(clusters)), [str(clusters[j]) for j in order], fontsize=7)
        ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
        ax.set_xlabel("cluster (ordered by its matched class)")
        ax.set_ylabel(class_name)
        ax.set_title(f"{title}: ACC {cluster_accuracy(pred, true):.3f}", fontsize=9)
    return _finish(fig, path)
