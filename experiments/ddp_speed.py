"""Data-parallel SPAIR training on the CPU: one process of 2 threads against 2 processes of 1 thread.

Trains SPAIR (its default config, 48x48 scattered-digit scenes, global batch ``--batch-size``) through
the library's own trainer for ``--warmup`` untimed and ``--timed-steps`` timed steps, once as a single
process with ``--threads`` intra-op threads and once under ``torchrun --nproc-per-node N`` with
``threads / N`` threads per process (gloo all-reduce of the gradients every step), and reports
training images per second of each. Writes ``ddp_speed.json`` under ``--out`` (default
``benchmarks/ddp_speed``). Nothing else should run on the machine while it measures. Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/ddp_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, mnist_source, positive_int, write_record

from ppl_scenes import SPAIR, make_dataset
from ppl_scenes.infer import SVITrainer, TrainConfig

NAME = "ddp_speed"
ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Train and time (one process, or one rank of a torchrun launch); rank 0 writes ``--result``."""
    torch.set_num_threads(args.threads)
    data = make_dataset(
        "scattered", "train", num_scenes=256, canvas_size=48, seed=args.seed, root=args.data_root
    )
    images = torch.stack([data[i][0] for i in range(len(data))])
    torch.manual_seed(args.seed)
    steps = args.warmup + args.timed_steps
    config = TrainConfig(steps=steps, batch_size=args.batch_size, log_every=1, seed=args.seed)
    records = SVITrainer(SPAIR(), config, progress=False).fit(images)
    if int(os.environ.get("RANK", "0")) == 0:
        seconds = records[-1]["seconds"] - records[args.warmup - 1]["seconds"]
        result = {
            "seconds": seconds,
            "images_per_second": args.batch_size * args.timed_steps / seconds,
            "ms_per_step": 1000 * seconds / args.timed_steps,
            "loss": [r["loss"] for r in records],
        }
        Path(args.result).write_text(json.dumps(result))


def launch(args: argparse.Namespace, procs: int, result: Path) -> dict[str, Any]:
    """Run :func:`worker` in ``procs`` processes (torchrun when more than one) and read its result."""
    threads = max(1, args.threads // procs)
    flags = [
        "--worker", "--threads", str(threads), "--result", str(result), "--seed", str(args.seed),
        "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
        "--timed-steps", str(args.timed_steps),
    ]  # fmt: skip
    if args.data_root:
        flags += ["--data-root", args.data_root]
    script = [str(Path(__file__).resolve()), *flags]
    if procs > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    else:
        command = [sys.executable]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    subprocess.run([*command, *script], env=env, check=True)
    return {"processes": procs, "threads_per_process": threads, **json.loads(result.read_text())}


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run both launches; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON goes")
    parser.add_argument("--timed-steps", type=positive_int, default=20, help="timed steps per launch")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="global images per step")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads in all")
    parser.add_argument("--procs", type=positive_int, default=2, help="data-parallel processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and scenes")
    parser.add_argument("--data-root", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        single = launch(args, 1, Path(tmp) / "single.json")
        parallel = launch(args, args.procs, Path(tmp) / "parallel.json")
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "budget": {"warmup_steps": args.warmup, "timed_steps": args.timed_steps},
        "digit_source": mnist_source(args.data_root),
        "single": single,
        "data_parallel": parallel,
        "speedup": parallel["images_per_second"] / single["images_per_second"],
    }
    out = Path(args.out)
    write_record(out / f"{NAME}.json", record)
    for name, r in (("1 process", single), (f"{args.procs} processes", parallel)):
        print(
            f"{name} x {r['threads_per_process']} thread(s): {r['images_per_second']:.1f} images/s "
            f"({r['ms_per_step']:.0f} ms/step)"
        )
    print(f"speed-up x{record['speedup']:.2f}; wrote {out / f'{NAME}.json'}")
    return record


if __name__ == "__main__":
    main()
