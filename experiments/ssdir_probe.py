"""SSDIR §4.2 / Table 2, Figs. 2-3: a linear probe of the objects' ``z_what`` on multi-scale digits.

SSDIR (its supervised detector first, then its what/depth encoders and decoder with the detector
frozen) and SPAIR are trained on the same multi-scale scattered MNIST scenes (CPU scale by default:
128x128 canvases, 2x2-4x4 grids, digit sides 16-64 px; the paper's are 512x512 with sides 96-384) for
each of ``--seeds``. On test scenes every object a model reports is labelled with the digit whose
true box it overlaps most (the paper's matching: the maximum IoU, any overlap), and a logistic
regression (scikit-learn, :func:`ppl_scenes.metrics.linear_probe`, 25 % of the codes held out) is
fitted on the ``z_what`` codes: accuracy, precision, recall and F1, mean and spread over the seeds.
The same probe on the detections matched at IoU > 0.5 only is recorded beside it. Detection (AP at
IoU 0.5 of each model's boxes) and the encoders' throughput (images per second of the guide -- the
whole inference pass -- on a batch of test images, same threads, the median of 15 passes taken in turns
after a warm-up) complete the record.

Writes under ``--out`` (default ``benchmarks/ssdir_probe``):

* ``ssdir_probe.json`` -- settings, machine, per-run steps and seconds, per-seed probe and detection
  scores, their means and standard deviations, the throughputs, the paper's numbers, targets met;
* ``examples.png`` -- inputs, reconstructions with boxes and SSDIR's per-object patches (Fig. 2);
* ``tsne.png`` -- t-SNE of the matched ``z_what`` of SSDIR and SPAIR coloured by digit (Fig. 3);
* ``runs/<model>-seed<k>/`` -- the training runs (SSDIR's hold ``detector.safetensors``).

SSDIR trains with its config's defaults (:class:`~ppl_scenes.SSDIRConfig`: 9,500 detector steps, the
last 1,500 at a tenth of the rate) and ``--steps`` SVI steps, on a stream of ``--num-train`` fresh
scenes (200,000 by default, generated batch by batch: a detector trained on a fixed 10,000 overfits
them). Reproduce the recorded numbers (CPU; the models may train in separate processes, one thread
each, then one call with ``--resume`` only evaluates, times both encoders and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/ssdir_probe.py --models ssdir --seeds 0 --steps 2000 \
        --threads 1 --no-progress                         # likewise --seeds 1, --seeds 2
    PPL_SCENES_DATA=/path/to/data python experiments/ssdir_probe.py --models spair --num-train 10000 \
        --minutes 14 --steps 100000 --threads 1 --no-progress
    PPL_SCENES_DATA=/path/to/data python experiments/ssdir_probe.py --resume --threads 1 --no-progress

(The recorded runs trained the same recipe in two calls -- 8,000 detector steps, then
``--detector-from`` with ``--detector-steps 1500`` at a tenth of the rate; see BENCHMARKS.md.)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    add_split_args,
    apply_threads,
    build_splits,
    check_run_dirs,
    command_line,
    config_overrides,
    finite,
    intervals_kwargs,
    machine,
    make_parser,
    non_negative_int,
    positive_int,
    settings_record,
    table,
    train_model,
    train_record,
    write_record,
)
from _ssdir import add_ssdir_args, ssdir_overrides, ssdir_steps  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from ppl_scenes import SPAIR, SSDIR, MultiScaleDigits, SPAIRConfig, SSDIRConfig  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402
from ppl_scenes.metrics import (  # noqa: E402
    evaluate_detection,
    linear_probe,
    matched_codes,
)
from ppl_scenes.rundir import DETECTOR_FILE  # noqa: E402
from ppl_scenes.viz import draw_boxes, show_image  # noqa: E402

NAME = "ssdir_probe"
MODELS = {"ssdir": SSDIR, "spair": SPAIR}
#: Table 2 of the paper (accuracy, precision, recall, F1; means over 3 seeds).
PAPER = {
    "ssdir": {"accuracy": 0.9789, "precision": 0.9787, "recall": 0.9786, "f1": 0.9786},
    "spair": {"accuracy": 0.1919, "precision": 0.1825, "recall": 0.2019, "f1": 0.1803},
}
TARGETS = {"ssdir_accuracy": 0.95, "gap_over_spair": 0.3}
#: SPAIR on 128x128 scenes of 16-64 px digits: a 16-pixel cell (8x8 grid) and boxes up to 48 px,
#: which cover most digits' ink (the paper's SPAIR has "limited object scale variability").
SPAIR_DEFAULTS = {"cell_size": (16, 16), "anchor": (48.0, 48.0)}
PROBE_KEYS = ("accuracy", "precision", "recall", "f1")


def build_parser():
    parser = make_parser(
        __doc__, NAME, num_train=200_000, num_train_help="training scenes (generated batch by batch)"
    )
    add_ssdir_args(parser)
    parser.add_argument(
        "--models", nargs="+", choices=tuple(MODELS), default=list(MODELS), help="models to run"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2], help="training seeds (Table 2: 3)"
    )
    parser.add_argument("--num-test", type=positive_int, default=1000, metavar="N", help="test scenes")
    add_split_args(parser)
    parser.add_argument(
        "--speed-batch", type=positive_int, default=32, metavar="B", help="images per timed inference pass"
    )
    parser.add_argument("--grid-sizes", nargs=2, type=positive_int, default=[2, 4], metavar=("MIN", "MAX"))
    parser.add_argument(
        "--ssdir-set", nargs="*", default=[], metavar="KEY=VALUE", help="SSDIR config overrides"
    )
    parser.add_argument(
        "--detector-from",
        metavar="OUT",
        help="start each SSDIR seed from the trained detector of another run of this script "
        "(OUT/runs/ssdir-seed<k>/detector.safetensors, same backbone settings): what-encoder variants on one "
        "detector. The detector stage is skipped unless --detector-steps is given (then it trains on, "
        "e.g. with a lower rate: --ssdir-set detector_lr_schedule='((0,0.1),)')",
    )
    parser.add_argument(
        "--spair-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help=f"SPAIR config overrides (on top of {SPAIR_DEFAULTS})",
    )
    return parser


def data_kwargs(args) -> dict:
    """The multi-scale generator's settings (the same for training and test scenes)."""
    return {
        "canvas_size": args.canvas_size,
        "grid_size": tuple(args.grid_sizes),
        "min_size": args.digit_sizes[0],
        "max_size": args.digit_sizes[1],
        "root": args.data_root,
        "download": not args.no_download,
    }


