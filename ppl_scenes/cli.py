"""The ``ppl-scenes`` command line: ``train``, ``eval``, ``parse``, ``sample``, ``demo``, ``presets``
and ``upgrade``.

::

    ppl-scenes train MODEL --out RUN_DIR [--preset NAME] [--steps N] [--minutes M] [--dataset NAME] [--seed S]
                     [--device cpu|cuda] [--resume] [--data-root DIR] [--num-train N] [--num-test N]
                     [--nproc N] [--no-progress] [KEY=VALUE ...]
    ppl-scenes train MODEL --images PATH [PATH ...] --out RUN_DIR [--object-size PX] [--crop PX]
                     [--no-flips] [--channels 1|3] [--val-images PATH ...] [--skip-bad] [...] [KEY=VALUE ...]
    ppl-scenes eval RUN_DIR [--dataset NAME] [--num-test N] [--data-root DIR] [--json]
    ppl-scenes eval --pretrained NAME [--dataset NAME] [--num-test N] [--seed S] [--json]
    ppl-scenes eval RUN_DIR --images PATH [PATH ...] --annotations COCO.json [--threshold T] [--json]
    ppl-scenes parse RUN_DIR PATH [PATH ...] --out DETECTIONS.json [--figures DIR] [--codes FILE.npz]
                     [--csv FILE] [--threshold T] [--batch-size B] [--device D] [--tile PX] [--skip-bad]
    ppl-scenes parse --pretrained NAME PATH [PATH ...] --out DETECTIONS.json [...]
    ppl-scenes sample RUN_DIR | --pretrained NAME [--num-samples N] [--out FILE] [--dataset NAME]
    ppl-scenes demo [--out DIR] [--minutes M] [--steps N] [--data-root DIR] [--no-progress]
    ppl-scenes presets [MODEL]
    ppl-scenes upgrade RUN_DIR [RUN_DIR ...]

Overrides of ``train``: ``KEY=VALUE`` sets a field of the model's config dataclass (e.g.
``what_dim=32``, ``cell_size=12,12``), ``train.KEY=VALUE`` a field of
:class:`~ppl_scenes.infer.trainer.TrainConfig` (e.g. ``train.batch_size=16``) and ``data.KEY=VALUE``
an argument of the dataset generator (e.g. ``data.num_scenes=2000``, ``data.num_digits=1,5``).

``--preset NAME`` starts from the model's named recipe (``ppl-scenes presets`` lists them); explicit
flags and overrides win over the preset's, and the command says which it replaced. ``--pretrained
NAME`` uses a model shipped in the package (:mod:`ppl_scenes.zoo`) where a run directory would go.

The run directory records the model, its config, the training settings and the data (generator
name and arguments) in ``config.json``, so ``eval`` and ``sample`` rebuild everything from it.

``train --minutes M`` trains for M minutes (in all, resumes included) however many steps that takes;
``--steps N`` (or ``train.steps=N``) beside it stops the run at N steps if they come first. The
summary says which limit ended the run (``stop_reason`` in the last ``metrics.jsonl`` record and in
``eval.json``). A two-stage model (SSDIR) shares the minutes between its stages in proportion to
their steps (:mod:`ppl_scenes.infer.two_stage`).

``train --nproc N`` (N > 1) trains data-parallel on N processes: it runs the same command line,
without ``--nproc``, under ``python -m torch.distributed.run --standalone --nproc-per-node N``
(:mod:`ppl_scenes.infer.distributed`) and exits with torchrun's status.

Your own images (README, "Your own images"): ``train --images`` trains on crops of image files and
scores held-out crops by their ELBO and counts; ``parse`` writes COCO detections; ``eval --images``
scores against COCO labels into ``RUN_DIR/eval-images.json``.

Bad input never ends in a traceback: the command prints ``ppl-scenes: error: <message>`` to stderr and
exits with status 2 (1 when training diverged). ``--json`` keeps stdout for the JSON object alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppl_scenes import files
from ppl_scenes._version import __version__
from ppl_scenes.figures import posterior_figure, posterior_sample_figures, prior_figure
from ppl_scenes.infer import TrainingDiverged, TrainingInterrupted
from ppl_scenes.models import MODELS
from ppl_scenes.rundir import upgrade
from ppl_scenes.runs import (
    DEFAULT_NUM_TEST,
    EVAL_FILE,
    IMAGES_DATASET,
    METRICS_FILE,
    RunDirError,
    RunSpec,
    TrainedRun,
    evaluate_scenes,
    load,
    read_config,
    read_metrics,
    strict_json,
    write_json,
)
from ppl_scenes.viz import plot_curves
from ppl_scenes.zoo import pretrained, pretrained_info, pretrained_names

__all__ = [
    "fraction",
    "main",
    "non_negative_int",
    "positive_float",
    "positive_int",
]

PROG = "ppl-scenes"
#: Default wall-clock budget of ``ppl-scenes demo``, in minutes.
DEMO_MINUTES = 5.0
DEMO_MODEL = "spair"
DEMO_PRESET = "scattered-5"
#: Where ``eval --images`` writes its scores, in the run directory.
EVAL_IMAGES_FILE = "eval-images.json"
#: ``train``'s options of image files (:meth:`RunSpec.for_images`' arguments, but for two names).
_IMAGE_FLAGS = ("object_size", "crop", "no_flips", "channels", "val_images", "skip_bad")
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class CLIError(ValueError):
    """Bad command-line input (reported without a traceback, exit status 2)."""


# -- helpers -------------------------------------------------------------------------------------
def _info(*args: Any) -> None:
    """Progress and status lines: stderr, so that stdout stays clean for results."""
    print(*args, file=sys.stderr, flush=True)


def _number_type(kind: type, accept, expected: str):
    """An argparse ``type``: parse ``kind`` and accept it only where ``accept(value)`` holds."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = expected.replace(" ", "_")
    return parse


