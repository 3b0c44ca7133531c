"""Variational saccading §4.1.1, Fig. 4: accuracy vs proxy noise, and learned vs fixed posterior variance.

The saccade model is trained on the two-digit cluttered identification task (100x100, as in
``saccade_cluttered.py``) with Gaussian noise of sigma ``--noise-levels`` added to its 32x32 proxy
(``SaccadeConfig.proxy_noise``, clipped to [0, 1]; fresh noise in training, seeded in evaluation), one
run per level, all with the learned posterior variance. Then, at the noisiest level, the same model
with the posterior's sigma fixed to each of ``--fixed-scales`` (``learn_posterior_scale=False``)
against the learned one: the paper's claim is that the learned variance explores better and
converges faster.

Writes under ``--out`` (default ``benchmarks/saccade_noisy_proxy``):

* ``saccade_noisy_proxy.json`` -- settings, machine, per run its steps, seconds and test accuracy and
  its curve of validation accuracy (``--curve-scenes`` scenes every ``--eval-every`` steps);
* ``proxies.png`` -- test scenes and their proxies at every noise level (Fig. 4 bottom left);
* ``accuracy_vs_noise.png`` and ``learned_vs_fixed.png`` -- the validation curves (Fig. 4 top left, right);
* ``runs/<run>/`` -- the training runs (``noise-<sigma>`` and ``fixed-<sigma>``).

Reproduce the recorded numbers (CPU; runs may train in separate processes, each with its own flags,
then one call with every flag and ``--resume`` evaluates them all and writes the record)::

    PPL_SCENES_DATA=/path/to/data python experiments/saccade_noisy_proxy.py --minutes 15 --threads 1
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    check_run_dirs,
    command_line,
    finite,
    intervals_kwargs,
    machine,
    make_parser,
    settings_record,
    table,
    train_model,
    train_record,
    write_record,
)
from _saccade import add_saccade_args, cluttered_scenes, curve_fit_kwargs, example_scenes, parse_saccade_args  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ppl_scenes import VariationalSaccading  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402
from ppl_scenes.runs import read_metrics  # noqa: E402
from ppl_scenes.viz import show_image  # noqa: E402

NAME = "saccade_noisy_proxy"


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=20_000, num_train_help="training scenes")
    add_saccade_args(parser)
    parser.add_argument(
        "--noise-levels",
        nargs="+",
        type=float,
        default=[0.0, 0.25, 0.5, 1.0],
        metavar="SIGMA",
        help="sigmas of the proxy's noise, one run each (learned posterior variance)",
    )
    parser.add_argument(
        "--fixed-scales",
        nargs="*",
        type=float,
        default=[0.6, 1.2, 2.0],
        metavar="SIGMA",
        help="fixed posterior sigmas compared with the learned one at the noisiest level",
    )
    return parser


def run_settings(args) -> dict[str, dict]:
    """Each run's name and its config overrides (before ``--set``)."""
    for value in (*args.noise_levels, *args.fixed_scales):
        if not 0 <= value < float("inf"):
            raise SystemExit(f"noise levels and scales must be finite and >= 0, got {value}")
    runs = {f"noise-{s:g}": {"proxy_noise": s} for s in sorted(set(args.noise_levels))}
    noisiest = max(args.noise_levels)
    for scale in sorted(set(args.fixed_scales)):
        runs[f"fixed-{scale:g}"] = {
            "proxy_noise": noisiest,
            "learn_posterior_scale": False,
            "posterior_scale": scale,
        }
    return runs


def curve(run_dir: Path) -> dict[str, list]:
    """The logged test accuracy over steps."""
    points = [(r["step"], r["eval/accuracy"]) for r in read_metrics(run_dir) if "eval/accuracy" in r]
    return {"step": [p[0] for p in points], "accuracy": [p[1] for p in points]}


def plot_run_curves(curves: dict[str, dict], names: Sequence[str], title: str, path: Path) -> Path:
    """Test accuracy against steps, one line per run."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for name in names:
        ax.plot(curves[name]["step"], curves[name]["accuracy"], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("test identification accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def plot_proxies(models: dict[str, VariationalSaccading], images, path: Path) -> Path:
    """Fig. 4 (bottom left): the scenes (top row) and the proxies each noise level gives them."""
    fig = Figure(figsize=(1.6 * len(images), 1.6 * (len(models) + 1)), layout="constrained")
    axes = np.asarray(fig.subplots(len(models) + 1, len(images), squeeze=False))
    for j, image in enumerate(images):
        show_image(axes[0, j], image)
    axes[0, 0].set_ylabel("scene", fontsize=8)
    for i, (name, model) in enumerate(models.items(), start=1):
        with model.evaluating():
            proxies = model.make_proxy(images.to(model.device)).cpu()
        for j in range(len(images)):
            show_image(axes[i, j], proxies[j])
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args, overrides = parse_saccade_args(parser, argv)
    settings = run_settings(args)
    out = Path(args.out)
    runs = {name: out / "runs" / name for name in settings}
    check_run_dirs(parser, list(runs.values()), args.resume)
    command = command_line(NAME, argv)
    splits, data = cluttered_scenes(args)
    train_set, test_set = splits.train, splits.test

    results, validation, costs, configs, curves, models = {}, {}, {}, {}, {}, {}
    for name, run_dir in runs.items():
        model, costs[name] = train_model(
            train_set,
            run_dir,
            args,
            data,
            command,
            not args.no_progress,
            model_class=VariationalSaccading,
            fit_kwargs=curve_fit_kwargs(args, splits.val),
            task="identify",
            **{**settings[name], **overrides},
        )
        progress = not args.no_progress
        validation[name] = finite(model.evaluate(splits.val, progress=progress))
        results[name] = finite(model.evaluate(test_set, progress=progress, **intervals_kwargs(args)))
        configs[name] = config_to_dict(model.config)
        curves[name] = curve(run_dir)
        models[name] = model

    noise_runs = [n for n in settings if n.startswith("noise-")]
    noisiest = f"noise-{max(args.noise_levels):g}"
    fixed_runs = [n for n in settings if n.startswith("fixed-")]
    images, _ = example_scenes(test_set)
    figures = {"proxies": plot_proxies({n: models[n] for n in noise_runs}, images, out / "proxies.png")}
    if args.eval_every:
        figures["accuracy_vs_noise"] = plot_run_curves(
            curves, noise_runs, "learned posterior variance, by proxy noise", out / "accuracy_vs_noise.png"
        )
        if fixed_runs:
            figures["learned_vs_fixed"] = plot_run_curves(
                curves,
                [noisiest, *fixed_runs],
                f"proxy noise {max(args.noise_levels):g}: learned vs fixed posterior sigma",
                out / "learned_vs_fixed.png",
            )
    record = {
        "experiment": NAME,
        "command": command,
        "settings": settings_record(args),
        "machine": machine(),
        "train": train_record(args, VariationalSaccading),
        "models": configs,
        "data": data,
        "splits": splits.record,
        "digit_source": splits.source,
        "cost": costs,
        "results": results,
        "validation": validation,
        "curves": curves,
        "learned_run_at_noisiest": noisiest,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [{"run": k, **r, **costs[k]} for k, r in results.items()]
    print(table(rows, {"run": "run", "accuracy": "accuracy", "steps": "steps", "train_seconds": "seconds"}))
    print(json.dumps({name: r["accuracy"] for name, r in results.items()}))
    return record


if __name__ == "__main__":
    main()
