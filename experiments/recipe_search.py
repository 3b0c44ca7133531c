"""Choose a recipe on validation scenes, then score the choice once on test scenes (issue 34, rule 2).

Trains one run of ``ppl-scenes train MODEL --preset PRESET --seed S KEY=VALUE ...`` (through the
library, without the CLI's test-split scoring) per point of a grid of overrides (``--grid KEY=V1,V2
...``: every combination) into ``RUNS/v<i>``, scores every run on the same validation scenes (split
``"val"``: digits never used for training scenes, seed ``--val-seed``; scored as the model cards are,
:func:`pretrained.score`) and picks the one with the largest sum of the ``--select`` scores (a score
that is better lower, ``rmse`` or a loss, counts negatively: ``report.lower_is_better``). Only the
chosen run is then scored on test scenes (seed ``--test-seed``), once, with a 95 % bootstrap
interval. The test scores of the other variants are never computed, so nothing can be chosen on them.

Variants train in separate processes when each call names its share (``--only 0 2``); a final call
without ``--only`` trains what is left (a started run resumes), scores and writes
``OUT/<model>-<preset>.json``: the grid, every variant's command, steps, minutes and validation
scores, the choice and its test scores::

    PPL_SCENES_DATA=/path/to/data python experiments/recipe_search.py spair --preset scattered-5 \\
        --grid pres_prob_end=0.3,0.5 train.lr_decay_from=0.3,0.5 --select ap50 count_accuracy --only 0 1
    PPL_SCENES_DATA=/path/to/data python experiments/recipe_search.py spair --preset scattered-5 \\
        --grid pres_prob_end=0.3,0.5 train.lr_decay_from=0.3,0.5 --select ap50 count_accuracy
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import command_line, digit_source, finite, logged_progress, machine, run_scenes, write_record
from pretrained import score
from report import lower_is_better
from reproduce import finished

from ppl_scenes.models import MODELS
from ppl_scenes.rundir import read_config
from ppl_scenes.runs import RunSpec, load

NAME = "recipe_search"


def grid_item(text: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2`` as ``(key, [v1, v2])``; argparse's type for ``--grid``. A tuple value keeps its
    commas inside brackets: ``cell_size=[8,8],[12,12]``."""
    key, sep, values = text.partition("=")
    parts = [v for v in _split_values(values) if v]
    if not sep or not key or not parts:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,..., got {text!r}")
    return key, parts


def _split_values(text: str) -> list[str]:
    """Split at the commas that are not inside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODELS), help="the model")
    parser.add_argument("--preset", required=True, help="the preset every variant starts from")
    parser.add_argument(
        "--grid",
        type=grid_item,
        nargs="+",
        required=True,
        metavar="KEY=V1,V2",
        help="overrides to cross; a tuple in brackets (cell_size=[8,8],[12,12]); one value: a fixed override",
    )
    parser.add_argument(
        "--select", nargs="+", required=True, metavar="SCORE", help="validation scores summed"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed of every variant (0)")
    parser.add_argument(
        "--only", type=int, nargs="+", metavar="I", help="train only these variants, then stop"
    )
    parser.add_argument("--runs", help=f"where the run directories go (default: runs/{NAME}/MODEL-PRESET)")
    parser.add_argument("--num-val", type=int, default=500, help="validation scenes (500)")
    parser.add_argument("--num-test", type=int, default=1000, help="test scenes (1,000)")
    parser.add_argument("--val-seed", type=int, default=202, help="seed of the validation scenes (202)")
    parser.add_argument("--test-seed", type=int, default=202, help="seed of the test scenes (202)")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples (500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="record folder")
    return parser


def variants(grid: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination of the grid's values, as ``KEY=VALUE`` override lists, in a fixed order."""
    keys = [key for key, _ in grid]
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(v for _, v in grid))]


