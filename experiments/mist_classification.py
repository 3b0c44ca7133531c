"""MIST Table 2 and Fig. 5: multiple-instance classification of MNIST hard scenes, without locations.

MIST (trained by lifting) and the channel-wise baseline are given each scene's digit labels as a bag
(and so their number, the paper's "minimal supervision": ``count_from_labels``) but never their
places. The task loss is eq. 3 (the mean one-hot of the labels against the mean softmax over the
patches). Scored on test scenes as the paper does: a true digit is *detected* when a patch matches
it at IoU 0.5 (one-to-one), *classified* when that patch's class is its label; reported are the
detection rate, the classification accuracy of the detected digits, and the rate of both.

Writes under ``--out`` (default ``benchmarks/mist_classification``):

* ``mist_classification.json`` -- settings, machine, steps and seconds, the scores of both models,
  the paper's numbers, and whether MIST meets them;
* ``examples.png`` -- test scenes with each model's patches labelled by class (Fig. 5);
* ``patches.png`` -- MIST's patches of one scene with their classes;
* ``training_<model>.png`` -- task loss, lift loss and curve points over training (Fig. 7);
* ``heatmaps.png`` -- MIST's heatmap of one test scene over training (Fig. 7, right);
* ``runs/<model>/`` -- the training runs.

Reproduce the recorded numbers (CPU; the models may train in separate processes, then one call
with ``--resume`` evaluates both and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/mist_classification.py --minutes 18 --no-progress
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
from ppl_scenes.models import MIST

NAME = "mist_classification"
#: Table 2 of the paper; the targets are MIST's column.
PAPER = {
    "mist": {"detection_rate": 0.846, "classification_accuracy": 0.956, "detected_and_classified": 0.835},
    "channelwise": {
        "detection_rate": 0.254,
        "classification_accuracy": 0.755,
        "detected_and_classified": 0.248,
    },
}
TASK = {"task": "classification", "count_from_labels": True}


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=10_000, num_train_help="training scenes")
    add_mist_args(parser, datasets=("hard",), models=("mist", "channelwise"))
    parser.set_defaults(datasets=["hard"])
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.datasets != ["hard"] or "grid" in args.models:
        parser.error("Table 2 is MNIST hard (--datasets hard) with --models mist and/or channelwise")
    apply_threads(args)
    extra = {**TASK, **overrides(parser, args.set, **TASK)}
    out = Path(args.out)
    runs = {m: out / "runs" / m for m in args.models}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)
    splits, curve_set, data = build_sets("hard", args)
    train_set, test_set = splits.train, splits.test

    models, results, validation, costs = {}, {}, {}, {}
    progress = not args.no_progress
    for kind, run_dir in runs.items():
        models[kind], costs[kind] = train(kind, extra, train_set, curve_set, run_dir, args, data, command)
        validation[kind] = finite(models[kind].evaluate(splits.val, progress=progress))
        results[kind] = finite(models[kind].evaluate(test_set, progress=progress, **intervals_kwargs(args)))

    items = [test_set[i] for i in range(min(6, len(test_set)))]
    images = torch.stack([im for im, _ in items])
    counts = torch.tensor([int(t["count"]) for _, t in items])
    with torch.no_grad():
        parses = {k: m.parse(images.to(m.device), counts=counts) for k, m in models.items()}
    figures = {
        "examples": plot_examples(images, parses, [t["patch_boxes"] for _, t in items], out / "examples.png"),
        "training": plot_training(
            runs,
            ("task_loss", "lift_loss", "eval/detection_rate", "eval/classification_accuracy"),
            out / "training.png",
        ),
    }
    if "mist" in models:
        figures["patches"] = plot_model_patches(models["mist"], images[0], out / "patches.png")
        figures["heatmaps"] = plot_snapshots(runs["mist"], out / "heatmaps.png")

    mist = results.get("mist", {})
    met = {k: mist[k] is not None and mist[k] >= v for k, v in PAPER["mist"].items()} if mist else {}
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(args, MIST),
        "models": {k: config_to_dict(m.config) for k, m in models.items()},
        "data": data,
        "cost": costs,
        "results": results,
        "validation": validation,
        "splits": splits.record,
        "digit_source": splits.source,
        "paper": PAPER,
        "targets_met": met,
        "figures": {k: str(v) for k, v in figures.items() if v is not None},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [{"model": k, **r, **costs[k]} for k, r in results.items()]
    columns = {
        "model": "model",
        "detection_rate": "IoU50",
        "classification_accuracy": "classif.",
        "detected_and_classified": "both",
        "steps": "steps",
    }
    print(table(rows, columns))
    print(json.dumps({"met": met}))
    return record


if __name__ == "__main__":
    main()
