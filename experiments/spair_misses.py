"""Where a trained detector's misses are: merged neighbours, the border, or loose boxes.

Parses ``--num-test`` unseen test scenes of the run's dataset and matches each true box to its best
predicted box. A true box with no prediction at IoU >= 0.5 is a miss; misses are split into those that
overlap another true box (IoU > 0.1: two digits explained by one object), those touching the image
border, and the rest (found but boxed loosely, e.g. thin digits). Both SPAIR's where boxes and tight
boxes (``tight_boxes=True``) are scored. Writes ``spair_misses.json`` under ``--out``. Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_misses.py runs/spair-5digits-30min \\
        --out benchmarks/spair_5digits
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import command_line, digit_source, positive_int, split_record, write_record
from torchvision.ops import box_iou

from ppl_scenes import load
from ppl_scenes.runs import build_dataset, read_config

NAME = "spair_misses"


def miss_report(parses_boxes, truths, image_size: tuple[int, int]) -> dict:
    """Counts of missed true boxes by cause, and the widths of the loosely boxed ones."""
    h, w = image_size
    report = {"digits": 0, "missed": 0, "overlapping": 0, "border": 0, "loose": 0, "false_positives": 0}
    loose_widths, loose_iou, widths = [], [], []
    for pred, gt in zip(parses_boxes, truths):
        report["digits"] += len(gt)
        widths += (gt[:, 2] - gt[:, 0]).tolist()
        iou = box_iou(gt, pred) if len(pred) else torch.zeros(len(gt), 0)
        best = iou.max(1).values if iou.shape[1] else torch.zeros(len(gt))
        if iou.shape[1]:
            report["false_positives"] += int((iou.max(0).values < 0.5).sum())
        neighbours = box_iou(gt, gt) - torch.eye(len(gt))
        for j in torch.nonzero(best < 0.5).flatten().tolist():
            report["missed"] += 1
            x1, y1, x2, y2 = gt[j].tolist()
            if len(gt) > 1 and neighbours[j].max() > 0.1:
                report["overlapping"] += 1
            elif min(x1, y1) <= 1 or x2 >= w - 1 or y2 >= h - 1:
                report["border"] += 1
            else:
                report["loose"] += 1
                loose_widths.append(x2 - x1)
                loose_iou.append(float(best[j]))
    report["mean_true_width"] = statistics.mean(widths) if widths else None
    report["loose_mean_true_width"] = statistics.mean(loose_widths) if loose_widths else None
    report["loose_median_best_iou"] = statistics.median(loose_iou) if loose_iou else None
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the test scenes with both kinds of boxes; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", help="a trained SPAIR run directory")
    parser.add_argument("--num-test", type=positive_int, default=500, help="test scenes")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON goes")
    parser.add_argument("--data-root", help="MNIST root (default: the run's, then $PPL_SCENES_DATA)")
    args = parser.parse_args(argv)
    model = load(args.run_dir)
    data = read_config(args.run_dir)["data"]
    kwargs = {**data.get("kwargs", {}), "num_scenes": args.num_test}
    test = build_dataset(data["name"], "test", kwargs, args.data_root or data.get("root"))
    images = torch.stack([test[i][0] for i in range(len(test))])
    truths = [test[i][1]["boxes"] for i in range(len(test))]
    record = {
        "command": command_line(NAME, argv),
        "run_dir": args.run_dir,
        "num_test": len(test),
        "splits": {"test": split_record("test", kwargs.get("seed", 0), test)},
        "digit_source": digit_source(test),
    }
    for label, tight in (("where_boxes", False), ("tight_boxes", True)):
        model.config.tight_boxes = tight
        boxes = [b.cpu() for b in model.parse(images.to(model.device)).boxes]
        record[label] = miss_report(boxes, truths, tuple(images.shape[-2:]))
        print(label, record[label])
    write_record(Path(args.out) / f"{NAME}.json", record)
    return record


if __name__ == "__main__":
    main()