def model_overrides(parser, args) -> dict[str, dict]:
    """Each model's config overrides: the scenes' size, the script's SPAIR defaults, then ``--*-set``."""
    ssdir = ssdir_overrides(args, config_overrides(parser, args.ssdir_set, SSDIRConfig()))
    spair = {**SPAIR_DEFAULTS, **config_overrides(parser, args.spair_set, SPAIRConfig())}
    return {"ssdir": ssdir, "spair": spair}


def given_detector(out: str, seed: int):
    """An SSDIR factory whose models start from ``out``'s detector of ``seed`` (``--detector-from``)."""
    run_dir = Path(out) / "runs" / f"ssdir-seed{seed}"
    path = run_dir / DETECTOR_FILE
    if not path.is_file():
        path = run_dir / "detector.pt"  # a run from before safetensors: loaded as tensors only
    if not path.is_file():
        raise SystemExit(f"--detector-from: no trained detector at {run_dir / DETECTOR_FILE}")

    def make(**kwargs):
        model = SSDIR(**kwargs)
        try:
            model.load_detector(path)
        except RuntimeError as err:
            raise SystemExit(f"--detector-from: {path} does not fit this backbone: {err}") from None
        return model

    return make


def probe(model, test_set, seed: int, iou_threshold: float) -> dict:
    """The linear probe on the codes of the detections matched to a digit (see the module docstring)."""
    codes, _, digits = matched_codes(model, test_set, max_scenes=None, iou_threshold=iou_threshold)
    if len(codes) < 8 or len(torch.unique(digits)) < 2:
        return {"n_codes": int(len(codes))}
    result = linear_probe(codes, digits, seed=seed)
    return {**{k: result[k] for k in PROBE_KEYS}, "n_codes": int(len(codes))}


NAMES = ("guide", "parse")


