"""Variational saccading §4.1 / Table 1 (bottom), Fig. 3: two-digit cluttered MNIST at 100x100.

The saccade model (a VRNN planning ``T = 4`` glimpses on a 32x32 proxy, classifying the glimpses) and
a ResNet-18 on the whole image are trained with the same seed and budget, one run per task: which
digits the scene holds (``identify``: correct when the predicted set equals the true one) and their
sum (``sum``; on scenes without clutter, as the paper's sum task follows RAM/DRAM, unless
``--sum-clutter``). Optionally (``--models resnet_crops``) the ResNet-18 on a grid of crops with summed
outputs (Table 1 top) runs too.

Writes under ``--out`` (default ``benchmarks/saccade_cluttered``):

* ``saccade_cluttered.json`` -- settings, machine, steps and seconds, parameter counts and the
  accuracies of every model on both tasks, the paper's numbers, and whether the targets are met;
* ``saccades_<task>.png`` -- test scenes with the saccade model's glimpses (numbered by ``t``) and
  its proxy, titled with the prediction and the truth (Fig. 3);
* ``training_<task>_<model>.png`` -- loss and test accuracy over training;
* ``runs/<task>-<model>/`` -- the training runs.

Reproduce the recorded numbers (CPU; runs may train in separate processes, then one call with
``--resume`` evaluates them all and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/saccade_cluttered.py --minutes 20 --no-progress
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from _common import (  # noqa: E402
    check_run_dirs,
    command_line,
    digit_source,
    finite,
    intervals_kwargs,
    machine,
    make_parser,
    settings_record,
    table,
    train_model,
    train_record,
    write_record,
)
from _saccade import (  # noqa: E402
    add_saccade_args,
    cluttered_scenes,
    curve_fit_kwargs,
    example_scenes,
    initial_weights,
    parse_saccade_args,
    plot_saccades,
)

from ppl_scenes import VariationalSaccading  # noqa: E402
from ppl_scenes.baselines import ResNetClassifier  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402
from ppl_scenes.runs import read_metrics  # noqa: E402
from ppl_scenes.viz import plot_curves  # noqa: E402

NAME = "saccade_cluttered"
MODELS = {
    "saccade": (VariationalSaccading, {}),
    "resnet": (ResNetClassifier, {}),
    "resnet_crops": (ResNetClassifier, {"crop_grid": 4}),
}
TASKS = ("identify", "sum")
#: Table 1 (bottom) of the paper, 100x100 two-digit cluttered MNIST.
PAPER = {
    "saccade": {"identify": 0.972, "sum": 0.9542},
    "resnet": {"identify": 0.9986, "sum": 0.974},
    "ram": {"identify": 0.91},
    "dram": {"identify": 0.975, "sum": 0.95},
}
TARGETS = {"identify": 0.95, "sum": 0.93}


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=20_000, num_train_help="training scenes")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["saccade", "resnet"])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    add_saccade_args(parser)
    parser.add_argument(
        "--sum-clutter", action="store_true", help="clutter in the sum task's scenes too (default: none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args, saccade_overrides = parse_saccade_args(parser, argv)
    out = Path(args.out)
    runs = {(t, m): out / "runs" / f"{t}-{m}" for t in args.tasks for m in args.models}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)
    # The paper's sum task, as RAM's and DRAM's, places the two digits without clutter.
    clean_sum = {"sum": None if args.sum_clutter else 0}
    scenes = {task: cluttered_scenes(args, num_clutter=clean_sum.get(task)) for task in args.tasks}

    results, validation, costs, configs, params, figures = {}, {}, {}, {}, {}, {}
    for (task, kind), run_dir in runs.items():
        splits, data = scenes[task]
        train_set, test_set = splits.train, splits.test
        cls, extra = MODELS[kind]
        if kind == "saccade":
            extra = {**extra, **saccade_overrides}
            if args.init_from:
                cls = initial_weights(args.init_from)
        fit_kwargs = curve_fit_kwargs(args, splits.val)
        key = f"{task}-{kind}"
        model, costs[key] = train_model(
            train_set,
            run_dir,
            args,
            data,
            command,
            not args.no_progress,
            model_class=cls,
            fit_kwargs=fit_kwargs,
            task=task,
            **extra,
        )
        progress = not args.no_progress
        validation[key] = finite(model.evaluate(splits.val, progress=progress))
        results[key] = finite(model.evaluate(test_set, progress=progress, **intervals_kwargs(args)))
        configs[key] = config_to_dict(model.config)
        params[key] = sum(p.numel() for p in model.parameters())
        keys = [k for k in ("loss", "eval/accuracy") if any(k in r for r in read_metrics(run_dir))]
        figures[f"training_{key}"] = out / f"training_{key}.png"
        plot_curves(read_metrics(run_dir), keys, path=figures[f"training_{key}"])
        if kind == "saccade":
            images, targets = example_scenes(test_set)
            figures[f"saccades_{task}"] = plot_saccades(
                model, images, targets, task, out / f"saccades_{task}.png"
            )

    met = {
        task: results[f"{task}-saccade"]["accuracy"] >= TARGETS[task]
        for task in args.tasks
        if f"{task}-saccade" in results
    }
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(args, VariationalSaccading),
        "models": configs,
        "parameters": params,
        "data": {task: data for task, (_, data) in scenes.items()},
        "splits": {task: splits.record for task, (splits, _) in scenes.items()},
        "digit_source": digit_source(*(splits.test for splits, _ in scenes.values())),
        "cost": costs,
        "results": results,
        "validation": validation,
        "paper": PAPER,
        "targets": TARGETS,
        "targets_met": met,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [{"run": k, **r, **costs[k], "parameters": params[k]} for k, r in results.items()]
    print(table(rows, {"run": "run", "accuracy": "accuracy", "steps": "steps", "parameters": "parameters"}))
    print(json.dumps({"met": met}))
    return record


if __name__ == "__main__":
    main()
