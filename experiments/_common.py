"""What the SPAIR experiment scripts share: flags, training runs, the machine record, JSON and tables.

Not part of the library: each script imports it from its own folder (``python experiments/NAME.py``
puts ``experiments/`` first on ``sys.path``). What is useful beyond these scripts lives in the library
instead (:func:`ppl_scenes.metrics.scoring.evaluate_by_count`, :class:`ppl_scenes.baselines.ConnComp`,
:func:`ppl_scenes.viz.plot_metrics_by_count`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyro
import torch

import ppl_scenes
from ppl_scenes import SPAIR, SPAIRConfig, TrainConfig
from ppl_scenes.cli import fraction, non_negative_int, positive_float, positive_int  # noqa: F401
from ppl_scenes.config import config_to_dict, replace_config
from ppl_scenes.data import make_dataset
from ppl_scenes.data.digits import INK_THRESHOLD, SPLITS
from ppl_scenes.infer.fit import train_config
from ppl_scenes.runs import RunDir, RunDirError, RunSpec, read_config, read_metrics, write_json
from ppl_scenes.runs import json_value as finite  # strict JSON values (NaN as null), as run records

#: The metrics of ``evaluate_detection`` / ``evaluate_by_count`` a summary shows, with short headers.
SUMMARY_METRICS = {
    "ap_spair": "AP.1:.9",
    "ap50": "AP@.5",
    "count_accuracy": "count acc",
    "count_mae": "count MAE",
}


# -- flags ---------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one (None and False mean "the library's")."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser(
    doc: str, name: str, digits: bool = True, num_train: int | None = None, num_train_help: str | None = None
) -> argparse.ArgumentParser:
    """A parser with the flags every experiment has: budget, data sizes, seed, output, progress.

    Training settings left out stay the library's (``SPAIR.default_train``, ``TrainConfig``).
    ``digits``: the experiment uses MNIST digits (adds ``--data-root`` and ``--no-download``);
    ``num_train``/``num_train_help``: default and help of ``--num-train`` (default: the generator's).
    """
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{name}.py",
        description=doc.split("\n\n")[0].replace("\n", " "),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--out", default=f"benchmarks/{name}", metavar="DIR", help="where JSON and figures go"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help=f"SVI steps per trained model (default: SPAIR's, {SPAIR.default_train.get('steps')})",
    )
    parser.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help="wall-clock training budget per trained model; the step count stays an upper bound",
    )
    parser.add_argument(
        "--num-train",
        type=positive_int,
        default=num_train,
        metavar="N",
        help=num_train_help or "training scenes (default: the generator's)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        help=f"images per step (default: SPAIR's, {SPAIR.default_train.get('batch_size')})",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of weights, batches and data")
    if digits:
        parser.add_argument("--data-root", metavar="DIR", help="MNIST root (default: $PPL_SCENES_DATA)")
        parser.add_argument(
            "--no-download",
            action="store_true",
            help="never download MNIST (when it is missing, scikit-learn's digits stand in, with a warning)",
        )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="training device (default: cpu)")
    parser.add_argument(
        "--threads", type=positive_int, metavar="T", help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the training runs under OUT/runs from their checkpoints, each to its own budget "
        "unless --steps/--minutes say otherwise (finished runs are only evaluated again); without it, "
        "existing runs there are an error",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--train-set",
        nargs="*",
        default=[],
        type=train_item,
        metavar="KEY=VALUE",
        help="other TrainConfig fields for every trained model (e.g. lr=3e-4 lr_decay_from=0.5)",
    )
    return parser


#: TrainConfig fields with flags of their own, which ``--train-set`` leaves to those flags.
_FLAGGED_TRAIN_FIELDS = ("steps", "minutes", "batch_size", "seed", "device")


def train_item(item: str) -> tuple[str, Any]:
    """One ``--train-set KEY=VALUE`` item as ``(field, typed value)`` of :class:`TrainConfig`."""
    try:
        ((key, value),) = parse_overrides([item], TrainConfig(), "--train-set").items()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if key in _FLAGGED_TRAIN_FIELDS:
        raise argparse.ArgumentTypeError(f"{key!r} has its own flag: --{key.replace('_', '-')}")
    return key, value


def add_conncomp_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conncomp-threshold",
        type=fraction,
        default=INK_THRESHOLD,
        metavar="TAU",
        help=f"ConnComp's tau (default: {INK_THRESHOLD}, the ink threshold of the generators' true boxes)",
    )


def parse_overrides(items: Sequence[str], config, flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` items as typed, validated fields of ``config`` (a config instance).

    Raises:
        ValueError: for an item without ``=``, an unknown key or a value of the wrong kind.
    """

    raw = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE items, got {item!r}")
        raw[key] = value
    replaced = replace_config(config, raw)
    return {key: getattr(replaced, key) for key in raw}


def config_overrides(parser: argparse.ArgumentParser, items: Sequence[str], config) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed, validated fields of ``config``; a bad item exits with status 2."""
    try:
        return parse_overrides(items, config)
    except ValueError as err:
        parser.error(str(err))


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's intra-op threads in this process."""
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", f"experiments/{script}.py", *args])


# -- splits (BENCHMARKS.md's protocol) -------------------------------------------------------------
#: The validation scenes' seed is ``--seed`` plus this unless ``--val-seed`` says otherwise (the test
#: scenes' is ``--seed`` plus one in most scripts). The split id is in every generator's random stream,
#: so even equal seeds give different scenes per split; the offset only keeps the records unambiguous.
VAL_SEED_OFFSET = 2
#: Bootstrap resamples of the 95 % intervals over the test scenes (``--intervals``).
DEFAULT_INTERVALS = 500


def add_split_args(
    parser: argparse.ArgumentParser,
    num_val: int | None = None,
    intervals: bool = True,
    per_count: bool = False,
) -> None:
    """``--num-val``, ``--val-seed`` and (``intervals``) ``--intervals``: the protocol's flags.

    Validation scenes (split ``"val"``: MNIST's held-out training digits) draw every curve and every
    choice and are scored at the end beside the test scenes, which are scored once. ``num_val``:
    the default of ``--num-val`` (None: as many as test scenes); ``per_count``: ``--num-val`` counts
    the validation scenes of each digit count (as ``--test-per-count``).
    """
    what = "validation scenes per digit count" if per_count else "validation scenes"
    parser.add_argument(
        "--num-val",
        type=positive_int,
        default=num_val,
        metavar="N",
        help=f"{what} (split 'val': MNIST's held-out training digits), for the curves and every "
        "choice, scored at the end beside the test scenes (default: as many as test scenes)",
    )
    parser.add_argument(
        "--val-seed",
        type=non_negative_int,
        metavar="S",
        help=f"seed of the validation scenes (default: --seed + {VAL_SEED_OFFSET})",
    )
    if intervals:
        parser.add_argument(
            "--intervals",
            type=non_negative_int,
            default=DEFAULT_INTERVALS,
            metavar="N",
            help="bootstrap resamples of the 95 %% intervals over the test scenes (0: none)",
        )


def val_seed(args: argparse.Namespace) -> int:
    """The validation scenes' seed: ``--val-seed``, else ``--seed`` plus :data:`VAL_SEED_OFFSET`."""
    seed = getattr(args, "val_seed", None)
    return args.seed + VAL_SEED_OFFSET if seed is None else seed


def logged_progress(run_dir: str | Path) -> tuple[int, float]:
    """``(steps, minutes)`` a run has logged: its last step and its trainer's clock (summed over
    resumes) in minutes, read from ``metrics.jsonl``."""
    logged = read_metrics(run_dir)
    steps = max((r["step"] for r in logged if "step" in r), default=0)
    return steps, max((r.get("seconds", 0.0) for r in logged), default=0.0) / 60


def mnist_source(root: str | None = None, download: bool = True) -> str:
    """``"mnist"`` or ``"sklearn-fallback"``: where the training digits come from on this machine (for
    the records of timings, whose scenes are built inside the timed code)."""
    from ppl_scenes.data.digits import digit_bank

    return digit_bank("train", 28, root=root, download=download).source


def digit_source(*datasets: Any) -> str | None:
    """``"mnist"`` or ``"sklearn-fallback"``: where the digits of ``datasets`` come from.

    Looks through wrappers (``Subset``, ``ConcatDataset``, crops, upscaling) for a digit bank; None
    when no dataset draws digits (procedural scenes: shapes, Gabor noise).
    """
    todo, sources = list(datasets), []
    while todo:
        dataset = todo.pop()
        bank = getattr(type(dataset), "bank", None)
        if bank is not None:
            sources.append(dataset.bank.source)
        todo.extend(getattr(dataset, "datasets", ()))
        inner = getattr(dataset, "dataset", None)
        if inner is not None:
            todo.append(inner)
    unique = sorted(set(sources))
    return None if not unique else unique[0] if len(unique) == 1 else "+".join(unique)


def split_record(split: str, seed: int | None, dataset: Any, **extra: Any) -> dict[str, Any]:
    """One entry of a record's ``"splits"``: the split, the scenes' seed and how many scenes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return {"split": split, "seed": seed, "scenes": len(dataset), **extra}


@dataclasses.dataclass
class Splits:
    """The (train, validation, test) scenes of one generator and their record.

    ``val`` draws the curves and every choice; ``test`` is scored once, at the end. ``record`` is the
    ``"splits"`` entry of a record (``{"train": ..., "validation": ..., "test": ...}``, each with its
    split, seed and number of scenes) and ``source`` the digit source (``"mnist"``,
    ``"sklearn-fallback"``, or None for procedural scenes).
    """

    train: Any
    val: Any
    test: Any
    record: dict[str, Any]
    source: str | None


def build_splits(
    name: str,
    args: argparse.Namespace,
    kwargs: Mapping[str, Any],
    *,
    num_test: int,
    test_seed: int,
    train_kwargs: Mapping[str, Any] | None = None,
    num_val: int | None = None,
    train: bool = True,
    wrap: Any = None,
) -> Splits:
    """Train, validation and test scenes of generator ``name`` (``make_dataset``) with ``kwargs``.

    Training scenes: seed ``--seed`` (``train_kwargs`` on top, e.g. ``num_scenes``); validation scenes:
    split ``"val"``, ``num_val`` of them (default ``--num-val``, else ``num_test``) with seed
    :func:`val_seed`; test
    scenes: ``num_test`` of them with seed ``test_seed`` (by habit ``--seed`` + 1). ``train=False``
    builds no training scenes (``Splits.train`` is None); ``wrap`` (e.g. an upscaling) is applied to
    each set.
    """
    wrap = wrap or (lambda dataset: dataset)
    if num_val is None:
        num_val = num_test if getattr(args, "num_val", None) is None else args.num_val
    seed_val = val_seed(args)
    train_set, train_kw = None, {"seed": args.seed, **kwargs, **(train_kwargs or {})}
    if train:
        train_set = wrap(make_dataset(name, "train", **train_kw))
    val_set = wrap(make_dataset(name, "val", num_scenes=num_val, seed=seed_val, **kwargs))
    test_set = wrap(make_dataset(name, "test", num_scenes=num_test, seed=test_seed, **kwargs))
    record = {}
    if train_set is not None:
        record["train"] = split_record("train", train_kw["seed"], train_set)
    record["validation"] = split_record("val", seed_val, val_set)
    record["test"] = split_record("test", test_seed, test_set)
    return Splits(train_set, val_set, test_set, record, digit_source(val_set, test_set))


def first_scenes(dataset: Any, n: int) -> Any:
    """The first ``n`` scenes of ``dataset`` (all of them when it has fewer)."""
    from torch.utils.data import Subset

    return dataset if n >= len(dataset) else Subset(dataset, range(n))


def intervals_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``{"intervals": N}`` for the final test evaluation (``--intervals``; nothing when 0)."""
    n = getattr(args, "intervals", 0)
    return {"intervals": n} if n else {}


# -- runs ----------------------------------------------------------------------------------------
def check_run_dirs(parser: argparse.ArgumentParser, run_dirs: Sequence[Path], resume: bool) -> None:
    """Refuse (exit status 2) to train into a run directory that holds a run, unless resuming."""
    if resume:
        return
    taken = []
    for run_dir in run_dirs:
        try:
            RunDir(run_dir).check_new()
        except RunDirError:
            taken.append(str(run_dir))
    if taken:
        parser.error(
            f"run director{'ies' if len(taken) > 1 else 'y'} {', '.join(taken)} already exist: "
            "pass --resume to continue them, or choose another --out"
        )


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``fit`` keyword arguments the flags override (nothing else: the library's defaults hold)."""
    settings: dict[str, Any] = {**dict(args.train_set), "seed": args.seed}
    if args.minutes is not None:
        settings["minutes"] = args.minutes
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    if args.device is not None:
        settings["device"] = args.device
    return settings


def train_model(
    train_set,
    run_dir: Path,
    args: argparse.Namespace,
    data: Mapping[str, Any],
    command: str,
    progress: bool,
    model_class: type = SPAIR,
    fit_kwargs: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[Any, dict[str, Any]]:
    """Train ``model_class(**overrides)`` (any registered model) into ``run_dir`` through a
    :class:`~ppl_scenes.runs.RunSpec`; returns it and its cost.

    ``data`` (``name`` and generator ``kwargs``) goes to the run's ``config.json``, so the run can be
    scored again with ``ppl-scenes eval``. ``fit_kwargs`` are an ``eval_fn`` (curves and the final
    ``eval.json``) and training settings (e.g. ``eval_every``). The cost record holds the steps run,
    the training seconds (the trainer's clock, summed over resumes) and the torch threads used.
    """
    pyro.clear_param_store()
    resume = args.resume and RunDir(run_dir).has_checkpoint()
    settings = train_settings(args)
    if resume:
        # a resumed run keeps its own model settings (e.g. a --set of the call that trained it), with
        # this call's overrides on top, and its own budget unless the flags set another
        stored = RunSpec.from_run_dir(run_dir)
        if args.minutes is None and "minutes" in stored.train:
            settings["minutes"] = stored.train["minutes"]
        steps = args.steps if args.steps is not None else stored.train.get("steps")
        spec = dataclasses.replace(stored, model_config={**stored.model_config, **overrides})
        # the threads the run trained with: a later call that only evaluates it may use other settings
        threads = read_config(run_dir).get("torch_threads", torch.get_num_threads())
    else:
        steps = args.steps
        pyro.set_rng_seed(args.seed)  # the initial weights
        model = model_class(**overrides)  # a class, or a factory (e.g. one that loads a detector)
        spec = RunSpec(model=model.name, model_config=config_to_dict(model.config), dataset=data["name"])
        threads = torch.get_num_threads()
    eval_fn = (fit_kwargs or {}).get("eval_fn")
    extra = {k: v for k, v in (fit_kwargs or {}).items() if k != "eval_fn"}  # TrainConfig fields
    spec.train = {**settings, **extra, **({"steps": steps} if steps is not None else {})}
    spec.data_root = getattr(args, "data_root", None)
    run_info = {"data": {**data, "root": spec.data_root}, "torch_threads": threads}
    run = spec.train_into(
        run_dir,
        resume=resume,
        progress=progress,
        command=command,
        train_set=train_set,
        model=None if resume else model,
        evaluate=eval_fn is not None,
        eval_fn=eval_fn,
        run_info=run_info,
    )
    last = read_metrics(run_dir)[-1]
    cost = {
        "steps": int(last["step"]),
        "train_seconds": round(float(last["seconds"]), 1),
        "torch_threads": threads,
        "run_dir": str(run_dir),
    }
    return run.model, cost


def with_tight_boxes(model: SPAIR, evaluate, *args: Any, **kwargs: Any) -> Any:
    """``evaluate(model, ...)`` with the model's boxes tightened to their drawn glimpses (GMAIR B.3)."""
    saved = model.config.tight_boxes
    model.config.tight_boxes = True
    try:
        return evaluate(model, *args, **kwargs)
    finally:
        model.config.tight_boxes = saved


def write_eval(run_dir: Path, step: int, metrics: Mapping[str, Any]) -> None:
    """The run's ``eval.json``, as ``ppl-scenes train`` leaves it."""
    write_json(run_dir / "eval.json", {"step": step, **finite(metrics)})


# -- records -------------------------------------------------------------------------------------
def run_scenes(spec: RunSpec, split: str, num: int, seed: int):
    """``num`` scenes of a run's generator, split ``split``, of scene seed ``seed`` (fresh scenes)."""
    spec = RunSpec(**{**vars(spec), "data_kwargs": {**spec.data_kwargs, "seed": seed}})
    return spec.build_dataset(split, num)


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "ppl_scenes": ppl_scenes.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "revision": revision(),
    }


def revision() -> str | None:
    """The package's git commit (short), with ``+changes`` when ``ppl_scenes/`` differs from it;
    None outside a git checkout."""
    root = Path(ppl_scenes.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    return commit + ("+changes" if git("status", "--porcelain", "--", "ppl_scenes") else "")


def model_record(**overrides: Any) -> dict[str, Any]:
    """SPAIR's config and training defaults as used (the flags' overrides are in ``settings``)."""
    config = dataclasses.replace(SPAIRConfig(), **overrides)
    return {"config": config_to_dict(config), "default_train": dict(SPAIR.default_train)}


def settings_record(args: argparse.Namespace) -> dict[str, Any]:
    """The flags, less those that do not change the numbers."""
    return {k: v for k, v in vars(args).items() if k not in ("no_progress", "resume", "no_download")}


def train_record(args: argparse.Namespace, model_class: type = SPAIR) -> dict[str, Any]:
    """The training settings in force: ``model_class``'s defaults with the flags' overrides (as
    :func:`~ppl_scenes.infer.fit.train_config` makes them: ``--minutes`` alone, no step limit)."""
    settings = train_settings(args)
    settings.pop("device", None)  # validated against this machine by TrainConfig; recorded apart
    record = dataclasses.asdict(train_config(model_class, args.steps, **settings))
    record["device"] = args.device or TrainConfig.device
    return record


def write_record(path: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as strict JSON (the library's encoder); returns the path."""
    write_json(path, dict(record))
    return path


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A plain-text table: ``columns`` maps row keys to headers; floats get 3 decimals."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    cells = [[cell(row.get(k)) for k in columns] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(columns.values())]
    lines = ["  ".join(h.rjust(w) for h, w in zip(columns.values(), widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


# -- the crops -> large images experiments (SPAIR §5.2 and §5.5) ---------------------------------
def count_scene_set(
    split: str, counts: Sequence[int], per_count: int, seed: int, root: str | None, download: bool = True
):
    """Full 84x84 scenes of ``split``, ``per_count`` of each count (seed ``seed`` + count), counts
    ascending."""
    from torch.utils.data import ConcatDataset

    parts = [
        make_dataset(
            "large-scattered",
            split,
            num_scenes=per_count,
            num_digits=c,
            seed=seed + c,
            root=root,
            download=download,
        )
        for c in counts
    ]
    return ConcatDataset(parts)


def count_test_set(counts: Sequence[int], per_count: int, seed: int, root: str | None, download: bool = True):
    """Full 84x84 test scenes (MNIST test digits), ``per_count`` of each count, counts ascending."""
    return count_scene_set("test", counts, per_count, seed, root, download)


def example_indices(counts: Sequence[int], per_count: int, n: int = 8) -> list[int]:
    """Indices into :func:`count_test_set` of ``n`` scenes spread over the counts (first of each)."""
    n = min(n, len(counts))
    picks = sorted({round(i * (len(counts) - 1) / max(1, n - 1)) for i in range(n)})
    return [k * per_count for k in picks]


def mean_over_counts(by_count: Mapping[int, Mapping[str, float]], key: str, lo: int, hi: int) -> float | None:
    """Mean of a per-scene metric over the scenes with ``lo..hi`` objects (weighted by scene counts)."""
    chosen = [m for c, m in by_count.items() if lo <= int(c) <= hi]
    n = sum(m["num_scenes"] for m in chosen)
    if n == 0:
        return None
    return sum(m[key] * m["num_scenes"] for m in chosen) / n


def add_crops_args(parser: argparse.ArgumentParser, train_digits: tuple[int, int] | None) -> None:
    """Flags of the crops -> large images experiments (training digits, test counts)."""
    parser.add_argument(
        "--train-digits",
        type=positive_int,
        nargs=2,
        default=train_digits,
        metavar=("LO", "HI"),
        help="digits per 84x84 training scene, inclusive range"
        + ("" if train_digits else " (default: the scattered-crops generator's, 6 10)"),
    )
    parser.add_argument("--max-count", type=positive_int, default=20, help="test scenes hold 1..MAX digits")
    parser.add_argument(
        "--test-per-count",
        "--num-test",
        dest="test_per_count",
        type=positive_int,
        default=50,
        metavar="N",
        help="84x84 test scenes per digit count",
    )
    add_split_args(parser, per_count=True)
    add_conncomp_arg(parser)


def example_title(true_count: int, found: int) -> str:
    return f"{true_count} digit{'' if true_count == 1 else 's'}, {found} found"


def slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")


def crops_experiment(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    script: str,
    command: str,
    variants: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Train SPAIR variants on 48x48 crops of 84x84 scenes; score them on full scenes of 1..20 digits.

    SPAIR §5.2 (Fig. 3) and §5.5 (Fig. 7). Every variant (``{label: SPAIR config overrides}``) is
    trained on the same crops with the same seed and scored per true count on the same full 84x84
    test scenes as ConnComp. Writes ``by_count.png`` (AP, absolute count error and 0-1 count error
    against the number of digits, Fig. 3's panels), ``examples_<label>.png`` and ``<script>.json``
    under ``args.out``; returns the JSON record.
    """
    from ppl_scenes.baselines import ConnComp
    from ppl_scenes.data.loading import materialize
    from ppl_scenes.metrics import evaluate_by_count, evaluate_detection
    from ppl_scenes.viz import plot_metrics_by_count, plot_scenes

    apply_threads(args)
    out = Path(args.out)
    progress = not args.no_progress
    run_dirs = {label: out / "runs" / slug(label) for label in variants}
    check_run_dirs(parser, list(run_dirs.values()), args.resume)

    train_kwargs: dict[str, Any] = {"seed": args.seed}
    if args.train_digits is not None:
        lo, hi = args.train_digits
        if lo > hi:
            parser.error(f"--train-digits LO HI needs LO <= HI, got {lo} {hi}")
        train_kwargs["num_digits"] = [lo, hi]
    if args.num_train is not None:
        train_kwargs["num_scenes"] = args.num_train
    train_set = make_dataset(
        "scattered-crops", "train", root=args.data_root, download=not args.no_download, **train_kwargs
    )
    train_digits = list(train_set.dataset.num_digits)
    counts = list(range(1, args.max_count + 1))
    download = not args.no_download
    test_set = count_test_set(counts, args.test_per_count, args.seed, args.data_root, download)
    # validation scenes (split "val") of the same counts, scored beside the test scenes
    val_per_count = args.test_per_count if args.num_val is None else args.num_val
    seed_val = val_seed(args)
    val_set = count_scene_set("val", counts, val_per_count, seed_val, args.data_root, download)
    per_count = {"seed_per_count": "seed + count"}
    splits = {
        "train": split_record("train", args.seed, train_set),
        "validation": split_record("val", seed_val, val_set, per_count=val_per_count, **per_count),
        "test": split_record("test", args.seed, test_set, per_count=args.test_per_count, **per_count),
    }
    examples = example_indices(counts, args.test_per_count)
    example_images = torch.stack([test_set[i][0] for i in examples])
    example_truth = [test_set[i][1] for i in examples]
    # The crops are generated once and shared by every variant.
    images = materialize(train_set, desc="training crops", progress=progress)
    data = {"name": "scattered-crops", "kwargs": train_kwargs, "num_test": args.test_per_count}

    variants_out: dict[str, Any] = {}
    figures: dict[str, str] = {}
    for label, overrides in variants.items():
        if progress:
            print(f"{script}: training SPAIR ({label}) on {len(images)} crops", file=sys.stderr)
        model, cost = train_model(images, run_dirs[label], args, data, command, progress, **overrides)
        validation = evaluate_by_count(model, val_set, progress=progress)
        scores = evaluate_by_count(model, test_set, progress=progress)
        if args.intervals:  # evaluate_by_count has none: the overall test scores' intervals, apart
            intervals = evaluate_detection(model, test_set, intervals=args.intervals)["intervals"]
            scores["overall"]["intervals"] = intervals
        write_eval(run_dirs[label], cost["steps"], scores["overall"])
        variants_out[label] = {
            "overrides": dict(overrides),
            **cost,
            **scores,
            "validation": validation,
            "count_mae_11_20": mean_over_counts(scores["by_count"], "count_mae", 11, 20),
            "tight_boxes": with_tight_boxes(model, evaluate_by_count, test_set),
        }
        parse = model.parse(example_images.to(model.device))
        path = out / f"examples_{slug(label)}.png"
        fig = plot_scenes(
            example_images,
            [b.cpu() for b in parse.boxes],
            gt_boxes=[t["boxes"] for t in example_truth],
            reconstructions=parse.reconstruction.cpu(),
            titles=[example_title(int(t["count"]), len(b)) for t, b in zip(example_truth, parse.boxes)],
            path=path,
        )
        del fig
        figures[f"examples_{slug(label)}"] = str(path)

    conncomp = ConnComp(threshold=args.conncomp_threshold)
    cc = evaluate_by_count(conncomp, test_set)
    cc["count_mae_11_20"] = mean_over_counts(cc["by_count"], "count_mae", 11, 20)

    curves = {label: v["by_count"] for label, v in variants_out.items()} | {"ConnComp": cc["by_count"]}
    curves = {
        name: {c: {**m, "count_error": 1.0 - m["count_accuracy"]} for c, m in by_count.items()}
        for name, by_count in curves.items()
    }
    path = out / "by_count.png"
    plot_metrics_by_count(
        curves,
        {
            "ap_spair": "AP (IoU 0.1:0.1:0.9)",
            "count_mae": "absolute count error",
            "count_error": "0-1 count error",
        },
        xlabel="number of digits",
        title=f"trained on 48x48 crops of 84x84 scenes with {train_digits[0]}-{train_digits[1]} digits",
        path=path,
    )
    figures["by_count"] = str(path)

    record = {
        "experiment": script,
        "command": command,
        "machine": machine(),
        "settings": {
            **settings_record(args),
            "train_digits": train_digits,
            "train_crop": list(train_set.crop_size),
            "test_image_size": [84, 84],
            "test_counts": counts,
        },
        "train": train_record(args),
        "model": {label: model_record(**overrides) for label, overrides in variants.items()},
        "variants": variants_out,
        "conncomp": {"threshold": args.conncomp_threshold, **cc},
        "splits": splits,
        "digit_source": digit_source(train_set, val_set, test_set),
        "figures": figures,
    }
    write_record(out / f"{script}.json", record)

    rows = [
        {
            "name": label,
            **v["overall"],
            "mae_11_20": v["count_mae_11_20"],
            "steps": v["steps"],
            "minutes": v["train_seconds"] / 60,
        }
        for label, v in variants_out.items()
    ] + [{"name": "ConnComp", **cc["overall"], "mae_11_20": cc["count_mae_11_20"]}]
    columns = {
        "name": "",
        **SUMMARY_METRICS,
        "mae_11_20": "MAE 11-20",
        "steps": "steps",
        "minutes": "train min",
    }
    print(f"{script}: {len(test_set)} full 84x84 test scenes, 1..{args.max_count} digits")
    print(table(rows, columns))
    print(f"{script}: wrote {out / (script + '.json')} and figures in {out}")
    return record
