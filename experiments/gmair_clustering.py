"""GMAIR §4.3 / Table 2, Figs. 2-4: locate and cluster digits at once, against SPAIR + GMM.

GMAIR and SPAIR are trained with the same seed and budget on MultiMNIST scenes (default: the CPU-scale
variant, 64x64 canvases with 1-5 digits of 20 pixels; the paper's setting is ``--canvas-size 128
--digit-size 28 --digits 1 10``). Both see the scenes through the same cell grid and anchor and are
scored the same way (GMAIR Appendix B.3/C): the guide's modes, boxes tightened to the decoded glimpse,
AP at IoU 0.5, and clustering accuracy (Hungarian matching) and NMI over the detections that hit a true
digit at IoU > 0.5. GMAIR's clusters are the modes of its ``z_cat``; the baseline's come from a
10-component Gaussian mixture (scikit-learn) fitted afterwards on SPAIR's ``z_what`` of the objects it
finds in ``--gmm-scenes`` training scenes (:class:`ppl_scenes.baselines.WhatGMM`).

Writes under ``--out`` (default ``benchmarks/gmair_clustering``):

* ``gmair_clustering.json`` -- settings, machine, steps and seconds, the metrics of GMAIR and
  SPAIR + GMM, the targets and whether they are met, and the training curves;
* ``curves.png`` -- AP@0.5, ACC and NMI on ``--curve-scenes`` validation scenes during training (Fig. 2a);
* ``tsne.png`` -- t-SNE of the ``z_what`` of matched detections coloured by the true digit, GMAIR's
  component means ``mu_k`` marked, SPAIR's codes alongside (Fig. 2b-d);
* ``generated.png`` -- objects decoded from ``z_avg = mu_k`` and from ``mu_k + sigma_k z_local`` (Fig. 3);
* ``edits.png`` -- test scenes re-rendered with swapped categories, new styles and swapped positions
  (Fig. 4);
* ``examples.png`` -- GMAIR's parses, each box labelled with its cluster;
* ``clusters.png`` -- digit-by-cluster counts of the matched test detections, GMAIR and SPAIR + GMM
  (which digits a clustering merges or splits);
* ``runs/gmair/``, ``runs/spair/`` -- the training runs.

Reproduce the recorded numbers (CPU; the two models may train in two processes, then a third call
with ``--resume`` only evaluates)::

    PPL_SCENES_DATA=/path/to/data python experiments/gmair_clustering.py --minutes 35 --no-progress
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import (  # noqa: E402
    add_split_args,
    apply_threads,
    build_splits,
    check_run_dirs,
    command_line,
    config_overrides,
    finite,
    first_scenes,
    intervals_kwargs,
    machine,
    make_parser,
    non_negative_int,
    positive_int,
    settings_record,
    table,
    train_model,
    train_record,
    write_eval,
    write_record,
)
from sklearn.manifold import TSNE  # noqa: E402

from ppl_scenes import GMAIR, SPAIR, GMAIRConfig  # noqa: E402
from ppl_scenes.baselines import WhatGMM  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402
from ppl_scenes.metrics import (  # noqa: E402
    cluster_class_map,
    evaluate_detection,
    matched_codes,
)
from ppl_scenes.runs import RunDir, read_metrics  # noqa: E402
from ppl_scenes.viz import draw_boxes, plot_contingency, plot_scenes  # noqa: E402

NAME = "gmair_clustering"
#: The issue's CPU-scale bar (the paper: AP 97.3, ACC 80.4, NMI 75.5; SPAIR + GMM 90.3 / 59.4 / 56.3).
TARGETS = {"ap50": 0.95, "acc": 0.75, "nmi": 0.70, "acc_gain": 0.10, "nmi_gain": 0.10}
METRICS = {
    "ap50": "AP@.5",
    "acc": "ACC",
    "acc_majority": "ACC (Eq. 16)",
    "nmi": "NMI",
    "count_accuracy": "count acc",
    "num_clustered": "clustered",
}
MODELS = ("gmair", "spair")


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=10_000)
    parser.add_argument("--canvas-size", type=positive_int, default=64, help="scene side in pixels")
    parser.add_argument("--digit-size", type=positive_int, default=20, help="digit side in pixels")
    parser.add_argument(
        "--digits", type=positive_int, nargs=2, default=(1, 5), metavar=("LO", "HI"), help="digits per scene"
    )
    parser.add_argument("--num-test", type=positive_int, default=1000, help="test scenes")
    parser.add_argument(
        "--gmm-scenes", type=positive_int, default=2000, help="training scenes whose SPAIR codes fit the GMM"
    )
    parser.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=500,
        help="steps between the curves' evaluations (0: none)",
    )
    parser.add_argument(
        "--curve-scenes", type=positive_int, default=200, help="validation scenes per curve point"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="train only these (then evaluate all)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="GMAIR config overrides for a variant (e.g. what_sees_cat=false); SPAIR is left as it is",
    )
    add_split_args(parser)
    return parser


def gmair_overrides(parser, items: Sequence[str]) -> dict:
    """``--set`` items as typed, validated :class:`~ppl_scenes.models.GMAIRConfig` fields."""
    return config_overrides(parser, items, GMAIRConfig())


def geometry(args) -> dict:
    """Cell grid, anchor and glimpse sizes for the scenes (GMAIR's defaults, scaled with the digits)."""
    scale = args.digit_size / 20
    cell = 16 if args.canvas_size % 16 == 0 else 12
    return {
        "cell_size": (cell, cell),
        "anchor": (round(24 * scale, 1),) * 2,
        "object_size": (args.digit_size, args.digit_size),
        "glimpse_size": (16, 16),
        "tight_boxes": True,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the experiment; returns the JSON record it writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    variant = gmair_overrides(parser, args.set)
    apply_threads(args)
    out = Path(args.out)
    runs = {name: out / "runs" / name for name in MODELS}
    check_run_dirs(parser, [runs[m] for m in args.models], args.resume)
    progress = not args.no_progress
    data_kwargs = {
        "canvas_size": args.canvas_size,
        "digit_size": args.digit_size,
        "num_digits": list(args.digits),
        "root": args.data_root,
        "download": not args.no_download,
    }
    splits = build_splits(
        "multimnist",
        args,
        data_kwargs,
        train_kwargs={"num_scenes": args.num_train},
        num_test=args.num_test,
        test_seed=args.seed + 1,
    )
    train_set, val_set, test_set = splits.train, splits.val, splits.test
    curve_set = first_scenes(val_set, args.curve_scenes)  # curves on validation scenes, never test
    data = {
        "name": "multimnist",
        "kwargs": {k: v for k, v in data_kwargs.items() if k not in ("root", "download")},
    }
    command = command_line(NAME, argv)
    geo = geometry(args)
    fit_kwargs = {}
    if args.eval_every:
        fit_kwargs = {"eval_fn": lambda m: evaluate_detection(m, curve_set), "eval_every": args.eval_every}
    models, costs = {}, {}
    for name, cls in (("gmair", GMAIR), ("spair", SPAIR)):
        if name in args.models or RunDir(runs[name]).has_checkpoint():
            resume_args = args if name in args.models else _resume_only(args)
            overrides = {**geo, **variant} if name == "gmair" else geo
            models[name], costs[name] = train_model(
                train_set, runs[name], resume_args, data, command, progress, cls, fit_kwargs, **overrides
            )
    if set(models) != set(MODELS):
        print(f"trained {', '.join(args.models)}; run again with --resume once every model is trained")
        return {}
    gmair, spair = models["gmair"], models["spair"]
    baseline = WhatGMM(spair, num_components=gmair.config.num_clusters, seed=args.seed)
    baseline.fit(first_scenes(train_set, args.gmm_scenes), progress=progress)
    scored = {"gmair": gmair, "spair_gmm": baseline}
    validation = {k: evaluate_detection(m, val_set, progress=progress) for k, m in scored.items()}
    results = {
        k: evaluate_detection(m, test_set, progress=progress, **intervals_kwargs(args))
        for k, m in scored.items()
    }
    write_eval(runs["gmair"], costs["gmair"]["steps"], results["gmair"])
    write_eval(runs["spair"], costs["spair"]["steps"], evaluate_detection(spair, test_set))
    g, b = results["gmair"], results["spair_gmm"]
    met = {
        "ap50": g["ap50"] >= TARGETS["ap50"],
        "acc": g["acc"] >= TARGETS["acc"],
        "nmi": g["nmi"] >= TARGETS["nmi"],
        "acc_gain": g["acc"] - b["acc"] >= TARGETS["acc_gain"],
        "nmi_gain": g["nmi"] - b["nmi"] >= TARGETS["nmi_gain"],
    }
    curves = {name: [r for r in read_metrics(runs[name]) if "eval/ap50" in r] for name in MODELS}
    # One parse of the test scenes per model serves every figure of matched detections; the
    # baseline's codes are SPAIR's, its labels the mixture's.
    matched = {"GMAIR": matched_codes(gmair, test_set, max_scenes=None)}
    matched["SPAIR + GMM"] = matched_codes(baseline, test_set, max_scenes=None)
    figures = {
        "curves": plot_training_curves(curves, out / "curves.png"),
        "tsne": plot_tsne(
            {
                "GMAIR": (matched["GMAIR"], gmair.what_priors.loc.detach().cpu()),
                "SPAIR": (matched["SPAIR + GMM"], None),
            },
            out / "tsne.png",
            args.seed,
        ),
        "generated": plot_generated(gmair, matched["GMAIR"], out / "generated.png", args.seed),
        "edits": plot_edits(gmair, test_set, out / "edits.png", args.seed),
        "examples": plot_examples(gmair, test_set, out / "examples.png"),
        "clusters": plot_clusters(matched, out / "clusters.png"),
    }
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(args),
        "models": {name: {"config": config_to_dict(m.config)} for name, m in models.items()},
        "data": data["kwargs"],
        "cost": costs,
        "results": finite(results),
        "validation": finite(validation),
        "splits": splits.record,
        "digit_source": splits.source,
        "targets": TARGETS,
        "met": met,
        "curves": finite(
            {
                k: [{kk: r.get(kk) for kk in ("step", "eval/ap50", "eval/acc", "eval/nmi")} for r in v]
                for k, v in curves.items()
            }
        ),
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [{"model": "GMAIR", **g}, {"model": "SPAIR + GMM", **b}]
    print(table(rows, {"model": "model", **METRICS}))
    print(json.dumps({"met": met}))
    return record


def _resume_only(args):
    """``args`` for a run trained by another process: resume it (nothing left to train), don't train anew."""
    copy = type(args)(**vars(args))
    copy.resume = True
    return copy


# -- figures ---------------------------------------------------------------------------------------
def plot_training_curves(curves: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key, title in zip(axes, ("eval/ap50", "eval/acc", "eval/nmi"), ("AP@0.5", "ACC", "NMI")):
        for name, records in curves.items():
            pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name.upper())
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_tsne(panels: dict, path: Path, seed: int, max_points: int = 1500) -> Path:
    """t-SNE of matched detections' ``z_what`` (``max_points`` per panel at most), coloured by digit.

    ``panels``: title -> (``matched_codes`` output, mixture means to mark or None).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (name, ((codes, _, digits), means)) in zip(axes[0], panels.items()):
        keep = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))[:max_points]
        codes, digits = codes[keep], digits[keep]
        points = codes if means is None else torch.cat((codes, means))
        if len(codes) < 5:
            ax.set_title(f"{name}: too few matched detections for t-SNE")
            continue
        perplexity = min(30.0, (len(points) - 1) / 3)
        emb = TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
            points.double().numpy()
        )
        ax.scatter(
            emb[: len(codes), 0],
            emb[: len(codes), 1],
            c=digits.numpy(),
            cmap="tab10",
            s=4,
            vmin=-0.5,
            vmax=9.5,
        )
        if means is not None:
            mu = emb[len(codes) :]
            ax.scatter(mu[:, 0], mu[:, 1], marker="*", s=200, c="k", edgecolors="w")
            for k, (u, v) in enumerate(mu):
                ax.annotate(str(k), (u, v), fontsize=8, color="k", xytext=(4, 4), textcoords="offset points")
        ax.set_title(f"{name}: z_what of matched detections, t-SNE", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(
        plt.cm.ScalarMappable(plt.Normalize(-0.5, 9.5), "tab10"), ax=axes, ticks=range(10), label="true digit"
    )
    return _save(fig, path)


def plot_clusters(matched: dict, path: Path) -> Path:
    """Digit-by-cluster counts of each model's matched detections (``ppl_scenes.viz.plot_contingency``)."""
    labelings = {name: (labels, digits) for name, (_, labels, digits) in matched.items() if len(labels)}
    if labelings:
        fig = plot_contingency(labelings, class_name="true digit")
    else:
        fig = plt.figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no detection matched a true digit", ha="center", va="center")
    missing = sorted(set(matched) - set(labelings))
    if missing and labelings:
        fig.suptitle(f"no detection matched a true digit: {', '.join(missing)}", fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def plot_generated(gmair: GMAIR, matched: tuple, path: Path, seed: int, styles: int = 7) -> Path:
    """Objects decoded from each cluster's mean and styles around it, rows labelled with the matched digit."""
    k = gmair.config.num_clusters
    _, labels, digits = matched
    meaning = cluster_class_map(labels, digits) if len(labels) else {}
    order = sorted(range(k), key=lambda c: meaning.get(c, 10))
    g = torch.Generator().manual_seed(seed)
    z_local = torch.cat(
        (torch.zeros(1, gmair.config.what_dim), torch.randn(styles, gmair.config.what_dim, generator=g))
    )
    fig, axes = plt.subplots(k, styles + 1, figsize=(1.1 * (styles + 1), 1.1 * k))
    for row, cluster in enumerate(order):
        z_cat = F.one_hot(torch.full((styles + 1,), cluster), k).float()
        appearance, alpha = gmair.generate_objects(z_cat, z_local)
        for col in range(styles + 1):
            ax = axes[row, col]
            ax.imshow((appearance[col] * alpha[col]).cpu().mean(0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"k={cluster}\n({meaning.get(cluster, '?')})", fontsize=7)
    axes[0, 0].set_title("z_avg", fontsize=8)
    for col in range(1, styles + 1):
        axes[0, col].set_title("+ z_local", fontsize=8)
    fig.suptitle("objects generated from each cluster (row: cluster k, its matched digit)", fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def plot_edits(gmair: GMAIR, dataset, path: Path, seed: int, scenes: int = 4) -> Path:
    scenes = min(scenes, len(dataset))
    x = torch.stack([dataset[i][0] for i in range(scenes)]).to(gmair.device)
    size = tuple(x.shape[-2:])
    lat = gmair.posterior_modes(x)
    local = gmair.local_codes(lat.what, lat.cat)
    g = torch.Generator().manual_seed(seed)
    shifted = torch.roll(lat.cat, 1, dims=-1)  # every object to another cluster, style kept
    new_style = torch.randn(local.shape, generator=g).to(local)
    present = lat.pres > 0.5
    swapped_what = lat.what.clone()
    for i in range(scenes):  # objects trade appearances: positions swap
        idx = present[i].nonzero().flatten()
        swapped_what[i, idx] = lat.what[i, idx.roll(1)]
    rows = {
        "input": x,
        "reconstruction": gmair.render(lat.pres, lat.where, lat.depth, lat.what, size),
        "categories k -> k+1": gmair.render(
            lat.pres, lat.where, lat.depth, gmair.compose_what(shifted, local), size
        ),
        "new styles": gmair.render(
            lat.pres, lat.where, lat.depth, gmair.compose_what(lat.cat, new_style), size
        ),
        "positions swapped": gmair.render(lat.pres, lat.where, lat.depth, swapped_what, size),
    }
    fig, axes = plt.subplots(len(rows), scenes, figsize=(2 * scenes, 2 * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows.items()):
        for i in range(scenes):
            ax = axes[r, i]
            ax.imshow(imgs[i].cpu().mean(0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=8)
    return _save(fig, path)


@torch.no_grad()
def plot_examples(gmair: GMAIR, dataset, path: Path, n: int = 8) -> Path:
    n = min(n, len(dataset))
    items = [dataset[i] for i in range(n)]
    x = torch.stack([im for im, _ in items]).to(gmair.device)
    parse = gmair.parse(x)
    fig = plot_scenes(
        x.cpu(),
        pred_boxes=[b.cpu() for b in parse.boxes],
        gt_boxes=[t["boxes"] for _, t in items],
        reconstructions=parse.reconstruction.cpu(),
        titles=[f"{len(t['boxes'])} digits, found {len(b)}" for (_, t), b in zip(items, parse.boxes)],
    )
    for ax, boxes, labels in zip(fig.axes[:n], parse.boxes, parse.labels):
        draw_boxes(ax, boxes.cpu(), labels=[f"k{int(v)}" for v in labels], linewidth=0)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
