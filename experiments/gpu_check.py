"""GPU check: SVI step timings and kernel counts from batch 32 to 1,024, in a few minutes.

On a machine with a GPU and nothing installed beyond the package, times complete training steps
(:mod:`step_profile`'s: the model's own trainer, loss, backward, clipping, optimiser step) and counts
the CUDA kernels and GPU-busy time of one profiled step:

* SPAIR at 48x48 and 128x128 px (scattered digits, the digit count growing with the area) at batch
  32, 128, 512 and 1,024 (a batch that runs out of memory is recorded as such and the larger ones of
  that size are skipped);
* every other model (GMAIR, SSDIR's SVI stage, variational saccading, MIST's lifting step) at its
  default training size.

Writes ``benchmarks/gpu_check/<host>.json``. ``--device cpu --smoke`` runs the same code on the CPU
at batch 2 (what the tests run). Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/gpu_check.py
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, positive_int, write_record
from step_profile import DEFAULT_MODELS, add_step_args, measure

NAME = "gpu_check"


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the device running out of memory."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the checks; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON record goes")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="batch 2, 48 px, one timed step: a quick run")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[32, 128, 512, 1024])
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[48, 128], help="SPAIR's image sizes"
    )
    parser.add_argument("--models", nargs="*", choices=DEFAULT_MODELS[1:], default=list(DEFAULT_MODELS[1:]))
    parser.add_argument("--warmup", type=positive_int, default=2, help="untimed steps first")
    parser.add_argument("--timed-steps", type=positive_int, default=5, help="timed steps per condition")
    add_step_args(parser)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on a machine with a GPU, or pass --device cpu --smoke")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.batches, args.sizes, args.warmup, args.timed_steps = [2], [48], 1, 1
    spair: dict[str, dict[str, Any]] = {}
    for size in args.sizes:
        spair[str(size)] = {}
        for batch in args.batches:
            try:
                result = measure("spair", args, batch_size=batch, image_size=size)
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                spair[str(size)][str(batch)] = {"out_of_memory": True}
                torch.cuda.empty_cache()
                break
            spair[str(size)][str(batch)] = result
            print(f"spair {size} px batch {batch}: {_summary(result)}", flush=True)
    others = {}
    for name in args.models:
        others[name] = measure(name, args, batch_size=2 if args.smoke else None)
        print(f"{name}: {_summary(others[name])}", flush=True)
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "host": socket.gethostname(),
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "smoke": args.smoke,
        "compile": args.compile,
        "spair": spair,
        "models": others,
    }
    path = write_record(Path(args.out) / f"{_host_file(record['host'])}.json", record)
    print(f"wrote {path}")
    return record


def _summary(result: dict[str, Any]) -> str:
    text = f"{result['timing']['median_ms']:.1f} ms/step, {result['aten_ops']} aten ops"
    if "cuda_kernels" in result:
        text += f", {result['cuda_kernels']} kernels, {result['gpu_busy_ms']:.1f} ms GPU-busy"
    return text


def _host_file(host: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in host) or "host"


if __name__ == "__main__":
    main()
    sys.exit(0)
