"""SSDIR §4.3 / Fig. 4: reconstruction error against the digits' size range and their number.

One SSDIR (detector, then SVI) is trained per generator setting of the multi-scale scattered digits
and scored by the mean squared error of its reconstructions of test scenes of the same setting
(whole image, and per detected object: the object's crop against its decoded patch). Two sweeps,
as in the paper: the largest digit side (``--max-sizes``, the grid drawn from 2x2-4x4) and the grid
side, which sets how many digits a scene holds and how much they overlap (``--grids``, digit sides
``--digit-sizes``). The CPU-scale defaults are 128x128 canvases; the paper's are 512x512.

Writes under ``--out`` (default ``benchmarks/ssdir_ablation``):

* ``ssdir_ablation.json`` -- settings, machine, per-variant steps and seconds, MSEs and AP@0.5;
* ``ablation.png`` -- MSE against the largest digit side and against the grid side (Fig. 4);
* ``examples.png`` -- a test scene and its reconstruction for every variant;
* ``runs/<variant>/`` -- the training runs.

Reproduce the recorded numbers (CPU; variants may train in separate processes, then one call with
``--resume`` only evaluates and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/ssdir_ablation.py --detector-steps 1500 --steps 400 \
        --no-progress
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    add_split_args,
    apply_threads,
    build_splits,
    check_run_dirs,
    command_line,
    config_overrides,
    digit_source,
    finite,
    intervals_kwargs,
    machine,
    make_parser,
    positive_int,
    settings_record,
    table,
    train_model,
    train_record,
    write_record,
)
from _ssdir import add_ssdir_args, ssdir_overrides, ssdir_steps  # noqa: E402

from ppl_scenes import SSDIR, SSDIRConfig  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402
from ppl_scenes.metrics import evaluate_detection  # noqa: E402
from ppl_scenes.ops import crop, xyxy_to_cxcywh  # noqa: E402
from ppl_scenes.viz import draw_boxes, show_image  # noqa: E402

NAME = "ssdir_ablation"


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=10_000, num_train_help="training scenes per variant")
    add_ssdir_args(parser)
    parser.add_argument(
        "--num-test", type=positive_int, default=500, metavar="N", help="test scenes per variant"
    )
    add_split_args(parser)
    parser.add_argument(
        "--max-sizes", nargs="*", type=positive_int, default=[32, 48, 64], metavar="S",
        help="size sweep: largest digit side of each variant (smallest: the first --digit-sizes)",
    )  # fmt: skip
    parser.add_argument(
        "--grids", nargs="*", type=positive_int, default=[2, 3, 4], metavar="G",
        help="count sweep: grid side of each variant (digit sides: --digit-sizes)",
    )  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="SSDIR config overrides")
    return parser


def variants(args) -> dict[str, dict]:
    """Generator settings of each variant, by name (``size<max>`` and ``grid<g>``)."""
    lo, hi = args.digit_sizes
    out = {
        f"size{s}": {"grid_size": (2, 4), "min_size": lo, "max_size": s, "sweep": "size"}
        for s in args.max_sizes
    }
    out.update(
        {f"grid{g}": {"grid_size": g, "min_size": lo, "max_size": hi, "sweep": "grid"} for g in args.grids}
    )
    return out


@torch.no_grad()
def reconstruction_errors(model: SSDIR, dataset, batch_size: int = 64) -> dict[str, float]:
    """Mean squared error of the reconstructions: per image, and per detected object (crop vs patch)."""
    image_se, pixels, object_se, objects = 0.0, 0, 0.0, 0
    size = (model.config.patch_size, model.config.patch_size)
    model.eval()
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(len(dataset), start + batch_size))])
        x = x.to(model.device)
        det = model.detect(x)
        enc = model.encode(x, det)
        recon, patches = model.decode(det, enc["what"], enc["depth"], enc.get("background"))
        image_se += float(((recon - x) ** 2).sum())
        pixels += x.numel()
        crops = crop(x, xyxy_to_cxcywh(det.gather(det.boxes)), size)
        err = ((patches - crops) ** 2).mean(dim=(-3, -2, -1))
        object_se += float(err[det.present].sum())
        objects += int(det.present.sum())
    return {
        "mse": image_se / pixels,
        "object_mse": object_se / objects if objects else float("nan"),
        "objects": objects,
    }


def plot_sweeps(results: dict, specs: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, sweep, key, label in (
        (axes[0], "size", "max_size", "largest digit side (px)"),
        (axes[1], "grid", "grid_size", "grid side (digits: up to side²)"),
    ):
        names = [n for n in results if specs[n]["sweep"] == sweep]
        if names:
            xs = [specs[n][key] for n in names]
            for metric, style in (("mse", "o-"), ("object_mse", "s--")):
                ys = [results[n][metric] for n in names]
                ax.plot(xs, ys, style, label="image" if metric == "mse" else "per object")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("reconstruction MSE")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_examples(models: dict, tests: dict, path: Path) -> Path:
    fig, axes = plt.subplots(2, len(models), figsize=(2 * len(models), 4.2), squeeze=False)
    for c, (name, model) in enumerate(models.items()):
        x = tests[name][0][0][None].to(model.device)
        parse = model.parse(x)
        show_image(axes[0, c], x[0].cpu())
        show_image(axes[1, c], parse.reconstruction[0].cpu())
        draw_boxes(axes[1, c], parse.boxes[0].cpu(), color="tab:red", linewidth=0.8)
        axes[0, c].set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(args)
    specs = variants(args)
    if not specs:
        parser.error("nothing to run: give --max-sizes and/or --grids")
    overrides = ssdir_overrides(args, config_overrides(parser, args.set, SSDIRConfig()))
    out = Path(args.out)
    runs = {name: out / "runs" / name for name in specs}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)
    run_args = type(args)(**{**vars(args), "steps": ssdir_steps(args, overrides)})

    results, validation, costs, models, tests, splits = {}, {}, {}, {}, {}, {}
    source = {"root": args.data_root, "download": not args.no_download}
    for name, spec in specs.items():
        kwargs = {k: v for k, v in spec.items() if k != "sweep"}
        kwargs["canvas_size"] = args.canvas_size
        sets = build_splits(
            "multiscale",
            args,
            {**kwargs, **source},
            train_kwargs={"num_scenes": args.num_train},
            num_test=args.num_test,
            test_seed=10_000 + args.seed,
        )
        train_set, tests[name], splits[name] = sets.train, sets.test, sets
        data = {"name": "multiscale", "kwargs": kwargs}
        model, costs[name] = train_model(
            train_set, runs[name], run_args, data, command, not args.no_progress, SSDIR, **overrides
        )
        models[name] = model
        for scenes, scores, extra in (
            (sets.val, validation, {}),
            (tests[name], results, intervals_kwargs(args)),
        ):
            detection = evaluate_detection(model, scenes, **extra)
            row = {**reconstruction_errors(model, scenes), "ap50": detection["ap50"]}
            if "intervals" in detection:
                row["intervals"] = {"ap50": detection["intervals"]["ap50"]}
            scores[name] = finite(row)

    figures = {
        "ablation": plot_sweeps(results, specs, out / "ablation.png"),
        "examples": plot_examples(models, tests, out / "examples.png"),
    }
    first = next(iter(models.values()))
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(run_args, SSDIR),
        "model": config_to_dict(first.config),
        "variants": {
            k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
            for k, v in specs.items()
        },
        "cost": costs,
        "results": results,
        "validation": validation,
        "splits": {k: v.record for k, v in splits.items()},
        "digit_source": digit_source(*(v.test for v in splits.values())),
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [{"variant": k, **r, "steps": costs[k]["steps"]} for k, r in results.items()]
    print(
        table(
            rows,
            {
                "variant": "variant",
                "mse": "MSE",
                "object_mse": "object MSE",
                "ap50": "AP@.5",
                "steps": "steps",
            },
        )
    )
    print(json.dumps({k: r["mse"] for k, r in results.items()}))
    return record


if __name__ == "__main__":
    main()