#: argparse types shared by the CLI and the experiment scripts.
positive_int = _number_type(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number_type(float, lambda v: v > 0, "a positive number")
fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _say(line: str) -> None:
    _info(f"{PROG}: {line}")


def _check_new_run_dir(out: Path) -> None:
    """Refuse (before any work) to write into a file or a non-empty directory."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise RunDirError(
            f"run directory {str(out)!r} already exists and is not empty; "
            "pass --resume to continue it, or choose another --out"
        )


def _train(args: argparse.Namespace, model_name: str, out: Path, minutes: float | None = None) -> TrainedRun:
    """Build the run's spec from the flags (or continue the stored one), train it and score it."""
    given = dict(
        dataset=args.dataset,
        num_train=args.num_train,
        num_test=args.num_test,
        seed=args.seed,
        steps=args.steps,
        minutes=minutes,
        device=args.device,
        data_root=args.data_root,
    )
    preset = getattr(args, "preset", None)
    images, own = getattr(args, "images", None), {k: getattr(args, k, None) for k in _IMAGE_FLAGS}
    own = {k: v for k, v in own.items() if v}  # the image options given, as RunSpec.for_images names them
    if images is None and own:
        raise CLIError(
            f"--{next(iter(own)).replace('_', '-')} applies to image files: give --images PATH too"
        )
    if images is not None and (args.dataset or args.data_root):
        raise CLIError("--dataset and --data-root do not apply to --images")
    if own.pop("no_flips", False):
        own["flips"] = False
    if "val_images" in own:
        own["val_paths"] = own.pop("val_images")
    if preset is not None and (args.resume or images is not None):
        raise CLIError("--preset starts a new run of generated scenes: not with --resume or --images")
    if args.resume:
        spec = RunSpec.from_run_dir(out)
        if spec.model != model_name:
            raise CLIError(f"{str(out)!r} holds a {spec.model!r} run, not {model_name!r}")
        again = None if images is None else {"paths": images, **own}
        spec = spec.continued(args.overrides, **given, images=again)
    else:
        _check_new_run_dir(out)
        if images is None:
            spec = RunSpec.from_overrides(model_name, args.overrides, **given, preset=preset, info=_say)
        else:
            given = {k: v for k, v in given.items() if k not in ("dataset", "data_root")}
            spec = RunSpec.for_images(model_name, images, args.overrides, **own, **given, info=_say)
    return spec.train_into(
        out, resume=args.resume, progress=not args.no_progress, command=args.command_line, info=_say
    )


_LABELS = {
    "ap50": "AP@0.5",
    "ap_spair": "AP (IoU 0.1:0.9)",
    "ap_coco": "AP (IoU 0.5:0.95)",
    "count_accuracy": "count accuracy",
    "count_mae": "count MAE",
    "rmse": "reconstruction RMSE",
    "num_scenes": "test scenes",
    "step": "training step",
    "elbo": "ELBO per image",
    "elbo_per_pixel": "ELBO per pixel",
    "count_mean": "objects per image",
    "count_std": "objects per image, sd",
    "count_histogram": "objects: images",
    "num_images": "images",
    "num_objects": "true objects",
    "num_detections": "detections",
}


def _format_metrics(metrics: dict[str, Any]) -> str:
    lines = []
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif key == "count_histogram":  # [images with 0 objects, with 1, ...]
            value = " ".join(f"{k}:{n}" for k, n in enumerate(value) if n)
        lines.append(f"  {_LABELS.get(key, key):<22} {value}")
    return "\n".join(lines)


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (or ``--nproc=N``, or an abbreviation argparse accepted)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name.startswith("--np") and "--nproc".startswith(name):
            skip = "=" not in token
            continue
        out.append(token)
    return out


def _launch_torchrun(args: argparse.Namespace) -> int | None:
    """``--nproc N``: re-run this command under torchrun on N processes and return its exit status;
    None when this process should train itself (no ``--nproc``, N = 1, or already under torchrun)."""
    nproc = args.nproc
    if nproc is None:
        return None
    world = os.environ.get("WORLD_SIZE")
    if world:  # started by torchrun (or by --nproc itself): this process is one rank
        if int(world) != nproc:
            raise CLIError(f"--nproc {nproc} under torchrun with WORLD_SIZE={world}: give one or the other")
        return None
    if nproc == 1:
        return None
    if args.device == "cuda":
        import torch

        found = torch.cuda.device_count()
        if nproc > found:
            raise CLIError(
                f"--nproc {nproc} with --device cuda needs {nproc} GPUs (one per process), "
                f"but this machine has {found}"
            )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    command += ["-m", "ppl_scenes", *_without_nproc(args.argv)]
    _say(f"data-parallel training on {nproc} processes: {shlex.join(command)}")
    return subprocess.run(command).returncode


def _stop_summary(out: Path) -> str | None:
    """Which limit ended the run in ``out``, from its last ``metrics.jsonl`` record (None: not said)."""
    records = read_metrics(out)
    if not records or "stop_reason" not in records[-1]:
        return None
    last, settings = records[-1], read_config(out)
    step, minutes = int(last["step"]), float(last.get("seconds", 0.0)) / 60
    taken, cut = step, ""
    detector_steps = (settings.get("model_config") or {}).get("detector_steps")
    for rec in records:  # a stage that used its share of the minutes: the run skipped its other steps
        if rec.get("stage_stop_reason") == "minutes" and isinstance(detector_steps, int):
            taken -= detector_steps - int(rec["step"])
            cut = (
                f"; stage 1 ended after {rec['step']} of its {detector_steps} steps, its share of the "
                f"minutes ({float(rec.get('seconds', 0.0)) / 60:.1f}) used"
            )
    if last["stop_reason"] == "minutes":
        budget = float((settings.get("train_config") or {}).get("minutes", 0.0))
        return f"stopped by the {budget:g}-minute budget after {taken} steps{cut}"
    if last["stop_reason"] == "steps":
        return f"stopped after the {step} steps asked ({minutes:.1f} minutes){cut}"
    return f"stopped: {last['stop_reason']}"


def cmd_train(args: argparse.Namespace) -> int:
    launched = _launch_torchrun(args)
    if launched is not None:
        return launched
    out = Path(args.out)
    run = _train(args, args.model, out, minutes=args.minutes)
    from ppl_scenes.infer.distributed import is_main_process  # torchrun: rank 0 alone reports

    if not is_main_process():
        return 0
    metrics = run.metrics
    print(f"trained {args.model} to step {metrics.get('step')} in {run.seconds / 60:.1f} min")
    stopped = _stop_summary(out)
    if stopped:
        print(stopped)
    which = "validation" if metrics.get("dataset") == IMAGES_DATASET else "test"
    print(f"{which} metrics ({metrics.get('dataset')}):")
    print(_format_metrics({k: v for k, v in metrics.items() if k not in ("dataset", "step", "stop_reason")}))
    print(f"run directory: {out}  (config.json, weights.safetensors, state.*, metrics.jsonl, eval.json)")
    return 0


# -- eval ----------------------------------------------------------------------------------------
def _model_and_spec(args: argparse.Namespace):
    """The model and its run spec: from ``RUN_DIR`` or, with ``--pretrained NAME``, from the package."""
    if args.pretrained is not None:
        if args.run_dir is not None:
            raise CLIError("give a RUN_DIR or --pretrained NAME, not both")
        spec = RunSpec.from_pretrained(args.pretrained)
        model = pretrained(args.pretrained)
    elif args.run_dir is None:
        raise CLIError(
            "give a RUN_DIR (a trained run) or --pretrained NAME (one of "
            f"{', '.join(pretrained_names()) or 'none shipped'})"
        )
    else:
        spec = RunSpec.from_run_dir(args.run_dir, require_data=False)
        model = load(args.run_dir)
    if getattr(args, "data_root", None) is not None:
        spec.data_root = args.data_root
    if getattr(args, "seed", None) is not None:
        spec.train["seed"] = args.seed
    return model, spec


def cmd_eval(args: argparse.Namespace) -> int:
    if args.images is not None or args.annotations is not None:
        return _eval_images(args)
    model, spec = _model_and_spec(args)
    name, test_set = spec.test_set(args.dataset, args.num_test)
    metrics = {"dataset": name, "step": model.step, **evaluate_scenes(model, test_set, progress=True)}
    if args.run_dir is None:
        path = Path(args.out) if args.out else None
    else:
        path = Path(args.run_dir) / (EVAL_FILE if name == spec.dataset else f"eval-{name}.json")
    which = "validation crops" if name == IMAGES_DATASET else "test scenes"
    _report(args, metrics, f"{spec.model} at step {model.step} on {len(test_set)} {name!r} {which}:", path)
    return 0


def _eval_images(args: argparse.Namespace) -> int:
    """``eval --images --annotations``: COCO scores of the run on image files."""
    if args.images is None or args.annotations is None:
        raise CLIError("--images and --annotations go together: the image files and their COCO labels")
    if args.dataset is not None or args.num_test is not None:
        raise CLIError("--dataset and --num-test do not apply to --images")
    model, _ = _model_and_spec(args)
    scores = files.score_coco(model, args.images, args.annotations, progress=not args.json, **_parsing(args))
    given = [str(Path(p).resolve()) for p in args.images]
    metrics = {"images": given, "annotations": args.annotations, "step": model.step, **scores}
    title = f"{model.name} at step {model.step} on {scores['num_images']} images of {args.annotations}:"
    path = Path(args.run_dir) / EVAL_IMAGES_FILE if args.run_dir else (Path(args.out) if args.out else None)
    _report(args, metrics, title, path)
    return 0


def _report(args: argparse.Namespace, metrics: dict[str, Any], title: str, path: Path | None) -> None:
    """Write ``metrics`` to ``path`` (unless None); print them (``--json``: the JSON object alone)."""
    if path is not None:
        write_json(path, metrics)
    if args.json:
        args.stdout.write(json.dumps(strict_json(metrics), allow_nan=False) + "\n")
    else:
        print(title)
        skip = ("dataset", "step", "images", "annotations")
        print(_format_metrics({k: v for k, v in metrics.items() if k not in skip}))
        if path is not None:
            print(f"written to {path}")


# -- parse ---------------------------------------------------------------------------------------
def _parsing(args: argparse.Namespace) -> dict[str, Any]:
    return dict(threshold=args.threshold, batch_size=args.batch_size, device=args.device, tile=args.tile)


def cmd_parse(args: argparse.Namespace) -> int:
    outputs = {"COCO file": args.out, "codes file": args.codes, "CSV file": args.csv}
    for what, path in outputs.items():  # every output checked before any work
        if path is not None:
            files.check_output_path(path, what)
    if len({str(Path(p).resolve()) for p in outputs.values() if p}) < sum(map(bool, outputs.values())):
        raise CLIError("--out, --codes and --csv must be different files")
    if args.pretrained is None:
        if len(args.items) < 2:
            raise CLIError("give RUN_DIR and at least one PATH (or --pretrained NAME and the paths)")
        args.run_dir, paths = args.items[0], args.items[1:]
    else:
        args.run_dir, paths = None, args.items
    args.paths = paths
    model, _ = _model_and_spec(args)
    progress, figures = not args.no_progress, args.figures
    records = files.parse_files(
        model, args.paths, **_parsing(args), progress=progress, skip_bad=args.skip_bad, figures_dir=figures
    )
    written = [files.write_codes(records, args.codes)] if args.codes else []  # refuses a model without codes
    written = [files.write_coco(records, args.out), *written]
    written += ([files.write_csv(records, args.csv)] if args.csv else []) + (
        [f"{figures}/"] if figures else []
    )
    skipped = f" ({len(records['skipped'])} unreadable files skipped)" if records["skipped"] else ""
    objects, n = len(records["annotations"]), len(records["images"])
    print(f"parsed {n} images{skipped}: {objects} objects; written to {', '.join(map(str, written))}")
    return 0


# -- sample --------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    model, spec = _model_and_spec(args)
    if args.out:
        out = Path(args.out)
    elif args.run_dir is None:
        out = Path(f"{args.pretrained}-samples.png")
    else:
        out = Path(args.run_dir) / "samples.png"
    _, test_set = spec.test_set(args.dataset, args.num_samples)
    posterior = posterior_figure(model, test_set, args.num_samples, out)
    print(f"posterior parses of {min(args.num_samples, len(test_set))} test scenes: {posterior}")
    sampled = posterior_sample_figures(model, test_set, args.num_samples, args.num_draws, out)
    if sampled is not None:
        print(f"boxes of {args.num_draws} posterior draws per scene: {sampled[0]}")
        print(f"posterior over the number of objects: {sampled[1]}")
    image_size = tuple(test_set[0][0].shape[-2:])
    prior_path = out.with_name(f"{out.stem}-prior{out.suffix}")
    prior = prior_figure(model, args.num_samples, image_size, prior_path)
    if prior is not None:
        print(f"samples from the prior (step {model.step} of its annealing): {prior}")
    return 0


# -- demo ----------------------------------------------------------------------------------------
def _free_demo_dir(base: Path = Path("runs") / "demo") -> Path:
    """``runs/demo``, or ``runs/demo-2``, ``-3``, ... when it is taken (a run is never overwritten)."""
    candidate, k = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def _demo_pretrained(path: Path, test_set) -> dict[str, Any] | None:
    """The shipped SPAIR on the demo's test scenes: its scores, and its figure at ``path``."""
    if DEMO_MODEL not in pretrained_names():
        return None
    model = pretrained(DEMO_MODEL)
    metrics = evaluate_scenes(model, test_set)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = posterior_figure(model, test_set, 8, path)
    card = pretrained_info(DEMO_MODEL)
    print(
        f"pretrained SPAIR (shipped in the package; {card['steps']:,} steps, {card['cpu_minutes']:.0f} "
        f"CPU minutes, preset {card['preset']!r}) on {metrics.get('num_scenes')} unseen test scenes:"
    )
    print(_format_metrics({k: v for k, v in metrics.items() if k in _DEMO_KEYS}))
    print(f"  figure: {figure}")
    return metrics


#: The scores the demo prints side by side.
_DEMO_KEYS = ("ap50", "ap_spair", "count_accuracy", "count_mae")


def _demo_record(
    args, out: Path, run, metrics: dict, shipped: dict | None, minutes: float | None
) -> dict[str, Any]:
    """What ``demo.json`` holds: the command, seed, budget and machine, and both models' test scores."""
    import platform

    import torch

    config = json.loads((out / "config.json").read_text())
    card = pretrained_info(DEMO_MODEL) if shipped is not None else None
    return {
        "command": args.command_line,
        "seed": config.get("seed", 0),
        "preset": DEMO_PRESET,
        "budget": {"minutes": minutes, "steps": metrics.get("step"), "seconds": run.seconds},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "ppl_scenes": __version__,
        },
        "test_scenes": metrics.get("num_scenes"),
        "yours": {k: metrics.get(k) for k in (*_DEMO_KEYS, "rmse", "step")},
        "pretrained": None
        if shipped is None
        else {
            **{k: shipped.get(k) for k in (*_DEMO_KEYS, "rmse")},
            "steps": card["steps"],
            "cpu_minutes": card["cpu_minutes"],
            "preset": card["preset"],
        },
    }


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _free_demo_dir()
    _check_new_run_dir(out)
    minutes = args.minutes if args.minutes is not None else (None if args.steps else DEMO_MINUTES)
    budget = f"{minutes:g} min" if minutes else f"{args.steps} steps"
    spec = RunSpec.from_overrides(
        DEMO_MODEL, preset=DEMO_PRESET, data_root=args.data_root, num_test=DEFAULT_NUM_TEST
    )
    _, test_set = spec.test_set()
    staged = out.with_name(f"{out.name}-pretrained.png")  # beside the run: its directory must be new
    shipped = _demo_pretrained(staged, test_set)
    _info(f"{PROG} demo: now training a SPAIR of your own (preset {DEMO_PRESET!r}), {budget} of CPU training")
    args.overrides, args.resume, args.dataset, args.num_train = [], False, None, None
    args.num_test = DEFAULT_NUM_TEST
    args.seed = args.device = None
    args.preset = DEMO_PRESET
    run = _train(args, DEMO_MODEL, out, minutes=minutes)
    metrics = run.metrics
    figure = posterior_figure(run.model, run.test_set, 8, out / "demo.png")
    plot_curves(out / METRICS_FILE, keys=("loss",), path=out / "loss.png")
    print(f"your SPAIR trained for {metrics.get('step')} steps in {run.seconds / 60:.1f} min")
    stopped = _stop_summary(out)
    if stopped:
        print(stopped)
    print(f"test metrics on {metrics.get('num_scenes')} unseen scenes:")
    if shipped is None:
        print(_format_metrics({k: v for k, v in metrics.items() if k in _DEMO_KEYS}))
    else:
        print(f"  {'':<22} {'yours':>8} {'pretrained':>11}")
        for key in _DEMO_KEYS:
            print(f"  {_LABELS.get(key, key):<22} {metrics[key]:>8.4f} {shipped[key]:>11.4f}")
    record = _demo_record(args, out, run, metrics, shipped, minutes)
    (out / "demo.json").write_text(json.dumps(strict_json(record), indent=1, allow_nan=False) + "\n")
    print("files:")
    if shipped is not None:
        print(f"  {staged}  the pretrained SPAIR's parses of test images")
    print(f"  {figure}  your SPAIR: test images, inferred (blue) and true (yellow) boxes, reconstructions")
    print(f"  {out / 'eval.json'}  your SPAIR's metrics")
    print(f"  {out / 'demo.json'}  both models' metrics, the budget and the machine")
    print(f"  {out / 'loss.png'}  training loss (-ELBO per image)")
    print(f"  {out}/  the run: evaluate again with `{PROG} eval {out}`, resume with")
    print(f"       `{PROG} train spair --out {out} --resume --minutes M`")
    return 0


