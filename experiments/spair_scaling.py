"""SPAIR §5.1 / Fig. 2: detection as scenes hold more digits, SPAIR against ConnComp.

For each digit count in ``--counts`` (default 1 3 5 7 9) one SPAIR model is trained on 48x48
scattered-MNIST scenes holding exactly that many digits (MNIST training digits) and scored on
``--num-test`` unseen test scenes of the same count (MNIST test digits): AP averaged over IoU
0.1:0.1:0.9 (the paper's measure), AP@0.5, count accuracy and mean absolute count error. ConnComp
(connected components of the pixels differing from the background, paper §5.1) is scored on the
same test scenes. Each condition records the steps it ran, its training seconds and the torch threads
it used; ``machine`` says where. ``--minutes`` is a budget per condition; ``--jobs 2`` trains two
conditions at a time in separate processes with one torch thread each.

Targets (issue 3): AP@0.5 >= 0.90 for every count; at 5 digits AP@0.5 >= 0.95, AP(0.1:0.9) >= 0.85
and count accuracy >= 0.90 within 30 minutes of training.

Writes under ``--out`` (default ``benchmarks/spair_scaling``):

* ``spair_scaling.json`` -- settings, machine, and per condition the metrics of SPAIR and ConnComp,
  steps, seconds and threads;
* ``ap_by_digits.png`` -- AP against the number of digits, SPAIR and ConnComp (Fig. 2, bottom);
* ``examples_<N>digits.png`` -- test scenes of each condition with inferred (blue) and true (yellow)
  boxes, and the reconstructions;
* ``runs/digits-<N>/`` -- the training run of each condition (``ppl-scenes eval`` scores it again).

Reproduce the recorded numbers (CPU, two conditions at a time, 30 minutes each)::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_scaling.py --minutes 30 --jobs 2 --no-progress
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from _common import (
    SUMMARY_METRICS,
    add_conncomp_arg,
    add_split_args,
    apply_threads,
    build_splits,
    check_run_dirs,
    command_line,
    config_overrides,
    example_title,
    intervals_kwargs,
    machine,
    make_parser,
    model_record,
    positive_int,
    settings_record,
    table,
    train_model,
    train_record,
    with_tight_boxes,
    write_eval,
    write_record,
)
from tqdm.auto import tqdm

from ppl_scenes import SPAIRConfig
from ppl_scenes.baselines import ConnComp
from ppl_scenes.metrics import evaluate_detection
from ppl_scenes.viz import plot_metric_by_count, plot_scenes

NAME = "spair_scaling"
#: The paper's conditions (Fig. 2): digits per 48x48 scene.
COUNTS = (1, 3, 5, 7, 9)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__, NAME)
    parser.add_argument(
        "--counts", type=positive_int, nargs="+", default=list(COUNTS), metavar="N", help="digits per scene"
    )
    parser.add_argument(
        "--num-test", type=positive_int, default=500, metavar="N", help="test scenes per count"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="conditions trained at once, each in its own process with --threads threads (default 1)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SPAIR config overrides for every condition (e.g. cell_size=8,8)",
    )
    add_conncomp_arg(parser)
    add_split_args(parser)
    return parser


def run_dir(args: argparse.Namespace, count: int) -> Path:
    return Path(args.out) / "runs" / f"digits-{count}"


def run_condition(
    args: argparse.Namespace, count: int, command: str, progress: bool, threads: int | None = None
) -> dict[str, Any]:
    """Train and score one condition (scenes of ``count`` digits); writes its example figure.

    Module-level so that ``--jobs`` can run it in a spawned process.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    root, download = args.data_root, not args.no_download
    train_kwargs: dict[str, Any] = {"num_digits": count, "seed": args.seed}
    if args.num_train is not None:
        train_kwargs["num_scenes"] = args.num_train
    splits = build_splits(
        "scattered",
        args,
        {"num_digits": count, "root": root, "download": download},
        train_kwargs=train_kwargs,
        num_test=args.num_test,
        test_seed=args.seed,
    )
    train_set, test_set = splits.train, splits.test
    data = {"name": "scattered", "kwargs": train_kwargs, "num_test": args.num_test}
    run = run_dir(args, count)
    model, cost = train_model(train_set, run, args, data, command, progress, **args.overrides)
    validation = evaluate_detection(model, splits.val, progress=progress)
    spair = evaluate_detection(model, test_set, progress=progress, **intervals_kwargs(args))
    write_eval(run, cost["steps"], spair)
    spair_tight = with_tight_boxes(model, evaluate_detection, test_set)
    conncomp = evaluate_detection(ConnComp(threshold=args.conncomp_threshold), test_set)

    n = min(8, len(test_set))
    images = torch.stack([test_set[i][0] for i in range(n)])
    truth = [test_set[i][1]["boxes"] for i in range(n)]
    parse = model.parse(images.to(model.device))
    figure = Path(args.out) / f"examples_{count}digits.png"
    plot_scenes(
        images,
        [b.cpu() for b in parse.boxes],
        gt_boxes=truth,
        reconstructions=parse.reconstruction.cpu(),
        titles=[example_title(count, len(b)) for b in parse.boxes],
        path=figure,
    )
    return {
        "num_digits": count,
        "spair": spair,
        "spair_validation": validation,
        "spair_tight_boxes": spair_tight,
        "conncomp": conncomp,
        **cost,
        "seconds": round(time.perf_counter() - start, 1),
        "example_figure": str(figure),
        "splits": splits.record,
        "digit_source": splits.source,
    }


