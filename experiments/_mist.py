"""What MIST's two experiments share: datasets, training with curves and heatmap snapshots, figures."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import add_split_args, build_splits, config_overrides, first_scenes, positive_int, train_model

from ppl_scenes.baselines import ChannelwiseMIST, GridPatches
from ppl_scenes.models import MIST, MISTConfig
from ppl_scenes.runs import read_metrics
from ppl_scenes.viz import draw_boxes, plot_curves, plot_heatmaps, plot_patches

#: The models of Tables 1 and 2 by their names in the flags.
MODELS = {"mist": MIST, "grid": GridPatches, "channelwise": ChannelwiseMIST}

#: Each dataset: its generator, generator settings, and the MIST settings it needs.
DATASETS: dict[str, dict[str, Any]] = {
    "easy": {"name": "mist-easy", "kwargs": {}, "model": {}},
    "hard": {"name": "mist-hard", "kwargs": {}, "model": {}},
    # Nine impulses (= K) per image; kernels of 17 px on a mid-grey background.
    "gabor": {
        "name": "gabor",
        "kwargs": {"num_impulses": 9},
        "model": {"patch_side": 17.0, "background": 0.5},
    },
    # The paper's texture is "heavily overlapped" (§5.1): 30 impulses (= K) cover the canvas 1.35
    # times, and an empty canvas scores RMSE 0.118, above the paper's 0.095 (0.066 with nine). Poisson
    # impulses can lie a few pixels apart, hence a narrower NMS window.
    "gabor-dense": {
        "name": "gabor",
        "kwargs": {"num_impulses": 30},
        "model": {"patch_side": 17.0, "background": 0.5, "num_patches": 30, "nms_window": 5},
    },
}


def add_mist_args(parser: argparse.ArgumentParser, datasets: Sequence[str], models: Sequence[str]) -> None:
    parser.add_argument(
        "--datasets", nargs="+", choices=list(DATASETS), default=list(datasets), help="which scenes"
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(models), help="which models"
    )
    parser.add_argument("--canvas-size", type=positive_int, help="canvas side (default: the generator's, 80)")
    parser.add_argument("--num-test", type=positive_int, default=1000, help="test scenes")
    parser.add_argument(
        "--curve-scenes", type=positive_int, default=100, help="validation scenes per curve point"
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=250,
        help="steps between curve points and heatmap snapshots (0: none)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="MIST config overrides for every model (e.g. refine_steps=3)",
    )
    add_split_args(parser)


def overrides(parser: argparse.ArgumentParser, items: Sequence[str], **base: Any) -> dict[str, Any]:
    """``--set`` items as typed :class:`~ppl_scenes.models.MISTConfig` fields, validated on top of the
    experiment's own fields ``base`` (e.g. the classification task)."""
    return config_overrides(parser, items, MISTConfig(**base))


