"""MIST Table 1 and Figs. 2-4, 7: reconstruct MNIST easy / hard and Gabor noise from K patches.

K = 9 on MNIST and on the sparse Gabor noise (nine impulses); the dense Gabor noise (``gabor-dense``,
heavily overlapped like the paper's) has 30 impulses and K = 30.

MIST (trained by lifting, Algorithm 1), the grid baseline (a 3x3 grid of patches, the same
auto-encoder) and the channel-wise baseline (one heatmap channel and soft-argmax per patch) are trained
with the same seed and budget on each dataset and scored by the RMSE of their synthesis on test scenes
(MIST §5.1), with the detection rate of their patches at IoU 0.5 against the digits' squares alongside.
The paper runs the baselines on MNIST only; Gabor noise is MIST's alone.

Writes under ``--out`` (default ``benchmarks/mist_reconstruction``):

* ``mist_reconstruction.json`` -- settings, machine, steps and seconds, RMSE and detection of every
  model on every dataset, the paper's numbers, whether the targets are met, and the RMSE of an empty
  canvas (all background) per dataset -- the floor a synthesis must beat to have reconstructed anything;
* ``examples_<dataset>.png`` -- inputs, each model's patches and syntheses (Figs. 2-4);
* ``patches_<dataset>.png`` -- MIST's patches of one scene and their decodings;
* ``training_<dataset>_<model>.png`` -- task loss, lift loss and curve points over training (Fig. 7);
* ``heatmaps_<dataset>.png`` -- MIST's heatmap of one test scene over training (Fig. 7, right);
* ``runs/<dataset>-<model>/`` -- the training runs.

Reproduce the recorded numbers (CPU; pairs may train in separate processes, then one call with
``--resume`` and every pair only evaluates and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/mist_reconstruction.py --minutes 15 --no-progress
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import (
    apply_threads,
    check_run_dirs,
    command_line,
    finite,
    intervals_kwargs,
    machine,
    make_parser,
    settings_record,
    table,
    train_record,
    write_record,
)
from _mist import (
    DATASETS,
    add_mist_args,
    build_sets,
    overrides,
    plot_examples,
    plot_model_patches,
    plot_snapshots,
    plot_training,
    train,
)

from ppl_scenes.config import config_to_dict
from ppl_scenes.metrics import parse_options, rmse
from ppl_scenes.models import MIST

NAME = "mist_reconstruction"
#: Table 1 of the paper (RMSE); the targets are MIST's column.
PAPER = {
    "easy": {"mist": 0.038, "grid": 0.039, "channelwise": 0.042},
    "hard": {"mist": 0.053, "grid": 0.062, "channelwise": 0.128},
    "gabor": {"mist": 0.095},
    "gabor-dense": {"mist": 0.095},
}


def run_parts(run: str) -> tuple[str, str]:
    """``(dataset, model)`` of a run named ``<dataset>-<model>`` (dataset names may hold a dash)."""
    dataset, model = run.rsplit("-", 1)
    return dataset, model


def paper_rmse(run: str) -> float | None:
    """The paper's RMSE for a run named ``<dataset>-<model>`` (None where the paper has none)."""
    dataset, model = run_parts(run)
    return PAPER[dataset].get(model)


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=10_000, num_train_help="training scenes per dataset")
    add_mist_args(parser, datasets=("easy", "hard", "gabor"), models=("mist", "grid", "channelwise"))
    return parser


def pairs(args) -> list[tuple[str, str]]:
    """The (dataset, model) runs asked for; the paper has no baseline on Gabor noise."""
    gabor = {d for d in args.datasets if DATASETS[d]["name"] == "gabor"}
    return [(d, m) for d in args.datasets for m in args.models if d not in gabor or m == "mist"]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(args)
    extra = overrides(parser, args.set)
    out = Path(args.out)
    runs = {(d, m): out / "runs" / f"{d}-{m}" for d, m in pairs(args)}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)

    results, validation, costs, configs, figures, blank = {}, {}, {}, {}, {}, {}
    split_records, sources = {}, {}
    for dataset in args.datasets:
        todo = [m for d, m in runs if d == dataset]
        if not todo:
            continue
        splits, curve_set, data = build_sets(dataset, args)
        train_set, test_set = splits.train, splits.test
        split_records[dataset], sources[dataset] = splits.record, splits.source
        models = {}
        for kind in todo:
            run_dir = runs[(dataset, kind)]
            model_overrides = {**DATASETS[dataset]["model"], **extra}
            model, cost = train(kind, model_overrides, train_set, curve_set, run_dir, args, data, command)
            models[kind] = model
            costs[f"{dataset}-{kind}"] = cost
            configs[f"{dataset}-{kind}"] = config_to_dict(model.config)
            progress = not args.no_progress
            validation[f"{dataset}-{kind}"] = finite(model.evaluate(splits.val, progress=progress))
            results[f"{dataset}-{kind}"] = finite(
                model.evaluate(test_set, progress=progress, **intervals_kwargs(args))
            )
        # The RMSE of an empty canvas: what a synthesis must beat to have reconstructed anything.
        background = DATASETS[dataset]["model"].get("background", 0.0)
        test_images = torch.stack([test_set[i][0] for i in range(len(test_set))])
        blank[dataset] = rmse(test_images, torch.full_like(test_images, background))
        items = [test_set[i] for i in range(min(6, len(test_set)))]
        images = torch.stack([im for im, _ in items])
        targets = [t for _, t in items]
        with torch.no_grad():  # a MIST told the counts (--set count_from_labels=true) parses with them
            parses = {k: m.parse(images.to(m.device), **parse_options(m, targets)) for k, m in models.items()}
        gt = [t["patch_boxes"] for _, t in items]
        figures[f"examples_{dataset}"] = plot_examples(images, parses, gt, out / f"examples_{dataset}.png")
        if "mist" in models:
            figures[f"patches_{dataset}"] = plot_model_patches(
                models["mist"], images[0], out / f"patches_{dataset}.png"
            )
            figures[f"heatmaps_{dataset}"] = plot_snapshots(
                runs[(dataset, "mist")], out / f"heatmaps_{dataset}.png"
            )
        run_dirs = {k: runs[(dataset, k)] for k in models}
        keys = ("task_loss", "lift_loss", "eval/rmse", "eval/detection_rate")
        figures[f"training_{dataset}"] = plot_training(run_dirs, keys, out / f"training_{dataset}.png")

    met = {key: results[key]["rmse"] <= paper_rmse(key) for key in results if key.endswith("-mist")}
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(args, MIST),
        "models": configs,
        "cost": costs,
        "results": results,
        "validation": validation,
        "splits": split_records,
        "digit_source": sources,
        "paper_rmse": PAPER,
        "blank_canvas_rmse": blank,
        "targets_met": met,
        "figures": {k: str(v) for k, v in figures.items() if v is not None},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [
        {
            "run": key,
            "paper": paper_rmse(key),
            "blank": blank[run_parts(key)[0]],
            **r,
            **costs[key],
        }
        for key, r in results.items()
    ]
    columns = {
        "run": "run",
        "rmse": "RMSE",
        "paper": "paper",
        "blank": "blank canvas",
        "detection_rate": "det@.5",
        "steps": "steps",
    }
    print(table(rows, columns))
    print(json.dumps({"met": met}))
    return record


if __name__ == "__main__":
    main()