@torch.no_grad()
def throughputs(models: dict, images: torch.Tensor, repeats: int = 15) -> dict:
    """Images per second of each model's guide (the whole inference pass) and of its ``parse``.

    After a warm-up pass of each, the models are timed in turns -- one pass of each per round -- so a
    change in the machine's load touches all of them alike; each figure is the median pass.
    """
    calls = {(kind, name): getattr(model, name) for kind, model in models.items() for name in NAMES}
    for model in models.values():
        model.eval()
    seconds: dict = {key: [] for key in calls}
    for round_ in range(repeats + 1):
        for key, call in calls.items():
            model = models[key[0]]
            if hasattr(model, "_cache"):
                model._cache = None  # time the detector pass too
            start = time.perf_counter()
            call(images)
            if round_:  # the first round warms up
                seconds[key].append(time.perf_counter() - start)
    out: dict = {kind: {"batch": len(images), "repeats": repeats} for kind in models}
    for (kind, name), times in seconds.items():
        out[kind][f"{name}_images_per_second"] = round(len(images) / statistics.median(times), 1)
    return out


def summary(per_seed: list[dict], keys: Sequence[str]) -> dict:
    """Mean and standard deviation over seeds of each key present in every run: ``std`` the population
    one (as recorded before), ``sd`` the sample one (BENCHMARKS.md's protocol; None for one seed)."""
    out = {}
    for key in keys:
        values = [r[key] for r in per_seed if r.get(key) is not None]
        if values and len(values) == len(per_seed):
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
            out[key] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "sd": sd,
                "n": len(values),
            }
    return out


