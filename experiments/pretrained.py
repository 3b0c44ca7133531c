"""Package a finished run as a pretrained model: weights, model card, and a benchmark record (issue 33).

The run's weights go to ``ppl_scenes/weights/<name>.safetensors`` and its model card to
``ppl_scenes/weights/<name>.json`` (:mod:`ppl_scenes.zoo`); the same card, with this script's command
and machine, is the record ``benchmarks/pretrained/<name>.json`` that BENCHMARKS.md's table reads.

The model is scored on fresh scenes, by BENCHMARKS.md's protocol: validation scenes (MNIST's held-out
training digits, split ``"val"``) and test scenes (MNIST test digits) of seeds that no earlier
experiment used (``--val-seed``, ``--test-seed``), with 95 % bootstrap intervals over the test scenes.
Nothing is chosen here: the weights are the run's last. SSDIR is scored by the linear probe of its
``z_what`` codes (§4.2; its interval is over the held-out codes); the others by ``model.evaluate``.

::

    PPL_SCENES_DATA=/path/to/data python experiments/pretrained.py RUN_DIR --name spair \\
        --command "ppl-scenes train spair --preset scattered-5 --out RUN_DIR" --cpu-minutes 48
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _common import command_line, logged_progress, machine, run_scenes, write_record

from ppl_scenes.config import config_to_dict
from ppl_scenes.metrics import bootstrap_interval, linear_probe, matched_codes
from ppl_scenes.rundir import save_tensors
from ppl_scenes.runs import RunSpec, load

NAME = "pretrained"
WEIGHTS = Path(__file__).resolve().parents[1] / "ppl_scenes" / "weights"

#: Each shipped model's targets (issue 33: its own issue's bars).
TARGETS = {
    "spair": {"ap50": 0.95, "count_accuracy": 0.90},
    "gmair": {"ap50": 0.95, "acc": 0.75, "nmi": 0.70},
    "ssdir": {"probe_accuracy": 0.95},
    "saccade": {"accuracy": 0.95},
    "mist": {"detection_rate": 0.85, "classification_accuracy": 0.95},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the finished run")
    parser.add_argument("--name", required=True, choices=sorted(TARGETS), help="the pretrained name")
    parser.add_argument("--command", required=True, help="the exact command(s) that trained the run")
    parser.add_argument("--cpu-minutes", type=float, help="training CPU minutes (default: the run's log)")
    parser.add_argument("--notes", default="", help="what a user should know (provenance, caveats)")
    parser.add_argument("--preset", help="the preset (default: the run's)")
    parser.add_argument("--num-val", type=int, default=500, help="validation scenes (500)")
    parser.add_argument("--num-test", type=int, default=1000, help="test scenes (1,000)")
    parser.add_argument("--val-seed", type=int, default=101, help="seed of the validation scenes (101)")
    parser.add_argument("--test-seed", type=int, default=101, help="seed of the test scenes (101)")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples (500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", default="benchmarks/pretrained", help="record folder")
    return parser


def probe_scores(model, dataset, resamples: int) -> dict:
    """SSDIR's linear probe of matched ``z_what`` codes, with an interval over the held-out codes."""
    codes, _, truth = matched_codes(model, dataset, max_scenes=None)
    probe = linear_probe(codes, truth)
    correct = np.zeros(int(probe["n_test"]))
    correct[: round(probe["accuracy"] * probe["n_test"])] = 1.0
    interval = (
        bootstrap_interval(lambda idx: {"probe_accuracy": correct[idx].mean()}, len(correct), resamples)
        if resamples
        else {}
    )
    scores = {f"probe_{k}": v for k, v in probe.items() if k != "stratified"}
    return {**scores, **model.evaluate(dataset), "intervals": interval}


def score(name: str, model, dataset, resamples: int) -> dict:
    if name == "ssdir":
        return probe_scores(model, dataset, resamples)
    return model.evaluate(dataset, intervals=resamples)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    spec = RunSpec.from_run_dir(run_dir)
    model = load(run_dir)
    started = time.perf_counter()
    validation = score(args.name, model, run_scenes(spec, "val", args.num_val, args.val_seed), 0)
    validation.pop("intervals", None)
    test = score(args.name, model, run_scenes(spec, "test", args.num_test, args.test_seed), args.resamples)
    intervals = test.pop("intervals")
    seconds = time.perf_counter() - started

    WEIGHTS.mkdir(exist_ok=True)
    weights = WEIGHTS / f"{args.name}.safetensors"
    save_tensors(weights, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    cpu_minutes = args.cpu_minutes
    if cpu_minutes is None:
        cpu_minutes = logged_progress(run_dir)[1]
    targets = TARGETS[args.name]
    card = {
        "name": args.name,
        "model": spec.model,
        "model_config": config_to_dict(model.config),
        "preset": args.preset or spec.preset,
        "summary": type(model).preset(args.preset or spec.preset).summary,
        "command": args.command,
        "steps": int(model.step),
        "cpu_minutes": round(float(cpu_minutes), 1),
        "machine": machine() | {"torch_threads_training": 1},
        "dataset": spec.dataset,
        "data_kwargs": json.loads(json.dumps(spec.data_kwargs, default=list)),
        "validation": {k: v for k, v in validation.items() if isinstance(v, float)},
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
        "test_intervals": intervals,
        "targets": targets,
        "targets_met": {k: test.get(k) is not None and test[k] >= bar for k, bar in targets.items()},
        "splits": {
            "validation": {"split": "val", "seed": args.val_seed, "scenes": args.num_val},
            "test": {"split": "test", "seed": args.test_seed, "scenes": args.num_test},
        },
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "weights_file": weights.name,
        "size_bytes": weights.stat().st_size,
        "notes": args.notes,
    }
    (WEIGHTS / f"{args.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    record = {
        **card,
        "experiment": NAME,
        "record_command": command_line(NAME, argv),
        "scoring_seconds": seconds,
    }
    write_record(Path(args.out) / f"{args.name}.json", record)
    width = max(map(len, targets))
    for key, bar in targets.items():
        low, high = intervals.get(key, [float("nan")] * 2)
        print(
            f"{args.name} {key:<{width}} val {validation.get(key, float('nan')):.4f} "
            f"test {test.get(key, float('nan')):.4f} [{low:.4f}, {high:.4f}] target {bar}"
        )
    return record


if __name__ == "__main__":
    main()
