"""Benchmark the scene generators: digit-bank build time and scenes per second.

The headline number is the time to generate 10,000 48x48 scattered-digit scenes (SPAIR §5.1) one by
one through ``dataset[i]``, after the digit bank is built. Every registered generator is also timed
on a few hundred scenes at its default size. Writes JSON (and prints it)::

    PPL_SCENES_DATA=/path/to/data python experiments/bench_data.py --out benchmarks/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from ppl_scenes.data import DATASETS, make_dataset
from ppl_scenes.data.digits import clear_digit_cache, digit_bank

DIGITLESS = {"gabor", "shapes"}


def time_items(dataset, count: int) -> float:
    """Seconds to generate ``dataset[0] .. dataset[count - 1]``."""
    started = time.perf_counter()
    for i in range(count):
        dataset[i]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and return (and write) its JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-scenes", type=int, default=10_000, help="scattered-digit scenes to time")
    parser.add_argument("--per-generator", type=int, default=300, help="scenes timed per generator")
    parser.add_argument("--data-root", default=None, help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never try to download MNIST")
    parser.add_argument("--out", default="benchmarks/bench_data.json", help="JSON output path ('' to skip)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_scenes, args.per_generator = 50, 5
    digits = {"root": args.data_root, "download": not args.no_download}

    clear_digit_cache()
    started = time.perf_counter()
    bank = digit_bank("train", 14, **digits)
    bank_s = time.perf_counter() - started

    scattered = make_dataset("scattered", num_scenes=args.num_scenes, seed=0, **digits)
    seconds = time_items(scattered, args.num_scenes)
    record: dict = {
        "benchmark": "scene generation",
        "command": "python experiments/bench_data.py" + (" --smoke" if args.smoke else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "digit_source": bank.source,
        "seed": 0,
        "budget": {"scenes": args.num_scenes, "scenes_per_generator": args.per_generator},
        "digit_bank_build_s": round(bank_s, 3),
        "scattered_48x48": {
            "num_scenes": args.num_scenes,
            "num_digits": list(scattered.num_digits),
            "seconds": round(seconds, 3),
            "scenes_per_s": round(args.num_scenes / seconds, 1),
        },
        "generators_ms_per_scene": {},
    }
    for name in DATASETS:
        if name == "images":  # reads the user's own files: nothing to generate
            continue
        kwargs = {} if name in DIGITLESS else digits
        dataset = make_dataset(name, num_scenes=args.per_generator, seed=0, **kwargs)
        time_items(dataset, 1)  # per-split digit banks are built here, outside the timing
        ms = 1000 * time_items(dataset, args.per_generator) / args.per_generator
        record["generators_ms_per_scene"][name] = {"image_size": list(dataset.image_size), "ms": round(ms, 3)}

    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