def run_all(args: argparse.Namespace, counts: Sequence[int], command: str, progress: bool) -> list[dict]:
    """Every condition, in this process or ``args.jobs`` spawned ones (one torch thread each)."""
    jobs = min(args.jobs, len(counts))
    bar = tqdm(total=len(counts), desc="conditions", disable=not progress or len(counts) == 1)
    try:
        if jobs == 1:
            results = []
            for count in counts:
                bar.set_postfix(digits=count)
                results.append(run_condition(args, count, command, progress))
                bar.update(1)
            return results
        # spawn, not fork: forking a process whose torch thread pool has run is unsafe.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {
                pool.submit(run_condition, args, c, command, False, args.threads or 1): c for c in counts
            }
            done = {}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.set_postfix(finished=futures[future])
                bar.update(1)
        return [done[c] for c in counts]
    finally:
        bar.close()


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the experiment; returns the JSON record it writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    counts = sorted(set(args.counts))
    args.overrides = config_overrides(parser, args.set, SPAIRConfig())
    apply_threads(args)
    out = Path(args.out)
    check_run_dirs(parser, [run_dir(args, c) for c in counts], args.resume)
    command = command_line(NAME, argv)
    progress = not args.no_progress
    if progress:
        print(f"{NAME}: training SPAIR for digit counts {counts} ({args.jobs} at a time)", file=sys.stderr)
    conditions = run_all(args, counts, command, progress)

    figure = out / "ap_by_digits.png"
    plot_metric_by_count(
        {
            "SPAIR": {r["num_digits"]: r["spair"]["ap_spair"] for r in conditions},
            "ConnComp": {r["num_digits"]: r["conncomp"]["ap_spair"] for r in conditions},
        },
        ylabel="AP (IoU 0.1:0.1:0.9)",
        xlabel="number of digits",
        title="48x48 scattered MNIST, unseen test digits",
        path=figure,
    )
    record = {
        "experiment": NAME,
        "command": command,
        "machine": machine(),
        "settings": settings_record(args) | {"counts": counts},
        "train": train_record(args),
        "model": model_record(**args.overrides),
        "conditions": conditions,
        "figures": {
            "ap_by_digits": str(figure),
            **{f"examples_{r['num_digits']}": r["example_figure"] for r in conditions},
        },
    }
    write_record(out / f"{NAME}.json", record)

    rows = []
    for r in conditions:
        rows.append(
            {
                "digits": r["num_digits"],
                "model": "SPAIR",
                **r["spair"],
                "steps": r["steps"],
                "minutes": r["train_seconds"] / 60,
            }
        )
        rows.append({"digits": r["num_digits"], "model": "ConnComp", **r["conncomp"]})
    columns = {"digits": "digits", "model": "", **SUMMARY_METRICS, "steps": "steps", "minutes": "train min"}
    print(f"{NAME}: {args.num_test} test scenes per condition")
    print(table(rows, columns))
    print(f"{NAME}: wrote {out / (NAME + '.json')} and figures in {out}")
    return record


if __name__ == "__main__":
    main()
