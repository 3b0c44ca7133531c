"""SPAIR's step time on scenes held in memory against scenes generated batch by batch.

A training set too large to hold in memory (more than 2 GiB of images, e.g. ``data.num_scenes=400000``
for fresh scenes at every step) is generated batch by batch (``LazyScenes``). Each step then also makes
many small objects, and glibc's adaptive malloc thresholds return and re-fetch the step's large tensors
from the kernel; ``TrainConfig.keep_freed_memory`` (default on) fixes the thresholds. Conditions, each
trained in a fresh process (malloc's settings are per process), in turn, ``--repeats`` times:

* ``memory`` -- ``--memory-scenes`` scenes held in memory (SPAIR's default data);
* ``stream`` -- ``--stream-scenes`` scenes generated batch by batch, ``keep_freed_memory`` on;
* ``stream_default_malloc`` -- the same with ``keep_freed_memory=False``.

Times are wall-clock milliseconds per step between logged steps after ``--warmup`` steps (whole
training steps: batch, SVI step, logging), median over intervals and repeats. Writes
``spair_stream_speed.json`` under ``--out``. Nothing else may run on the machine while it measures.
Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_stream_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import command_line, machine, non_negative_int, positive_int, write_record

NAME = "spair_stream_speed"
CONDITIONS = ("memory", "stream", "stream_default_malloc")
#: SPAIR as the 5-digit recipe trains it (8-px cells); the rest are SPAIR's defaults.
CELL_SIZE = (8, 8)


def worker(args: argparse.Namespace) -> None:
    """Train one condition in this process; prints the per-interval step times (ms) as JSON."""
    import torch

    from ppl_scenes import SPAIR, make_dataset
    from ppl_scenes.data.loading import LazyScenes
    from ppl_scenes.infer import SVITrainer, TrainConfig
    from ppl_scenes.models import SPAIRConfig

    torch.set_num_threads(args.threads)
    stream = args.worker != "memory"
    data = make_dataset(
        "scattered",
        "train",
        num_scenes=args.stream_scenes if stream else args.memory_scenes,
        num_digits=5,
        seed=0,
        root=args.data_root,
        download=False,
    )
    config = TrainConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        log_every=args.log_every,
        keep_freed_memory=args.worker != "stream_default_malloc",
    )
    trainer = SVITrainer(SPAIR(SPAIRConfig(cell_size=CELL_SIZE)), config, progress=False)
    records = [r for r in trainer.fit(data) if "seconds" in r]
    times = [
        1000 * (b["seconds"] - a["seconds"]) / (b["step"] - a["step"])
        for a, b in zip(records, records[1:])
        if a["step"] >= args.warmup
    ]
    print(json.dumps({"lazy": isinstance(trainer.images, LazyScenes), "ms_per_step": times}))


def run_condition(condition: str, args: argparse.Namespace) -> dict[str, Any]:
    """One condition in a fresh Python process; its parsed JSON line."""
    flags = [
        "--worker", condition, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--batch-size", str(args.batch_size), "--log-every", str(args.log_every),
        "--threads", str(args.threads), "--memory-scenes", str(args.memory_scenes),
        "--stream-scenes", str(args.stream_scenes),
    ]  # fmt: skip
    if args.data_root:
        flags += ["--data-root", args.data_root]
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *flags], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{condition} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time every condition ``--repeats`` times, in turn; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", type=positive_int, default=300, help="timed steps per run")
    parser.add_argument("--warmup", type=non_negative_int, default=50, help="untimed steps first")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--log-every", type=positive_int, default=10, help="steps per timed interval")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=positive_int, default=2, help="runs of each condition")
    parser.add_argument("--memory-scenes", type=positive_int, default=10_000)
    parser.add_argument("--stream-scenes", type=positive_int, default=400_000)
    parser.add_argument("--data-root", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON goes")
    parser.add_argument("--worker", choices=CONDITIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for _ in range(args.repeats):
        for condition in CONDITIONS:
            runs[condition].append(run_condition(condition, args))
    summary = {}
    for condition, results in runs.items():
        times = [t for r in results for t in r["ms_per_step"]]
        summary[condition] = {
            "median_ms": statistics.median(times) if times else None,
            "per_run_median_ms": [statistics.median(r["ms_per_step"]) for r in results if r["ms_per_step"]],
            "generated_batch_by_batch": all(r["lazy"] for r in results),
        }
        print(f"{condition:24s} {summary[condition]['median_ms'] or float('nan'):7.1f} ms/step", flush=True)
    record = {
        "command": command_line(NAME, argv),
        "machine": {**machine(), "torch_threads": args.threads},  # the workers' threads
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "cell_size": list(CELL_SIZE),
        "conditions": summary,
        "runs": runs,
    }
    write_record(Path(args.out) / f"{NAME}.json", record)
    return record


if __name__ == "__main__":
    main()