def data_kwargs(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(DATASETS[dataset]["kwargs"])
    if args.canvas_size is not None:
        kwargs["canvas_size"] = args.canvas_size
    if DATASETS[dataset]["name"] != "gabor":
        kwargs.update(root=args.data_root, download=not args.no_download)
    return kwargs


def build_sets(dataset: str, args: argparse.Namespace):
    """(splits, curve) of ``dataset`` and the record of its generator settings.

    ``splits`` (:class:`_common.Splits`) holds the train, validation and test scenes; the curve points
    are drawn on the first ``--curve-scenes`` validation scenes, never on test scenes.
    """
    name, kwargs = DATASETS[dataset]["name"], data_kwargs(dataset, args)
    train_kw = {} if args.num_train is None else {"num_scenes": args.num_train}
    splits = build_splits(
        name, args, kwargs, train_kwargs=train_kw, num_test=args.num_test, test_seed=args.seed + 1
    )
    curve = first_scenes(splits.val, args.curve_scenes)
    record = {"name": name, "kwargs": {k: v for k, v in kwargs.items() if k not in ("root", "download")}}
    return splits, curve, record


def snapshot_heatmap(model, image: torch.Tensor, run_dir: Path) -> None:
    """Save the pooled heatmap of ``image`` at the model's current step (Fig. 7, right)."""
    if model.trainer != "lifting":  # the baselines have no single multiscale heatmap
        return
    folder = run_dir / "heatmaps"
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        heat = model.heatmap(image[None].to(model.device))[0].sum(0).cpu().numpy()
    np.save(folder / f"{model.step:07d}.npy", heat)


def train(
    kind: str,
    model_overrides: Mapping[str, Any],
    train_set,
    curve_set,
    run_dir: Path,
    args: argparse.Namespace,
    data: Mapping[str, Any],
    command: str,
):
    """Train one model (with curve points and heatmap snapshots every ``--eval-every`` steps)."""
    fit_kwargs: dict[str, Any] = {}
    if args.eval_every:
        probe = curve_set[0][0]

        def eval_fn(model):
            snapshot_heatmap(model, probe, run_dir)
            return model.evaluate(curve_set)

        fit_kwargs = {"eval_fn": eval_fn, "eval_every": args.eval_every}
    return train_model(
        train_set,
        run_dir,
        args,
        data,
        command,
        not args.no_progress,
        model_class=MODELS[kind],
        fit_kwargs=fit_kwargs,
        **model_overrides,
    )


def plot_training(run_dirs: Mapping[str, Path], keys: Sequence[str], path: Path) -> Path | None:
    """Fig. 7 (left, middle): the logged losses and curve points of each run, one figure per run."""
    written = None
    for label, run_dir in run_dirs.items():
        records = read_metrics(run_dir)
        present = [k for k in keys if any(k in r for r in records)]
        if present:
            written = path.with_name(f"{path.stem}_{label}{path.suffix}")
            plot_curves(records, present, path=written)
    return written


def plot_snapshots(run_dir: Path, path: Path, max_maps: int = 6) -> Path | None:
    """Fig. 7 (right): the heatmap of one test scene at evenly spaced training steps."""
    files = sorted((run_dir / "heatmaps").glob("*.npy"))
    if not files:
        return None
    picks = [files[round(i)] for i in np.linspace(0, len(files) - 1, min(max_maps, len(files)))]
    maps = [torch.from_numpy(np.load(f)) for f in picks]
    plot_heatmaps(maps, titles=[f"step {int(f.stem)}" for f in picks], path=path)
    return path


def plot_examples(
    images: torch.Tensor,
    parses: Mapping[str, Any],
    gt_boxes: Sequence[torch.Tensor],
    path: Path,
) -> Path:
    """Figs. 2-5: inputs with each model's patches (blue, class labels when given) and the truth
    (yellow), then each model's synthesis when it has one."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ppl_scenes.viz import GT_COLOR, show_image

    n = len(images)
    synth = [k for k, p in parses.items() if p.reconstruction is not None]
    rows = ["input", *[f"{k} patches" for k in parses], *[f"{k} synthesis" for k in synth]]
    fig = Figure(figsize=(1.6 * n, 1.7 * len(rows)), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    for j in range(n):
        show_image(axes[0, j], images[j])
        draw_boxes(axes[0, j], gt_boxes[j], color=GT_COLOR, linewidth=1.0)
        for r, p in enumerate(parses.values(), start=1):
            show_image(axes[r, j], images[j])
            labels = None if p.labels is None else p.labels[j].tolist()
            draw_boxes(axes[r, j], p.boxes[j].cpu(), labels=labels, linewidth=1.0)
        for r, k in enumerate(synth, start=1 + len(parses)):
            show_image(axes[r, j], parses[k].reconstruction[j].cpu().clamp(0, 1))
    for r, name in enumerate(rows):
        axes[r, 0].set_ylabel(name, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_model_patches(model: MIST, image: torch.Tensor, path: Path, counts=None) -> Path:
    """The ``K`` patches MIST extracts from one scene and what its task network makes of them."""
    with torch.no_grad():
        x = image[None].to(model.device)
        found = model.locate(x)
        patches = model.crop_patches(x, found.positions, found.scales)[0]
        out = model.task_net(patches)
    if model.config.task == "reconstruction":
        plot_patches(patches.cpu().clamp(0, 1), out.cpu(), path=path)
    else:
        plot_patches(patches.cpu().clamp(0, 1), titles=[str(c) for c in out.argmax(-1).tolist()], path=path)
    return path
