"""Your own images, shown on real ones: photographs shipped in scikit-image, and Atari frames.

Each image set is written to a folder as PNG files, a model is trained on it through the command line
(``ppl-scenes train MODEL --images DIR --object-size PX --minutes M``), the images are parsed with
``ppl-scenes parse`` and, where there is ground truth, scored with ``ppl-scenes eval --images
--annotations``. Everything runs offline: the photographs are the ones bundled in the scikit-image wheel
(the optional extra ``examples``: ``pip install 'ppl_scenes[examples]'``), the Atari frames come from
``ale-py`` (the extra ``atari``), which ships its ROMs.

Image sets (``--runs SET:MODEL ...``):

* ``coins`` -- ``skimage.data.coins()``, 303x384 gray: 24 Greek coins, 35-65 px across, on a dark,
  unevenly lit background. Ground truth: the 24 coins' boxes from scikit-image's own classical
  segmentation of this image (Sobel elevation map, watershed from dark/bright markers, holes filled;
  every box checked by eye), written as COCO.
* ``hubble`` -- the top-left 384x384 of ``skimage.data.hubble_deep_field()``, RGB: galaxies from a
  few pixels to 60 px. No ground truth.
* ``atari`` -- Space Invaders frames, 210x160 RGB, from a random policy (needs ``ale-py``). No ground
  truth.

Writes under ``--out`` (default ``benchmarks/own_images``):

* ``own_images.json`` -- machine, and per run the commands, steps, validation ELBO and counts
  (``eval.json``), objects found per image, and the COCO scores where there is ground truth (a later
  call adds its runs to those already recorded);
* ``coins.png`` -- the coins with each model's boxes (blue), the ground truth (yellow) and the
  reconstructions; ``coins_truth.json`` -- the ground truth (COCO);
* ``runs/images/SET/`` (the PNG files), ``runs/SET-MODEL/`` (the run, its ``detections.json``,
  ``objects.csv`` and ``figures/``).

Reproduce the recorded numbers (CPU, one thread, 7 minutes per run, 5 for Hubble and Atari)::

    OMP_NUM_THREADS=1 python experiments/own_images.py --minutes 7 --runs coins:spair coins:gmair
    OMP_NUM_THREADS=1 python experiments/own_images.py --minutes 5 --runs hubble:spair atari:spair
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine, positive_float, positive_int, write_record
from PIL import Image

import ppl_scenes
from ppl_scenes.cli import main as cli
from ppl_scenes.data.images import read_image
from ppl_scenes.rundir import read_metrics
from ppl_scenes.viz import plot_scenes

NAME = "own_images"
EXAMPLES_HINT = "pip install 'ppl_scenes[examples]'  (or: pip install scikit-image)"
ATARI_HINT = "pip install 'ppl_scenes[atari]'  (or: pip install ale-py)"

#: Per image set: the object size, and the options and overrides of ``ppl-scenes train`` beyond it.
SETS: dict[str, dict[str, Any]] = {
    # Coins are ~44 px; 96-px crops (3x3 cells of 36 px) keep a CPU step near half a second. The
    # background is gray, not black: with the default black one every cell turns on to paint it
    # (BENCHMARKS.md), so the background colour is learned, starting from the image's darker quartile.
    "coins": {
        "object_size": 44,
        "train": ["--crop", "96", "train.batch_size=16", "pres_anneal_steps=500", "background=learned"]
        + ["background_value=0.2"],
    },
    "hubble": {"object_size": 12, "train": ["train.batch_size=16", "pres_anneal_steps=500"], "tile": 96},
    "atari": {"object_size": 12, "train": ["train.batch_size=16", "pres_anneal_steps=500"], "batch": 2},
}
MODELS = ("spair", "gmair")


def coins_truth(pixels: np.ndarray) -> list[list[int]]:
    """The coins' boxes ``[x, y, w, h]``: scikit-image's region-based segmentation of ``coins()``."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, segmentation

    markers = np.zeros_like(pixels)
    markers[pixels < 30], markers[pixels > 150] = 1, 2
    coins = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(pixels), markers) - 1)
    regions = [r for r in measure.regionprops(ndi.label(coins)[0]) if r.area > 400]
    return [[int(x0), int(y0), int(x1 - x0), int(y1 - y0)] for y0, x0, y1, x1 in (r.bbox for r in regions)]


