"""How precisely a trained SPAIR boxes its objects: where boxes against tightened ones.

SPAIR's own boxes are those of ``z_where``: the area its decoded glimpse is pasted into. The truth
boxes of the scene generators are tight around each digit's ink. This script scores, on one trained
run, the where boxes and the two ways ``SPAIR`` can tighten them (``tight_mode``): the decoded
glimpse's opacity (GMAIR's Appendix B.3) and the object's ink drawn on the canvas (the truth boxes'
own rule), each at several thresholds. Thresholds are chosen on **validation** scenes (the run's
generator on split ``"val"``: MNIST's held-out training digits, never used for training scenes) by AP
over IoU 0.1:0.1:0.9, then every setting is scored on the unseen **test** scenes (MNIST test digits,
the run's seed), the chosen ones with 95 % bootstrap intervals (``--intervals``). Counts do not
depend on the boxes.

Writes ``spair_boxes.json``, ``ap_by_iou.png`` (test AP against the IoU threshold) and
``parses_<boxes>.png`` (test scenes with each kind of box, truth in yellow) under ``--out``. Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_boxes.py runs/spair-5digits-30min \\
        --out benchmarks/spair_boxes
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from _common import (
    DEFAULT_INTERVALS,
    command_line,
    digit_source,
    non_negative_int,
    positive_int,
    split_record,
    write_record,
)

from ppl_scenes import load
from ppl_scenes.metrics import SPAIR_IOU_THRESHOLDS, average_precision_range, evaluate_detection
from ppl_scenes.runs import build_dataset, read_config

NAME = "spair_boxes"
#: Seed of the validation scenes (split "val": digits no training scene uses), unless --val-seed.
VALIDATION_SEED = 1
OPACITY_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
INK_THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def settings(opacity: Sequence[float], ink: Sequence[float]) -> list[dict]:
    """The box settings to score: where boxes, then each tight mode at each threshold."""
    rows = [{"boxes": "where", "tight_boxes": False}]
    for mode, thresholds in (("opacity", opacity), ("ink", ink)):
        rows += [
            {"boxes": mode, "tight_boxes": True, "tight_mode": mode, "tight_threshold": t} for t in thresholds
        ]
    return rows


def apply_setting(model, setting: dict) -> None:
    """Set the box settings of ``setting`` on the model's config."""
    for key in ("tight_boxes", "tight_mode", "tight_threshold"):
        if key in setting:
            setattr(model.config, key, setting[key])


def score(model, dataset, setting: dict) -> dict:
    """Detection scores of ``model`` on ``dataset`` with the boxes of ``setting``."""
    apply_setting(model, setting)
    return evaluate_detection(model, dataset)


def ap_by_iou(model, dataset) -> dict[float, float]:
    """AP at each of SPAIR's IoU thresholds with the model's current box settings."""
    from ppl_scenes.metrics import parse_dataset

    parses, targets, _ = parse_dataset(model, dataset, keep_images=False)
    boxes = [b for p in parses for b in p.boxes]
    scores = [s for p in parses for s in p.scores]
    gt = [t["boxes"] for t in targets]
    per = average_precision_range(boxes, scores, gt, SPAIR_IOU_THRESHOLDS)["per_threshold"]
    return {round(float(k), 2): float(v) for k, v in per.items()}


