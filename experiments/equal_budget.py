"""Equal budgets for baselines (BENCHMARKS.md protocol, rule 4; issue 34): a shipped model and the
baselines trained for its budget, scored on the same scenes.

Each baseline is a finished run directory (trained by any script or ``ppl-scenes train``). The
shipped model (:func:`ppl_scenes.pretrained`) and every baseline are scored on the card's own
validation and test scenes (the card's splits and seeds, :func:`ppl_scenes.pretrained_info`), the
same way as the card: SSDIR's task by the linear probe of the matched ``z_what`` codes
(:func:`pretrained.probe_scores`, interval over the held-out codes), the others by
:func:`~ppl_scenes.metrics.evaluate_detection` with a bootstrap interval over the test scenes.

``--gmm LABEL=RUN_DIR`` makes a baseline of SPAIR + GMM (GMAIR §4.3): a Gaussian mixture with the
card's number of clusters fitted to the run's ``z_what`` codes of ``--gmm-scenes`` training scenes
of the card's generator (:class:`ppl_scenes.baselines.WhatGMM`); its fitting time is recorded beside
the run's training minutes. Nothing is chosen here: every model is its run's last weights.

Writes ``OUT/<card>.json`` (default ``benchmarks/equal_budget``): the command, machine, the card's
budget and each baseline's (steps, minutes, the command that trained it), validation and test
scores with intervals, and the splits::

    PPL_SCENES_DATA=/path/to/data python experiments/equal_budget.py ssdir \\
        --run "SPAIR, SSDIR's budget=benchmarks/ssdir_probe_equal/runs/spair-seed0"
    PPL_SCENES_DATA=/path/to/data python experiments/equal_budget.py gmair \\
        --run "GMAIR, 35 min=benchmarks/gmair_clustering_equal/runs/gmair" \\
        --gmm "SPAIR + GMM, 35 min=benchmarks/gmair_clustering_equal/runs/spair"
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import command_line, digit_source, finite, logged_progress, machine, run_scenes, write_record
from pretrained import probe_scores

from ppl_scenes import pretrained, pretrained_info
from ppl_scenes.baselines import WhatGMM
from ppl_scenes.metrics import evaluate_detection
from ppl_scenes.runs import RunSpec, load

NAME = "equal_budget"
#: The cards this applies to: the models whose issues compare them with a baseline.
CARDS = ("gmair", "ssdir", "spair")


def labelled_run(text: str) -> tuple[str, Path]:
    """``LABEL=RUN_DIR`` as ``(label, path)``; argparse's type for ``--run`` and ``--gmm``."""
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR, got {text!r}")
    run_dir = Path(path.strip())
    if not (run_dir / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{run_dir} is not a run directory (no config.json)")
    return label.strip(), run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", choices=CARDS, help="the shipped model the baselines are set beside")
    parser.add_argument(
        "--run",
        type=labelled_run,
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="a baseline run",
    )
    parser.add_argument(
        "--gmm",
        type=labelled_run,
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="a SPAIR run made SPAIR + GMM (a mixture fitted to its codes)",
    )
    parser.add_argument("--gmm-scenes", type=int, default=2000, help="training scenes the GMM is fitted on")
    parser.add_argument(
        "--gmm-components", type=int, help="mixture components (default: the card's num_clusters, else 10)"
    )
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples (500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="record folder")
    return parser


def score(card: str, model, scenes, resamples: int) -> dict:
    """The card's scores of ``model`` on ``scenes`` (floats), with ``intervals`` when ``resamples``."""
    if card == "ssdir":
        scores = probe_scores(model, scenes, resamples)
    else:
        scores = evaluate_detection(model, scenes, intervals=resamples)
    intervals = scores.get("intervals", {})
    return {
        "scores": {k: v for k, v in scores.items() if isinstance(v, float)},
        "intervals": intervals,
    }


def run_budget(run_dir: Path) -> dict:
    """Steps, training minutes (the run's own clock), seed and the command that started a finished run
    (``later_commands``: those that resumed it)."""
    config = json.loads((run_dir / "config.json").read_text())
    steps, minutes = logged_progress(run_dir)
    # a resumed run keeps its earlier settings in its history: the first command is the one that trained
    commands = [h.get("command") for h in config.get("history", [])] + [config.get("command")]
    return {
        "run_dir": str(run_dir),
        "model": config["model"],
        "seed": config.get("seed"),
        "steps": steps,
        "train_minutes": minutes,
        "command": commands[0],
        "later_commands": commands[1:],
        "torch_threads": config.get("torch_threads"),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.run and not args.gmm:
        parser.error("give at least one baseline (--run or --gmm)")
    torch.set_num_threads(args.threads)
    card = pretrained_info(args.card)
    spec = RunSpec.from_card(card)
    val, test = card["splits"]["validation"], card["splits"]["test"]
    val_scenes = run_scenes(spec, "val", val["scenes"], val["seed"])
    test_scenes = run_scenes(spec, "test", test["scenes"], test["seed"])

    models = {f"shipped `{args.card}`": (pretrained(args.card), None)}
    for label, run_dir in args.run:
        models[label] = (load(run_dir), run_budget(run_dir))
    for label, run_dir in args.gmm:
        budget = run_budget(run_dir)
        started = time.perf_counter()
        num_clusters = args.gmm_components or card["model_config"].get("num_clusters", 10)
        baseline = WhatGMM(load(run_dir), num_components=num_clusters, seed=budget["seed"] or 0)
        baseline.fit(spec.build_dataset("train", args.gmm_scenes))
        budget["gmm_fit_minutes"] = (time.perf_counter() - started) / 60
        budget["gmm"] = {"components": num_clusters, "training_scenes": args.gmm_scenes}
        models[label] = (baseline, budget)

    rows = {}
    for label, (model, budget) in models.items():
        validation = score(args.card, model, val_scenes, 0)["scores"]
        scored = score(args.card, model, test_scenes, args.resamples)
        rows[label] = {
            "budget": budget
            or {"steps": card["steps"], "train_minutes": card["cpu_minutes"], "command": card["command"]},
            "validation": validation,
            "test": scored["scores"],
            "test_intervals": scored["intervals"],
        }
        keys = [k for k in card["targets"] if k in scored["scores"]] or sorted(scored["scores"])[:3]
        print(f"{label}: " + ", ".join(f"{k} {scored['scores'][k]:.4f}" for k in keys))
    record = {
        "experiment": NAME,
        "card": args.card,
        "command": command_line(NAME, argv),
        "machine": machine(),
        "card_budget": {
            "steps": card["steps"],
            "cpu_minutes": card["cpu_minutes"],
            "command": card["command"],
        },
        "targets": card["targets"],
        "splits": card["splits"],
        "digit_source": digit_source(val_scenes, test_scenes),
        "models": finite(rows),
    }
    write_record(Path(args.out) / f"{args.card}.json", record)
    return record


if __name__ == "__main__":
    main()