# -- presets -------------------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> int:
    names = [args.model] if args.model else sorted(MODELS)
    if args.model and args.model not in MODELS:
        raise CLIError(f"unknown model {args.model!r}; models: {', '.join(sorted(MODELS))}")
    print("presets (ppl-scenes train MODEL --preset NAME):")
    for name in names:
        cls = MODELS[name]
        for preset in cls.preset_names():
            print(f"  {name:<16} {preset:<16} {cls.preset(preset).summary}")
    shipped = [n for n in pretrained_names() if not args.model or pretrained_info(n)["model"] == args.model]
    print("pretrained models (ppl_scenes.pretrained(NAME); --pretrained NAME on eval, parse, sample):")
    for name in shipped:
        card = pretrained_info(name)
        test = ", ".join(f"{k} {v:.3f}" for k, v in card["test"].items() if isinstance(v, float))
        print(
            f"  {name:<16} {card['model']} --preset {card['preset']}: {card['steps']:,} steps, "
            f"{card['cpu_minutes']:.0f} CPU min; test {test}; sha256 {card['sha256'][:12]}"
        )
        print(f"  {'':<16} trained by: {card['command']}")
        rerun = card.get("reproduction")
        if rerun:
            spread = ", ".join(
                f"{key} {s['mean']:.3f} ± {s['sd']:.3f}"
                for key, s in rerun["test"].items()
                if s["sd"] is not None
            )
            seeds = ", ".join(str(seed) for seed in rerun["seeds"])
            print(f"  {'':<16} re-run with seeds {seeds}: test {spread} (mean ± sd over all seeds)")
    if not shipped:
        print("  (none)")
    return 0