def main(argv: Sequence[str] | None = None) -> dict:
    """Score every box setting on validation and test scenes; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", help="a trained SPAIR run directory")
    parser.add_argument("--num-val", type=positive_int, default=500, help="validation scenes")
    parser.add_argument(
        "--val-seed", type=non_negative_int, default=VALIDATION_SEED, help="seed of the validation scenes"
    )
    parser.add_argument("--num-test", type=positive_int, default=500, help="test scenes")
    parser.add_argument(
        "--intervals",
        type=non_negative_int,
        default=DEFAULT_INTERVALS,
        help="bootstrap resamples of the chosen settings' 95 %% test intervals (0: none)",
    )
    parser.add_argument("--opacity-thresholds", type=float, nargs="+", default=list(OPACITY_THRESHOLDS))
    parser.add_argument("--ink-thresholds", type=float, nargs="+", default=list(INK_THRESHOLDS))
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON and figure go")
    parser.add_argument("--data-root", help="MNIST root (default: the run's, then $PPL_SCENES_DATA)")
    args = parser.parse_args(argv)
    model = load(args.run_dir)
    data = read_config(args.run_dir)["data"]
    root = args.data_root or data.get("root")
    kwargs = data.get("kwargs", {})
    # the thresholds are chosen on validation scenes: split "val", never training or test digits
    val = build_dataset(
        data["name"], "val", {**kwargs, "num_scenes": args.num_val, "seed": args.val_seed}, root
    )
    test = build_dataset(data["name"], "test", {**kwargs, "num_scenes": args.num_test}, root)
    rows = []
    for setting in settings(args.opacity_thresholds, args.ink_thresholds):
        row = {**setting, "validation": score(model, val, setting), "test": score(model, test, setting)}
        rows.append(row)
        print(
            f"{setting['boxes']:8s} {setting.get('tight_threshold', ''):>5} "
            f"val AP.1:.9 {row['validation']['ap_spair']:.3f}  test AP@.5 {row['test']['ap50']:.3f} "
            f"AP.1:.9 {row['test']['ap_spair']:.3f} count {row['test']['count_accuracy']:.3f}",
            flush=True,
        )
    chosen = {}
    for mode in ("where", "opacity", "ink"):
        candidates = [r for r in rows if r["boxes"] == mode]
        if candidates:
            best = max(candidates, key=lambda r: r["validation"]["ap_spair"])
            apply_setting(model, best)
            chosen[mode] = {**best, "test_ap_by_iou": ap_by_iou(model, test)}
            if args.intervals:
                chosen[mode]["test_intervals"] = evaluate_detection(model, test, intervals=args.intervals)[
                    "intervals"
                ]
    record = {
        "command": command_line(NAME, argv),
        "run_dir": args.run_dir,
        "num_val": len(val),
        "num_test": len(test),
        "validation_seed": args.val_seed,
        "splits": {
            "validation": split_record("val", args.val_seed, val),
            "test": split_record("test", kwargs.get("seed", 0), test),
        },
        "digit_source": digit_source(val, test),
        "settings": rows,
        "chosen_on_validation": chosen,
    }
    out = Path(args.out)
    write_record(out / f"{NAME}.json", record)
    plot_ap_by_iou(chosen, out / "ap_by_iou.png")
    for mode, row in chosen.items():
        plot_parses(model, test, row, out / f"parses_{mode}.png")
    return record


def plot_parses(model, dataset, setting: dict, path: Path, num: int = 8) -> None:
    """The first ``num`` scenes of ``dataset`` with the boxes of ``setting`` (truth in yellow)."""
    import torch

    from ppl_scenes.viz import plot_scenes

    apply_setting(model, setting)
    items = [dataset[i] for i in range(min(num, len(dataset)))]
    images = torch.stack([im for im, _ in items])
    parse = model.parse(images.to(model.device))
    label = (
        setting["boxes"]
        if setting["boxes"] == "where"
        else f"{setting['boxes']} > {setting['tight_threshold']}"
    )
    plot_scenes(
        images,
        [b.cpu() for b in parse.boxes],
        [t["boxes"] for _, t in items],
        reconstructions=parse.reconstruction.cpu(),
        titles=[f"{label}: {len(b)} found, {len(t['boxes'])} true" for b, (_, t) in zip(parse.boxes, items)],
        path=path,
    )


def plot_ap_by_iou(chosen: dict, path: Path) -> None:
    """Test AP against the IoU threshold for each kind of box (its validation-chosen threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode, row in chosen.items():
        per = row["test_ap_by_iou"]
        label = mode if mode == "where" else f"{mode} > {row['tight_threshold']}"
        ax.plot(
            list(per), list(per.values()), marker="o", label=f"{label} (mean {row['test']['ap_spair']:.3f})"
        )
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (test scenes)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