def train(model: str, preset: str, seed: int, overrides: list[str], run_dir: Path) -> str:
    """Train (or resume) one variant to its preset's steps, scoring nothing on the way (the CLI would
    score the test split); returns its command, as ``ppl-scenes`` would run it."""
    command = ["train", model, "--preset", preset, "--out", str(run_dir), "--seed", str(seed), *overrides]
    text = "ppl-scenes " + " ".join(command)
    resume = (run_dir / "config.json").exists()
    started = read_config(run_dir).get("command") if resume else text
    if started != text:
        sys.exit(f"{run_dir} holds another run ({started!r}); give this search --runs of its own")
    if finished(run_dir):
        return text
    if resume:
        spec = RunSpec.from_run_dir(run_dir).continued([])
    else:
        spec = RunSpec.from_overrides(model, overrides, seed=seed, preset=preset)
    spec.train_into(run_dir, resume=resume, progress=False, command=text, evaluate=False)
    if not finished(run_dir):
        sys.exit(f"{run_dir} did not reach its steps")
    return text


def selection_score(scores: dict, keys: Sequence[str]) -> float:
    """The sum of ``keys`` in ``scores`` (lower-is-better ones negated); NaN when one is missing."""
    total = 0.0
    for key in keys:
        value = scores.get(key)
        if value is None:
            return float("nan")
        total += -value if lower_is_better(key) else value
    return total


def main(argv: Sequence[str] | None = None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    grid = variants(args.grid)
    if args.only is not None and not all(0 <= i < len(grid) for i in args.only):
        parser.error(f"--only takes variant indices in [0, {len(grid)})")
    runs = Path(args.runs or f"runs/{NAME}/{args.model}-{args.preset}")
    chosen_ids = args.only if args.only is not None else range(len(grid))
    commands = {i: train(args.model, args.preset, args.seed, grid[i], runs / f"v{i}") for i in chosen_ids}
    if args.only is not None:
        print(f"trained variants {args.only}; run again without --only to score and choose")
        return None

    rows, val_scenes = [], None
    for i, overrides in enumerate(grid):
        run_dir = runs / f"v{i}"
        spec = RunSpec.from_run_dir(run_dir)
        if val_scenes is None:
            val_scenes = run_scenes(spec, "val", args.num_val, args.val_seed)
        validation = score(args.model, load(run_dir), val_scenes, 0)
        steps, minutes = logged_progress(run_dir)
        rows.append(
            {
                "variant": i,
                "overrides": overrides,
                "command": commands[i],
                "steps": steps,
                "train_minutes": minutes,
                "validation": {k: v for k, v in validation.items() if isinstance(v, float)},
                "selection_score": selection_score(validation, args.select),
            }
        )
        print(f"v{i} {' '.join(overrides)}: validation {rows[-1]['selection_score']:.4f}")
    scored = [r for r in rows if r["selection_score"] == r["selection_score"]]  # drop NaN
    if not scored:
        sys.exit(f"no variant has every --select score ({', '.join(args.select)}) on validation")
    best = max(scored, key=lambda r: r["selection_score"])
    best_dir = runs / f"v{best['variant']}"
    test_scenes = run_scenes(RunSpec.from_run_dir(best_dir), "test", args.num_test, args.test_seed)
    test = score(args.model, load(best_dir), test_scenes, args.resamples)
    record = {
        "experiment": NAME,
        "model": args.model,
        "preset": args.preset,
        "command": command_line(NAME, argv),
        "machine": machine() | {"torch_threads_training": args.threads},
        "seed": args.seed,
        "grid": {key: values for key, values in args.grid},
        "select": list(args.select),
        "splits": {
            "validation": {"split": "val", "seed": args.val_seed, "scenes": args.num_val},
            "test": {"split": "test", "seed": args.test_seed, "scenes": args.num_test},
        },
        "digit_source": digit_source(val_scenes, test_scenes),
        "variants": finite(rows),
        "chosen": best["variant"],
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
        "test_intervals": test.get("intervals", {}),
    }
    path = write_record(Path(args.out) / f"{args.model}-{args.preset}.json", record)
    print(f"chosen on validation: v{best['variant']} {' '.join(best['overrides'])}; test scored once: {path}")
    return record


if __name__ == "__main__":
    main()