def write_set(name: str, folder: Path, num_frames: int) -> Path | None:
    """Write image set ``name`` as PNG files into ``folder``; returns its COCO ground truth, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "atari":
        from ppl_scenes.data.atari import play_atari

        for i, frame in enumerate(play_atari(num_frames, every=8, seed=0)):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"frame{i:03d}.png")
        return None
    from skimage import data

    if name == "hubble":
        Image.fromarray(data.hubble_deep_field()[:384, :384]).save(folder / "hubble.png")
        return None
    pixels = data.coins()
    Image.fromarray(pixels).save(folder / "coins.png")
    boxes = coins_truth(pixels)
    truth = {
        "images": [{"id": 1, "file_name": "coins.png", "height": 303, "width": 384}],
        "annotations": [
            {"id": k + 1, "image_id": 1, "bbox": b, "category_id": 1} for k, b in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "coin"}],
    }
    path = folder.parents[2] / f"{name}_truth.json"
    path.write_text(json.dumps(truth))
    return path


def run(args: argparse.Namespace, out: Path, name: str, model: str, folder: Path, truth: Path | None):
    """Train, parse and (with ``truth``) score one model on one image set, all through the CLI."""
    spec, run_dir = SETS[name], out / "runs" / f"{name}-{model}"
    budget = ["--steps", str(args.steps)] if args.steps else ["--minutes", f"{args.minutes:g}"]
    train = ["train", model, "--images", str(folder), "--object-size", str(spec["object_size"])]
    train += [
        "--out",
        str(run_dir),
        *budget,
        *spec["train"],
        *(["--no-progress"] if args.no_progress else []),
    ]
    parse = ["parse", str(run_dir), str(folder), "--out", str(run_dir / "detections.json")]
    parse += ["--figures", str(run_dir / "figures"), "--csv", str(run_dir / "objects.csv"), "--no-progress"]
    parse += ["--batch-size", str(spec.get("batch", 8))] + (
        ["--tile", str(spec["tile"])] if "tile" in spec else []
    )
    commands = [train, parse]
    if truth is not None:
        commands.append(
            ["eval", str(run_dir), "--images", str(folder), "--annotations", str(truth), "--json"]
        )
    start = time.perf_counter()
    for command in commands:
        print(f"$ ppl-scenes {shlex.join(command)}", file=sys.stderr, flush=True)
        if cli(command) != 0:
            raise SystemExit(f"{NAME}: `ppl-scenes {shlex.join(command)}` failed")
    detections = json.loads((run_dir / "detections.json").read_text())
    per_image = {im["id"]: 0 for im in detections["images"]}
    for a in detections["annotations"]:
        per_image[a["image_id"]] += 1
    names = {im["id"]: Path(im["file_name"]).name for im in detections["images"]}
    trained = [r for r in read_metrics(run_dir) if "loss" in r]
    record = {
        "commands": [f"ppl-scenes {shlex.join(c)}" for c in commands],
        "steps": trained[-1]["step"] if trained else 0,
        "training_seconds": trained[-1].get("seconds") if trained else None,
        "seconds_all_commands": round(time.perf_counter() - start, 1),
        "config": json.loads((run_dir / "config.json").read_text())["model_config"],
        "validation": json.loads((run_dir / "eval.json").read_text()),
        "objects_per_image": {names[i]: n for i, n in per_image.items()},
        "objects_mean": float(np.mean(list(per_image.values()))),
        "run_dir": str(run_dir),
    }
    if truth is not None:
        record["coco"] = json.loads((run_dir / "eval-images.json").read_text())
    return record


def coins_figure(out: Path, folder: Path, truth: Path, models: Sequence[str]) -> Path:
    """The coins with each model's boxes, the ground truth and the reconstructions, side by side."""
    image = read_image(folder / "coins.png")
    xywh = torch.tensor(
        [a["bbox"] for a in json.loads(truth.read_text())["annotations"]], dtype=torch.float32
    )
    true_boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    boxes, recons, titles = [], [], []
    for model_name in models:
        model = ppl_scenes.load(out / "runs" / f"coins-{model_name}")
        records = ppl_scenes.parse_files(model, folder, progress=False, keep_reconstructions=True)
        xywh = torch.tensor([a["bbox"] for a in records["annotations"]], dtype=torch.float32).reshape(-1, 4)
        boxes.append(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
        recons.append(records["reconstructions"][1])
        titles.append(f"{model_name.upper()}: {len(xywh)} found, {len(true_boxes)} coins")
    n = len(models)
    fig = plot_scenes(
        image[None].expand(n, -1, -1, -1),
        boxes,
        gt_boxes=[true_boxes] * n,
        reconstructions=torch.stack(recons),
        titles=titles,
        max_images=n,
    )
    path = out / "coins.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", default=f"benchmarks/{NAME}", metavar="DIR", help="where JSON and figures go"
    )
    parser.add_argument("--runs", nargs="+", default=["coins:spair", "coins:gmair"], metavar="SET:MODEL")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive_float, default=8.0, metavar="M", help="per run (8)")
    budget.add_argument("--steps", type=positive_int, metavar="N", help="per run, instead of --minutes")
    parser.add_argument("--num-frames", type=positive_int, default=40, metavar="N", help="Atari frames (40)")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="T", help="torch threads (1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        name, _, model = item.partition(":")
        if name not in SETS or model not in MODELS:
            parser.error(f"--runs: {item!r} is not SET:MODEL with SET in {sorted(SETS)}, MODEL in {MODELS}")
        runs.append((name, model))
    try:
        if any(name in ("coins", "hubble") for name, _ in runs):
            import skimage  # noqa: F401
        if any(name == "atari" for name, _ in runs):
            import ale_py  # noqa: F401
    except ImportError as err:
        hint = ATARI_HINT if "ale" in str(err) else EXAMPLES_HINT
        print(f"{NAME}: error: {err.name} is missing: {hint}", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = out / "runs" / "images"
    truths = {name: write_set(name, images / name, args.num_frames) for name in dict(runs)}
    path = out / f"{NAME}.json"
    record: dict[str, Any] = (
        json.loads(path.read_text()) if path.is_file() else {"experiment": NAME, "calls": [], "runs": {}}
    )
    record["calls"].append(
        {
            "command": f"python experiments/{NAME}.py {shlex.join(sys.argv[1:] if argv is None else argv)}",
            "budget": {"minutes": None if args.steps else args.minutes, "steps": args.steps},
            "machine": machine(),
            "skimage": _version("scikit-image"),
            "ale_py": _version("ale-py"),
        }
    )
    record.setdefault("figures", {})
    for name, model in runs:
        folder = images / name
        record["runs"][f"{name}:{model}"] = run(args, out, name, model, folder, truths[name])
        write_record(path, record)  # each finished run is kept
    coin_models = [key.partition(":")[2] for key in record["runs"] if key.startswith("coins:")]
    if coin_models and "coins" in truths:  # drawn again when this call wrote the coins
        record["figures"]["coins"] = str(coins_figure(out, images / "coins", truths["coins"], coin_models))
    write_record(path, record)
    return record


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
