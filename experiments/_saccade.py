"""What the saccading experiments share: their flags, the cluttered scenes and the saccade figure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    Splits,
    add_split_args,
    apply_threads,
    build_splits,
    config_overrides,
    first_scenes,
    positive_int,
)
from matplotlib.figure import Figure

from ppl_scenes import SaccadeConfig, Upscaled, VariationalSaccading, load
from ppl_scenes.viz import draw_boxes, show_image


def add_saccade_args(parser: argparse.ArgumentParser, canvas_help: str = "scene side in pixels") -> None:
    """``--canvas-size``, ``--num-test``, ``--curve-scenes``, ``--eval-every``, ``--set``, ``--init-from``,
    and the protocol's ``--num-val``, ``--val-seed`` and ``--intervals``."""
    parser.add_argument("--canvas-size", type=positive_int, default=100, help=canvas_help)
    parser.add_argument("--num-test", type=positive_int, default=1000, help="test scenes")
    parser.add_argument(
        "--curve-scenes", type=positive_int, default=200, help="validation scenes per curve point"
    )
    parser.add_argument("--eval-every", type=int, default=500, help="steps between curve points (0: none)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the saccade model's config (e.g. proxy_weight=0.001)",
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start the saccade model from this saccade run's weights (those whose shapes fit; the rest, "
        "e.g. the classifier's output layer for another task, start afresh and are named)",
    )
    add_split_args(parser)


def parse_saccade_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv``, apply ``--threads``, and read ``--set`` as :class:`SaccadeConfig` overrides."""
    args = parser.parse_args(argv)
    apply_threads(args)
    return args, config_overrides(parser, args.set, SaccadeConfig())


def cluttered_scenes(
    args: argparse.Namespace, size: int | None = None, num_clutter: int | None = None, train: bool = True
) -> tuple[Splits, dict[str, Any]]:
    """The training, validation and test scenes of ``--canvas-size`` and the data record of the runs'
    config.

    Training scenes have seed ``--seed``, validation scenes (split ``"val"``, ``--num-val`` of them)
    :func:`_common.val_seed`, test scenes ``--seed`` + 1. With ``size``, the scenes are upsampled to
    ``size`` pixels (the ``cluttered-large`` dataset); ``num_clutter`` overrides the generator's number
    of clutter fragments (0: clean scenes); ``train=False`` builds no training scenes.
    """
    scene_kwargs: dict[str, Any] = {"canvas_size": args.canvas_size}
    if num_clutter is not None:
        scene_kwargs["num_clutter"] = num_clutter
    kwargs = {**scene_kwargs, "root": args.data_root, "download": not args.no_download}
    wrap = None if size is None else (lambda dataset: Upscaled(dataset, size))
    splits = build_splits(
        "cluttered",
        args,
        kwargs,
        train_kwargs={"num_scenes": args.num_train},
        num_test=args.num_test,
        test_seed=args.seed + 1,
        train=train,
        wrap=wrap,
    )
    if size is None:
        return splits, {"name": "cluttered", "kwargs": scene_kwargs}
    return splits, {"name": "cluttered-large", "kwargs": {**scene_kwargs, "size": size}}


def initial_weights(run_dir: str):
    """A saccade model factory whose models start from ``run_dir``'s weights (``--init-from``).

    Every weight whose name and shape fit the new model's is copied; the others keep their fresh start
    and are listed on stderr (e.g. the classifier's output layer when the sum task starts from an
    identification run). Nothing fitting at all is an error.
    """
    source = load(run_dir)
    if not isinstance(source, VariationalSaccading):
        raise SystemExit(f"--init-from {run_dir} holds a {type(source).__name__}, not a saccade model")
    weights = source.state_dict()

    def make(**kwargs):
        model = VariationalSaccading(**kwargs)
        own = model.state_dict()
        fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise SystemExit(f"--init-from {run_dir}: none of its weights fit this config")
        fresh = sorted(set(own) - set(fitting))
        if fresh:
            print(f"--init-from {run_dir}: starting afresh: {', '.join(fresh)}", file=sys.stderr)
        model.load_state_dict(fitting, strict=False)
        return model

    return make


def curve_fit_kwargs(args: argparse.Namespace, val_set) -> dict[str, Any]:
    """``fit`` keywords that log the accuracy on the first ``--curve-scenes`` validation scenes."""
    if not args.eval_every:
        return {}
    curve_set = first_scenes(val_set, args.curve_scenes)
    return {"eval_fn": lambda model: model.evaluate(curve_set), "eval_every": args.eval_every}


def plot_saccades(model, images, targets, task: str, path: Path) -> Path:
    """Fig. 3: each scene with its glimpses numbered by t, and the proxy the saccades were planned on."""
    parse = model.parse(images.to(model.device))
    with model.evaluating():
        proxy = model.make_proxy(images.to(model.device)).cpu()
    n = len(images)
    fig = Figure(figsize=(2.0 * n, 4.2), layout="constrained")
    axes = np.asarray(fig.subplots(2, n, squeeze=False))
    colors = ["red", "orange", "yellow", "cyan", "magenta", "lime"]
    for j in range(n):
        show_image(axes[0, j], images[j])
        for t, box in enumerate(parse.boxes[j].cpu()):
            draw_boxes(axes[0, j], box[None], color=colors[t % len(colors)], labels=[t], linewidth=1.2)
        show_image(axes[1, j], proxy[j])
        pred = parse.image_labels[j]
        if task == "identify":
            pred_text = ",".join(str(k) for k in pred.nonzero().flatten().tolist())
            true_text = ",".join(str(k) for k in targets[j]["multi_label"].nonzero().flatten().tolist())
        else:
            pred_text, true_text = str(int(pred)), str(int(targets[j]["sum"]))
        axes[0, j].set_title(f"pred {pred_text} / true {true_text}", fontsize=8)
    axes[0, 0].set_ylabel("glimpses (t)", fontsize=8)
    axes[1, 0].set_ylabel("proxy", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def example_scenes(dataset, n: int = 6) -> tuple[torch.Tensor, list[dict]]:
    """The first ``n`` scenes of ``dataset`` as a batch and their targets."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([image for image, _ in items]), [target for _, target in items]
