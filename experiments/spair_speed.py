"""SPAIR step time: the issue's speed target, wavefront against raster order, and growth with pixels.

Times complete SVI steps (``Trace_ELBO`` loss, backward, gradient clipping, Adam) through the
library's own :class:`~ppl_scenes.infer.svi.SVITrainer`, on scattered-digit scenes, after a few
warm-up steps; reports the median and quartiles in milliseconds. Conditions:

* ``target`` -- 48x48 images, batch 32, a 4x4 grid, lateral connections on, wavefront order (issue 3:
  median <= 100 ms on the 2-core CPU);
* ``raster`` -- the same, one cell at a time (the wavefront speed-up is their ratio);
* ``no_lateral`` -- the same without lateral connections (a mean-field guide: one batched call);
* ``pixels`` -- 48, 96 and 192 px images (4x4, 8x8, 16x16 grids) at the same batch, wavefront order:
  time per step and per thousand pixels (growth should be linear in pixels).

Writes ``spair_speed.json`` and ``step_time_by_pixels.png`` under ``--out`` (default
``benchmarks/spair_speed``). Nothing else may run on the machine while it measures. Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, mnist_source, positive_int, write_record

from ppl_scenes import SPAIR, make_dataset
from ppl_scenes.infer import SVITrainer
from ppl_scenes.infer.trainer import TrainConfig

NAME = "spair_speed"


def time_steps(model: SPAIR, images: torch.Tensor, steps: int, warmup: int) -> dict[str, float]:
    """Median and quartiles (ms) of ``steps`` SVI steps on ``images`` after ``warmup`` untimed ones."""
    trainer = SVITrainer(model, TrainConfig(batch_size=len(images), steps=steps + warmup), progress=False)
    trainer.setup(images)
    times = []
    for k in range(warmup + steps):
        model.set_step(k)
        start = time.perf_counter()
        trainer.train_step(images)
        if k >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    q = torch.tensor(times).quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
    return {"median_ms": q[1], "q25_ms": q[0], "q75_ms": q[2], "steps": steps}


def scenes(size: int, batch: int, seed: int, root: str | None, download: bool) -> torch.Tensor:
    """A batch of scattered-digit scenes of ``size`` px (digit count scaled with the area)."""
    digits = max(1, round(5 * (size / 48) ** 2))
    data = make_dataset(
        "scattered",
        "train",
        num_scenes=batch,
        num_digits=digits,
        canvas_size=size,
        seed=seed,
        root=root,
        download=download,
    )
    return torch.stack([data[i][0] for i in range(batch)])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the timings; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where JSON and the figure go")
    parser.add_argument("--timed-steps", type=positive_int, default=20, help="timed steps per condition")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first")
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[48, 96, 192], help="image sizes (px)"
    )
    parser.add_argument("--batch-size", type=positive_int, help="images per step (default: SPAIR's)")
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and scenes")
    parser.add_argument("--data-root", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never download MNIST")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or SPAIR.default_train["batch_size"]
    out = Path(args.out)
    download = not args.no_download

    def run(size: int, **overrides: Any) -> dict[str, float]:
        torch.manual_seed(args.seed)
        images = scenes(size, batch, args.seed, args.data_root, download)
        return time_steps(SPAIR(**overrides), images, args.timed_steps, args.warmup)

    results: dict[str, Any] = {
        "target": run(48),
        "raster": run(48, order="raster"),
        "no_lateral": run(48, lateral=False),
    }
    results["wavefront_speedup"] = results["raster"]["median_ms"] / results["target"]["median_ms"]
    pixels = {}
    for size in args.sizes:
        timing = results["target"] if size == 48 else run(size)
        pixels[str(size)] = {**timing, "ms_per_kilopixel": timing["median_ms"] / (size * size / 1000)}
    results["pixels"] = pixels
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "batch_size": batch,
        "seed": args.seed,
        "budget": {"warmup_steps": args.warmup, "timed_steps": args.timed_steps},
        "digit_source": mnist_source(args.data_root, download),
        "results": results,
        "target_met": results["target"]["median_ms"] <= 100.0,
    }
    write_record(out / f"{NAME}.json", record)
    figure = plot_pixels(pixels, out / "step_time_by_pixels.png")
    target, raster = results["target"]["median_ms"], results["raster"]["median_ms"]
    print(f"target (48 px, batch {batch}, 4x4 grid, lateral, wavefront): {target:.1f} ms")
    print(f"raster: {raster:.1f} ms (wavefront speed-up x{results['wavefront_speedup']:.2f})")
    print(f"no lateral: {results['no_lateral']['median_ms']:.1f} ms")
    for size, t in pixels.items():
        print(f"{size:>4} px: {t['median_ms']:.1f} ms/step, {t['ms_per_kilopixel']:.2f} ms per 1000 px")
    print(f"wrote {out / f'{NAME}.json'} and {figure}")
    return record


def plot_pixels(pixels: dict[str, dict[str, float]], path: Path) -> Path:
    """Step time against pixels per image, with the line through the origin and the smallest size."""
    import matplotlib.pyplot as plt

    sizes = sorted(int(s) for s in pixels)
    px = [s * s for s in sizes]
    ms = [pixels[str(s)]["median_ms"] for s in sizes]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(px, ms, "o-", label="measured (median)")
    ax.plot(px, [ms[0] * p / px[0] for p in px], "--", color="gray", label="linear in pixels")
    for s, p, m in zip(sizes, px, ms):
        ax.annotate(f"{s} px", (p, m), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("pixels per image")
    ax.set_ylabel("ms per SVI step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
    sys.exit(0)