@torch.no_grad()
def plot_examples(models: dict, images: torch.Tensor, path: Path, patches: int = 6) -> Path:
    """Inputs, each model's reconstruction with its boxes, and SSDIR's decoded objects (Fig. 2)."""
    rows = len(images)
    cols = 1 + len(models) + (patches if "ssdir" in models else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r in range(rows):
        show_image(axes[r, 0], images[r])
        axes[0, 0].set_title("input", fontsize=8)
    for c, (name, model) in enumerate(models.items(), start=1):
        parse = model.parse(images.to(model.device))
        for r in range(rows):
            show_image(axes[r, c], parse.reconstruction[r].cpu())
            draw_boxes(axes[r, c], parse.boxes[r].cpu(), color="tab:red")
        axes[0, c].set_title(f"{name.upper()} recon.", fontsize=8)
    if "ssdir" in models:
        ssdir = models["ssdir"]
        det = ssdir.detect(images.to(ssdir.device))
        decoded = ssdir.decoder(det.gather(ssdir.encode(images, det)["what"]))
        for r in range(rows):
            for k in range(patches):
                ax = axes[r, 1 + len(models) + k]
                if k < decoded.shape[1] and det.present[r, k]:
                    show_image(ax, decoded[r, k].cpu())
                else:
                    ax.axis("off")
        axes[0, 1 + len(models)].set_title("SSDIR objects", fontsize=8, loc="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tsne(models: dict, test_set, path: Path, seed: int, max_scenes: int = 300) -> Path:
    """t-SNE of the ``z_what`` of matched detections, coloured by the true digit (Fig. 3)."""
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items()):
        codes, _, digits = matched_codes(model, test_set, max_scenes=max_scenes, iou_threshold=0.0)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(codes) < 5:
            ax.set_title(f"{name.upper()}: too few detections for t-SNE", fontsize=9)
            continue
        perplexity = min(30.0, (len(codes) - 1) / 3)
        emb = TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
            codes.double().numpy()
        )
        ax.scatter(emb[:, 0], emb[:, 1], c=digits.numpy(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{name.upper()}: z_what of detections, t-SNE", fontsize=10)
    fig.colorbar(
        plt.cm.ScalarMappable(plt.Normalize(-0.5, 9.5), "tab10"), ax=axes[0], ticks=range(10), label="digit"
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(args)
    overrides = model_overrides(parser, args)
    if args.detector_from and args.detector_steps is None:
        overrides["ssdir"]["detector_steps"] = 0
    out = Path(args.out)
    runs = {(m, s): out / "runs" / f"{m}-seed{s}" for m in args.models for s in args.seeds}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)
    kwargs = data_kwargs(args)
    data = {
        "name": "multiscale",
        "kwargs": {k: v for k, v in kwargs.items() if k not in ("root", "download")},
    }
    # validation (split "val") and test scenes; each run's training scenes follow its own seed
    splits = build_splits(
        "multiscale", args, kwargs, num_test=args.num_test, test_seed=10_000 + args.seed, train=False
    )
    val_set, test_set = splits.val, splits.test

    steps = {"ssdir": ssdir_steps(args, overrides["ssdir"]), "spair": args.steps}
    per_seed: dict[str, list[dict]] = {m: [] for m in args.models}
    val_per_seed: dict[str, list[dict]] = {m: [] for m in args.models}
    costs, configs, first = {}, {}, {}
    for (kind, seed), run_dir in runs.items():
        train_set = MultiScaleDigits(args.num_train, "train", seed=seed, **kwargs)
        run_args = type(args)(**{**vars(args), "seed": seed, "steps": steps[kind]})
        model_class = MODELS[kind]
        if kind == "ssdir" and args.detector_from:
            model_class = given_detector(args.detector_from, seed)
        model, cost = train_model(
            train_set, run_dir, run_args, data, command, not args.no_progress, model_class, **overrides[kind]
        )
        costs[f"{kind}-seed{seed}"] = cost
        configs[kind] = config_to_dict(model.config)
        progress = not args.no_progress
        for scenes, rows, extra in (
            (val_set, val_per_seed, {}),
            (test_set, per_seed, intervals_kwargs(args)),
        ):
            detection = evaluate_detection(model, scenes, progress=progress, **extra)
            row = {
                "seed": seed,
                **probe(model, scenes, seed, iou_threshold=0.0),
                "iou50": probe(model, scenes, seed, iou_threshold=0.5),
                "ap50": detection["ap50"],
                "count_accuracy": detection["count_accuracy"],
            }
            if "intervals" in detection:
                row["intervals"] = {k: detection["intervals"][k] for k in ("ap50", "count_accuracy")}
            rows[kind].append(finite(row))
        first.setdefault(kind, model)

    speed_images = torch.stack([test_set[i][0] for i in range(min(args.speed_batch, len(test_set)))])
    speed = throughputs(first, speed_images.to(next(iter(first.values())).device))
    results = {m: {"per_seed": rows, **summary(rows, (*PROBE_KEYS, "ap50"))} for m, rows in per_seed.items()}
    validation = {
        m: {"per_seed": rows, **summary(rows, (*PROBE_KEYS, "ap50"))} for m, rows in val_per_seed.items()
    }
    met = {}
    if "ssdir" in results and "accuracy" in results["ssdir"]:
        accuracy = results["ssdir"]["accuracy"]["mean"]
        met["ssdir_accuracy"] = accuracy >= TARGETS["ssdir_accuracy"]
        if "spair" in results and "accuracy" in results["spair"]:
            met["gap_over_spair"] = (
                accuracy - results["spair"]["accuracy"]["mean"] >= TARGETS["gap_over_spair"]
            )
    if set(speed) == {"ssdir", "spair"}:
        key = "guide_images_per_second"
        met["ssdir_faster_than_spair"] = speed["ssdir"][key] > speed["spair"][key]

    figures = {}
    items = [test_set[i] for i in range(min(5, len(test_set)))]
    figures["examples"] = plot_examples(first, torch.stack([im for im, _ in items]), out / "examples.png")
    figures["tsne"] = plot_tsne(first, test_set, out / "tsne.png", args.seed)
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": {m: train_record(args, MODELS[m]) for m in args.models},
        "models": configs,
        "data": data,
        "cost": costs,
        "results": results,
        "validation": validation,
        "splits": {
            "train": {"split": "train", "seeds": list(args.seeds), "scenes": args.num_train},
            **splits.record,
        },
        "digit_source": splits.source,
        "throughput": speed,
        "paper": PAPER,
        "targets": TARGETS,
        "targets_met": met,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [
        {"run": f"{m}-seed{r['seed']}", **r, "steps": costs[f"{m}-seed{r['seed']}"]["steps"]}
        for m, rs in per_seed.items()
        for r in rs
    ]
    columns = {
        "run": "run",
        "accuracy": "probe acc.",
        "f1": "F1",
        "n_codes": "codes",
        "ap50": "AP@.5",
        "steps": "steps",
    }
    print(table(rows, columns))
    print(json.dumps({"throughput": speed, "met": met}))
    return record


if __name__ == "__main__":
    main()