# -- upgrade -------------------------------------------------------------------------------------
def cmd_upgrade(args: argparse.Namespace) -> int:
    for run_dir in args.run_dirs:
        converted = upgrade(run_dir)
        done = f"converted {', '.join(converted)} (kept as *.legacy)" if converted else "nothing to convert"
        print(f"{run_dir}: {done}")
    return 0


# -- parser and entry point ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-scenes`` (one subcommand per verb)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate and sample object-centric scene models (Pyro).",
        epilog=f"Run `{PROG} VERB --help` for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(
        dest="verb", required=True, metavar="{train,eval,parse,sample,demo,presets,upgrade}"
    )

    def data_root(p):
        p.add_argument(
            "--data-root",
            metavar="DIR",
            help="MNIST root (default: $PPL_SCENES_DATA, else ~/.cache/ppl_scenes)",
        )

    def from_package(p):
        p.add_argument(
            "--pretrained", metavar="NAME", help="a model shipped in the package instead of a RUN_DIR"
        )

    def parsing(p):
        p.add_argument("--threshold", type=float, metavar="T", help="presence threshold (the model's)")
        p.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="images per batch (8)")
        p.add_argument("--device", metavar="D", help="cpu (default), cuda, cuda:1, ...")
        p.add_argument("--tile", type=positive_int, metavar="PX", help="parse larger images in PX tiles")

    train = verbs.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train MODEL and write a run directory; ends with an evaluation on test scenes.",
        epilog="Overrides: KEY=VALUE (model config), train.KEY=VALUE (TrainConfig), data.KEY=VALUE "
        "(dataset generator), e.g. what_dim=32 train.batch_size=16 data.num_digits=1,5",
    )
    train.add_argument("model", metavar="MODEL", help=f"model name: {', '.join(sorted(MODELS))}")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (new, or --resume)")
    train.add_argument(
        "--preset", metavar="NAME", help="start from the model's named recipe (`ppl-scenes presets`)"
    )
    train.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help="optimisation steps (default: the model's, unless --minutes is given)",
    )
    train.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help="wall-clock budget (total, resumes included): trains for M minutes however many steps that "
        "takes; with --steps (or train.steps=) too, stops at whichever comes first",
    )
    train.add_argument("--dataset", metavar="NAME", help="dataset (default: the model's)")
    train.add_argument("--seed", type=int, metavar="S", help="seed of weights and batch order (default 0)")
    train.add_argument("--device", choices=("cpu", "cuda"), help="device (default cpu)")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    data_root(train)
    train.add_argument("--num-train", type=positive_int, metavar="N", help="training scenes")
    train.add_argument(
        "--num-test", type=positive_int, metavar="N", help=f"test scenes (default {DEFAULT_NUM_TEST})"
    )
    train.add_argument(
        "--nproc",
        type=positive_int,
        metavar="N",
        help="data-parallel processes: re-run this command under torchrun with N (default 1)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    own = train.add_argument_group("your own images (no labels)")
    own.add_argument("--images", nargs="+", metavar="PATH", help="folders, globs or image files")
    own.add_argument("--object-size", type=positive_float, metavar="PX", help="typical object side")
    own.add_argument("--crop", type=positive_int, metavar="PX", help="training crop (4 object sides)")
    own.add_argument("--no-flips", action="store_true", help="no mirrored crops")
    own.add_argument("--channels", type=int, choices=(1, 3), help="gray or RGB (default: the images')")
    own.add_argument("--val-images", nargs="+", metavar="PATH", help="held out (default: 10%% of them)")
    own.add_argument("--skip-bad", action="store_true", help="skip undecodable files with a warning")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    train.set_defaults(func=cmd_train)

    ev = verbs.add_parser(
        "eval",
        help="evaluate a trained run on test scenes",
        description="Evaluate a run on the test split of its dataset (or another) and write eval.json; "
        f"with --images and --annotations: COCO scores, in RUN_DIR/{EVAL_IMAGES_FILE}.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    from_package(ev)
    ev.add_argument("--seed", type=int, metavar="S", help="seed of the test scenes (default: the run's)")
    ev.add_argument("--out", metavar="FILE", help="with --pretrained: write the scores here (JSON)")
    ev.add_argument("--dataset", metavar="NAME", help="dataset (default: the run's)")
    ev.add_argument("--num-test", type=positive_int, metavar="N", help="test scenes (default: the run's)")
    data_root(ev)
    ev.add_argument("--json", action="store_true", help="print only a JSON object on stdout")
    ev.add_argument("--images", nargs="+", metavar="PATH", help="score on these image files")
    ev.add_argument("--annotations", metavar="COCO", help="their COCO ground truth (JSON)")
    parsing(ev)
    ev.set_defaults(func=cmd_eval)

    pa = verbs.add_parser(
        "parse",
        help="find the objects of image files (COCO detections)",
        description="Parse the images of PATH (folders, globs, files) and write their objects.",
    )
    pa.add_argument("items", nargs="+", metavar="[RUN_DIR] PATH", help="RUN_DIR then paths, or --pretrained")
    from_package(pa)
    pa.add_argument("--out", required=True, metavar="FILE", help="COCO detections (JSON)")
    pa.add_argument("--figures", metavar="DIR", help="one figure per image: boxes and reconstruction")
    pa.add_argument("--codes", metavar="FILE", help="each object's z_what (.npz, keyed by annotation id)")
    pa.add_argument("--csv", metavar="FILE", help="one row per object")
    parsing(pa)
    pa.add_argument("--skip-bad", action="store_true", help="skip undecodable files with a warning")
    pa.add_argument("--no-progress", action="store_true", help="no progress bar")
    pa.set_defaults(func=cmd_parse)

    sample = verbs.add_parser(
        "sample",
        help="figure of posterior parses (and prior samples)",
        description="Parse test scenes and draw them with inferred boxes and reconstructions; "
        "when the model can sample its prior, also FILE-prior.png.",
    )
    sample.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    from_package(sample)
    sample.add_argument("--num-samples", type=positive_int, default=8, metavar="N", help="images (8)")
    sample.add_argument(
        "--num-draws", type=positive_int, default=20, metavar="K", help="posterior draws per image (20)"
    )
    sample.add_argument("--out", metavar="FILE", help="figure path (default RUN_DIR/samples.png)")
    sample.add_argument("--dataset", metavar="NAME", help="dataset (default: the run's)")
    data_root(sample)
    sample.set_defaults(func=cmd_sample)

    demo = verbs.add_parser(
        "demo",
        help="train SPAIR for a few minutes, evaluate, draw",
        description=f"Train SPAIR on scattered MNIST digits for {DEMO_MINUTES:g} minutes on CPU, evaluate "
        "on unseen test scenes, write demo.png and eval.json.",
    )
    demo.add_argument("--out", metavar="DIR", help="run directory (default runs/demo, runs/demo-2, ...)")
    demo.add_argument(
        "--minutes", type=positive_float, metavar="M", help=f"training budget (default {DEMO_MINUTES:g})"
    )
    demo.add_argument("--steps", type=positive_int, metavar="N", help="step budget (default SPAIR's)")
    data_root(demo)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    pr = verbs.add_parser(
        "presets",
        help="list the models' named recipes and the pretrained models",
        description="List each model's presets (ppl-scenes train MODEL --preset NAME) with one line "
        "each, and the pretrained models shipped in the package with their model cards.",
    )
    pr.add_argument("model", metavar="MODEL", nargs="?", help="one model only")
    pr.set_defaults(func=cmd_presets)

    up = verbs.add_parser(
        "upgrade",
        help="convert run directories of the old pickle format",
        description="Convert each RUN_DIR's pickled checkpoint.pt (and detector.pt) to safetensors with "
        "checksums, reading them with torch.load(weights_only=True); the old files are kept as *.legacy.",
    )
    up.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    up.set_defaults(func=cmd_upgrade)
    return parser


def _error(message: object) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ppl-scenes`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        # Overrides may sit between options (argparse's nargs="*" only takes one run of them):
        # the leftovers of parse_known_args are overrides too, unless they look like options.
        args, extras = parser.parse_known_args(argv)
        strays = [e for e in extras if e.startswith("-") or args.verb != "train"]
        if strays:
            parser.error(f"unrecognized arguments: {' '.join(strays)}")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if args.verb == "train":
        args.overrides = [*args.overrides, *extras]
        for name in ("images", "val_images"):  # nargs="+" takes the overrides that follow: give them back
            paths = getattr(args, name)
            if paths:
                moved = [p for p in paths if _OVERRIDE.match(p) and not Path(p).exists()]
                args.overrides += moved
                setattr(args, name, [p for p in paths if p not in moved] or None)
    args.command_line = shlex.join([PROG, *argv])
    args.argv = argv
    args.stdout = sys.stdout

    # With --json, anything a library prints goes to stderr: stdout carries the JSON object alone.
    quiet = (
        contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
    )
    try:
        with quiet:
            return args.func(args)
    except TrainingDiverged as err:
        _error(err)
        return 1
    except (ValueError, OSError) as err:  # RunDirError and CLIError are ValueErrors
        _error(err)
        return 2
    except TrainingInterrupted as err:
        at = (
            f"its last checkpoint (step {err.last_checkpoint_step})"
            if err.last_checkpoint_step is not None
            else "the start (no checkpoint was written yet)"
        )
        _error(
            f"interrupted at step {err.step} after {err.seconds / 60:.1f} minutes: the run resumes from "
            f"{at} with `train ... --resume`"
        )
        return 130
    except KeyboardInterrupt:
        _error("interrupted (a run resumes from its last checkpoint with `train ... --resume`)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
