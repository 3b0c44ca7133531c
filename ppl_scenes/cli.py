"""The ``ppl-scenes`` command line: ``train``, ``eval``, ``sample``, ``demo`` and ``upgrade``.

::

    ppl-scenes train MODEL --out RUN_DIR [--steps N | --minutes M] [--dataset NAME] [--seed S]
                     [--device cpu|cuda] [--resume] [--data-root DIR] [--num-train N] [--num-test N]
                     [--no-progress] [KEY=VALUE ...]
    ppl-scenes eval RUN_DIR [--dataset NAME] [--num-test N] [--data-root DIR] [--json]
    ppl-scenes sample RUN_DIR [--num-samples N] [--out FILE] [--dataset NAME] [--data-root DIR]
    ppl-scenes demo [--out DIR] [--minutes M] [--steps N] [--data-root DIR] [--no-progress]
    ppl-scenes upgrade RUN_DIR [RUN_DIR ...]

Overrides of ``train``: ``KEY=VALUE`` sets a field of the model's config dataclass (e.g.
``what_dim=32``, ``cell_size=12,12``), ``train.KEY=VALUE`` a field of
:class:`~ppl_scenes.infer.trainer.TrainConfig` (e.g. ``train.batch_size=16``) and ``data.KEY=VALUE``
an argument of the dataset generator (e.g. ``data.num_scenes=2000``, ``data.num_digits=1,5``).

The run directory records the model, its config, the training settings and the data (generator
name and arguments) in ``config.json``, so ``eval`` and ``sample`` rebuild everything from it.

Bad input never ends in a traceback: the command prints ``ppl-scenes: error: <message>`` to stderr and
exits with status 2 (1 when training diverged). ``--json`` keeps stdout for the JSON object alone.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppl_scenes.models.base import PresenceBoxes, PriorSampling

__all__ = [
    "build_dataset",
    "fraction",
    "main",
    "non_negative_int",
    "parse_value",
    "positive_float",
    "positive_int",
]

PROG = "ppl-scenes"
#: Test scenes scored at the end of ``train``/``demo`` and by ``eval`` unless told otherwise.
DEFAULT_NUM_TEST = 500
#: Default wall-clock budget of ``ppl-scenes demo``, in minutes.
DEMO_MINUTES = 5.0
DEMO_MODEL = "spair"
#: Options of a generator that never go into ``config.json`` (they depend on the machine).
_MACHINE_KEYS = ("root",)


class CLIError(ValueError):
    """Bad command-line input (reported without a traceback, exit status 2)."""


# -- parsing values ------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A command-line value as a Python value.

    ``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, ``"none"`` -> None,
    ``"1,5"``, ``"[1,5]"`` or ``"(1,5)"`` -> ``(1, 5)``, ``'{"a": 1}'`` -> dict; anything else stays a
    string.
    """
    s = text.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(s)
    except Exception:  # literal_eval raises ValueError, SyntaxError, MemoryError, RecursionError...
        if "," in s:
            return tuple(parse_value(part) for part in s.split(","))
        return s
    return tuple(value) if isinstance(value, list) else value


def _typed_value(default: Any, text: str) -> Any:
    """Parse ``text`` for a config field whose default is ``default`` (the type decides how)."""
    if isinstance(default, str | bool):
        return text  # coerce_value reads strings for these itself ("yes", "off", "cuda:1", ...)
    value = parse_value(text)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise CLIError(f"expected a dict like '{{\"key\": value}}', got {text!r}")
    return value


def _coerced_fields(config, raw: dict[str, str], what: str) -> dict[str, Any]:
    """``raw`` (KEY -> text) converted to the types of ``config``'s fields and validated by it."""
    from ppl_scenes.config import replace_config

    fields = {f.name for f in dataclasses.fields(config)}
    parsed = {}
    for key, text in raw.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise CLIError(f"unknown {what} key {key!r} for {type(config).__name__}; valid keys: {valid}")
        try:
            parsed[key] = _typed_value(getattr(config, key), text)
        except CLIError as err:
            raise CLIError(f"{what} key {key!r}: {err}") from None
    new = replace_config(config, parsed)  # ValueError for bad types; __post_init__ for bad values
    return {key: getattr(new, key) for key in parsed}


def split_overrides(items: Sequence[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``KEY=VALUE`` items as (model config, ``train.`` settings, ``data.`` arguments), values as text."""
    model: dict[str, str] = {}
    train: dict[str, str] = {}
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"malformed override {item!r}: expected KEY=VALUE (e.g. what_dim=32)")
        target = model
        for prefix, group in (("train.", train), ("data.", data)):
            if key.startswith(prefix):
                key, target = key[len(prefix) :], group
                if not key:
                    raise CLIError(f"malformed override {item!r}: no key after {prefix!r}")
        if key in target:
            raise CLIError(f"override {item!r} sets {key!r} a second time")
        target[key] = value
    return model, train, data


# -- data ----------------------------------------------------------------------------------------
def _builder_params(name: str) -> tuple[set[str], bool]:
    """Keyword arguments the dataset builder ``name`` accepts, and whether it takes ``**kwargs``."""
    from ppl_scenes.data import DATASETS

    if name not in DATASETS:
        raise CLIError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    params = inspect.signature(DATASETS[name]).parameters.values()
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _data_kwargs(name: str, raw: dict[str, str]) -> dict[str, Any]:
    """``data.KEY=VALUE`` overrides parsed and checked against the builder's signature."""
    named, open_ended = _builder_params(name)
    kwargs = {}
    for key, text in raw.items():
        if key == "split":
            raise CLIError("data.split cannot be set: training uses 'train' and evaluation 'test'")
        if key not in named and not open_ended:
            valid = ", ".join(sorted(named - {"split"}))
            raise CLIError(f"unknown option {key!r} for dataset {name!r}; valid options: {valid}")
        kwargs[key] = parse_value(text)
    return kwargs


def _json_ready(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in _MACHINE_KEYS}


def _from_json(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments read back from ``config.json``: JSON lists become the tuples the generators take."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def build_dataset(name: str, split: str, kwargs: dict[str, Any], root: str | None = None):
    """``make_dataset(name, split, **kwargs)`` with ``root`` passed where the generator reads digits."""
    from ppl_scenes.data import make_dataset

    named, open_ended = _builder_params(name)
    kwargs = dict(kwargs)
    if root is not None and ("root" in named or open_ended):
        kwargs.setdefault("root", root)
    try:
        return make_dataset(name, split, **kwargs)
    except TypeError as err:  # an argument the generator behind **kwargs does not take
        raise CLIError(f"bad options for dataset {name!r}: {err}") from None


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


def _check_new_run_dir(out: Path) -> None:
    """Refuse (before any work) to write into a file or a non-empty directory."""
    from ppl_scenes.runs import RunDirError

    if out.exists() and not out.is_dir():
        raise RunDirError(f"{str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise RunDirError(
            f"run directory {str(out)!r} already exists and is not empty; "
            "pass --resume to continue it, or choose another --out"
        )


def _format_metrics(metrics: dict[str, Any]) -> str:
    labels = {
        "ap50": "AP@0.5",
        "ap_spair": "AP (IoU 0.1:0.9)",
        "ap_coco": "AP (IoU 0.5:0.95)",
        "count_accuracy": "count accuracy",
        "count_mae": "count MAE",
        "rmse": "reconstruction RMSE",
        "num_scenes": "test scenes",
        "step": "training step",
    }
    lines = []
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"  {labels.get(key, key):<22} {value}")
    return "\n".join(lines)


def _run_data(config: dict[str, Any]) -> dict[str, Any]:
    data = config.get("data")
    if not isinstance(data, dict) or "name" not in data:
        return {}
    return data


def _test_dataset(run_config: dict[str, Any], cls, name: str | None, num_test: int | None, root: str | None):
    """The test split for a trained run: its own data config, or dataset ``name`` with defaults."""
    data = _run_data(run_config)
    own = name is None or name == data.get("name")
    if own and data:
        name, kwargs = data["name"], _from_json(data.get("kwargs", {}))
        root = root if root is not None else data.get("root")
        if num_test is None:
            num_test = data.get("num_test", DEFAULT_NUM_TEST)
    else:
        name = name or cls.default_dataset
        kwargs = dict(cls.default_data_kwargs) if name == cls.default_dataset else {}
    kwargs["num_scenes"] = num_test or DEFAULT_NUM_TEST
    return name, build_dataset(name, "test", kwargs, root)


def evaluate(model, dataset, progress: bool = True) -> dict[str, Any]:
    """``model.evaluate(dataset)`` with a progress bar."""
    return model.evaluate(dataset, progress=progress)


def _load_run(run_dir: str):
    from ppl_scenes.models import MODELS
    from ppl_scenes.runs import load, read_config

    config = read_config(run_dir)
    model = load(run_dir)
    return model, config, MODELS[config["model"]]


# -- train ---------------------------------------------------------------------------------------
def _check_resume_settings(stored, cls, model_raw, data_raw, dataset, num_train, seed, train_raw) -> None:
    """A resumed run keeps its model, data and seed: the run's own values may be given again, others
    are refused, each named with the stored value."""
    from ppl_scenes.config import replace_config

    differ = []
    stored_model = stored.get("model_config") or {}
    if model_raw:
        given = _coerced_fields(replace_config(cls.config_class(), stored_model), model_raw, "model config")
        own = replace_config(cls.config_class(), stored_model)
        differ += [
            f"{k}={model_raw[k]} (the run has {getattr(own, k)!r})"
            for k, v in given.items()
            if v != getattr(own, k)
        ]
    data = _run_data(stored)
    kwargs = _from_json(data.get("kwargs", {}))
    for key, text in data_raw.items():
        if parse_value(text) != kwargs.get(key):
            differ.append(f"data.{key}={text} (the run has {kwargs.get(key)!r})")
    if dataset is not None and dataset != data.get("name"):
        differ.append(f"--dataset {dataset} (the run has {data.get('name')!r})")
    if num_train is not None and num_train != kwargs.get("num_scenes"):
        differ.append(f"--num-train {num_train} (the run has {kwargs.get('num_scenes')!r})")
    run_seed = (stored.get("train_config") or {}).get("seed", stored.get("seed"))
    for flag, given in (("--seed", seed), ("train.seed", train_raw.get("seed"))):
        if given is not None and int(given) != run_seed:
            differ.append(f"{flag} {given} (the run has {run_seed})")
    if differ:
        raise CLIError(f"a resumed run keeps its model, data and seed; these differ: {'; '.join(differ)}")


def _train(
    model_name: str,
    out: Path,
    *,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    minutes: float | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    resume: bool = False,
    data_root: str | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    progress: bool = True,
    command: str | None = None,
):
    """Build (or restore) model and data, train, evaluate on the test split; returns (model, test set)."""
    import pyro

    from ppl_scenes.infer import fit
    from ppl_scenes.infer.trainer import TrainConfig
    from ppl_scenes.models import MODELS
    from ppl_scenes.runs import EVAL_FILE, RunDirError, build_model, read_config, write_json

    if model_name not in MODELS:
        raise CLIError(f"unknown model {model_name!r}; known models: {', '.join(sorted(MODELS))}")
    cls = MODELS[model_name]
    model_raw, train_raw, data_raw = split_overrides(overrides)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}

    if resume:
        stored = read_config(out)
        if stored["model"] != model_name:
            raise CLIError(f"{str(out)!r} holds a {stored['model']!r} run, not {model_name!r}")
        _check_resume_settings(stored, cls, model_raw, data_raw, dataset, num_train, seed, train_raw)
        try:
            model = build_model(model_name, stored.get("model_config"))
        except ValueError as err:
            raise RunDirError(f"{out / 'config.json'}: {err}") from None
        data = _run_data(stored)
        if not data:
            raise RunDirError(f"{out / 'config.json'} does not say which data the run was trained on")
        data_name, train_kwargs = data["name"], _from_json(data.get("kwargs", {}))
        root = data_root if data_root is not None else data.get("root")
        num_test = num_test or data.get("num_test", DEFAULT_NUM_TEST)
        settings = {k: v for k, v in (stored.get("train_config") or {}).items() if k in train_fields}
        if steps is not None:
            settings["minutes"] = 0.0  # --steps N on resume: go on to step N, whatever the old budget
    else:
        _check_new_run_dir(out)
        model_config = _coerced_fields(cls.config_class(), model_raw, "model config")
        data_name = dataset or cls.default_dataset
        train_kwargs = dict(cls.default_data_kwargs) if data_name == cls.default_dataset else {}
        train_kwargs.update(_data_kwargs(data_name, data_raw))
        if num_train is not None:
            if "num_scenes" in data_raw:
                raise CLIError("give either --num-train or data.num_scenes, not both")
            train_kwargs["num_scenes"] = num_train
        root = data_root if data_root is not None else train_kwargs.pop("root", None)
        num_test = num_test or DEFAULT_NUM_TEST
        settings = {}

    settings.update(_coerced_fields(TrainConfig(), train_raw, "training"))
    if seed is not None:
        settings["seed"] = seed
    if not resume:
        # The seed decides the initial weights too, so seed before the model is built.
        pyro.set_rng_seed(settings.get("seed", cls.default_train.get("seed", TrainConfig.seed)))
        model = cls(dataclasses.replace(cls.config_class(), **model_config))
    if steps is not None:
        settings["steps"] = steps
    if minutes is not None:
        settings["minutes"] = minutes
    if device is not None:
        settings["device"] = device

    train_set = build_dataset(data_name, "train", train_kwargs, root)
    test_set = build_dataset(data_name, "test", {**train_kwargs, "num_scenes": num_test}, root)
    run_info = {
        "data": {
            "name": data_name,
            "kwargs": _json_ready(train_kwargs),
            "num_test": num_test,
            "root": root,
        },
        "command": command,
    }
    _info(f"{PROG}: training {model_name} on {len(train_set)} {data_name!r} scenes -> {out}")
    start = time.perf_counter()
    fit(
        model,
        train_set,
        out=out,
        resume=resume,
        eval_fn=lambda m: evaluate(m, test_set, progress),
        progress=progress,
        run_info=run_info,
        **settings,
    )
    seconds = time.perf_counter() - start
    eval_path = out / EVAL_FILE
    metrics = json.loads(eval_path.read_text())
    metrics = {"dataset": data_name, **metrics}
    write_json(eval_path, metrics)
    return model, test_set, metrics, seconds


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _, _, metrics, seconds = _train(
        args.model,
        out,
        overrides=args.overrides,
        steps=args.steps,
        minutes=args.minutes,
        dataset=args.dataset,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        data_root=args.data_root,
        num_train=args.num_train,
        num_test=args.num_test,
        progress=not args.no_progress,
        command=args.command_line,
    )
    print(f"trained {args.model} to step {metrics.get('step')} in {seconds / 60:.1f} min")
    print(f"test metrics ({metrics.get('dataset')}):")
    print(_format_metrics({k: v for k, v in metrics.items() if k not in ("dataset", "step")}))
    print(f"run directory: {out}  (config.json, weights.safetensors, state.*, metrics.jsonl, eval.json)")
    return 0


# -- eval ----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from ppl_scenes.runs import EVAL_FILE, strict_json, write_json

    model, config, cls = _load_run(args.run_dir)
    name, test_set = _test_dataset(config, cls, args.dataset, args.num_test, args.data_root)
    metrics = {"dataset": name, "step": model.step, **evaluate(model, test_set)}
    own = name == _run_data(config).get("name", cls.default_dataset)
    path = Path(args.run_dir) / (EVAL_FILE if own else f"eval-{name}.json")
    write_json(path, metrics)
    if args.json:
        args.stdout.write(json.dumps(strict_json(metrics), allow_nan=False) + "\n")
    else:
        print(f"{config['model']} at step {model.step} on {len(test_set)} {name!r} test scenes:")
        print(_format_metrics({k: v for k, v in metrics.items() if k not in ("dataset", "step")}))
        print(f"written to {path}")
    return 0


# -- sample --------------------------------------------------------------------------------------
def _first_scenes(test_set, n: int):
    """The first ``n`` (at most) scenes of ``test_set``: stacked images and their targets."""
    import torch

    items = [test_set[i] for i in range(min(n, len(test_set)))]
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def _posterior_figure(model, test_set, n: int, path: Path) -> Path:
    from ppl_scenes.metrics.scoring import parse_options
    from ppl_scenes.viz import plot_scenes

    images, targets = _first_scenes(test_set, n)
    n = len(images)
    parse = model.parse(images.to(model.device), **parse_options(model, targets))
    boxes = [b.cpu() for b in parse.boxes]
    truth = [t["boxes"] for t in targets]
    titles = [f"{len(b)} found / {int(t['count'])} true" for b, t in zip(boxes, targets)]
    recon = None if parse.reconstruction is None else parse.reconstruction.cpu().clamp(0, 1)
    plot_scenes(images, boxes, gt_boxes=truth, reconstructions=recon, titles=titles, path=path, max_images=n)
    return path


def _prior_figure(model, n: int, image_size: tuple[int, int], path: Path) -> Path | None:
    """Images drawn from the model's prior, when ``model.model`` can generate (``x=None``)."""
    import torch

    from ppl_scenes.viz import plot_scenes

    if not isinstance(model, PriorSampling):
        return None
    with torch.no_grad():
        canvas = model.model(None, batch_size=n, image_size=image_size)
    if not isinstance(canvas, torch.Tensor) or canvas.dim() != 4:
        return None
    titles = [f"prior sample {i + 1}" for i in range(n)]
    fig = plot_scenes(canvas.detach().cpu().clamp(0, 1), titles=titles, max_images=n)
    fig.axes[0].set_ylabel("prior")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _posterior_sample_figures(model, test_set, n: int, draws: int, out: Path) -> tuple[Path, Path] | None:
    """Boxes of ``draws`` posterior draws on ``n`` test scenes, and their count posteriors."""
    from ppl_scenes.infer.posterior import count_posterior, posterior_boxes, sample_posterior
    from ppl_scenes.viz import plot_count_posterior, plot_posterior_boxes

    if not isinstance(model, PresenceBoxes):
        return None
    images, targets = _first_scenes(test_set, n)
    n, images = len(images), images.to(model.device)
    samples = sample_posterior(model, images, num_samples=draws)
    counts = count_posterior(samples["z_pres"].cpu())
    boxes = [[b.cpu() for b in per_image] for per_image in posterior_boxes(model, samples, images.shape[-2:])]
    truth = [int(t["count"]) for t in targets]
    titles = [f"{m:.1f} found ({t} true)" for m, t in zip(counts.mean.tolist(), truth)]
    box_path = out.with_name(f"{out.stem}-posterior{out.suffix}")
    count_path = out.with_name(f"{out.stem}-counts{out.suffix}")
    gt = [t["boxes"] for t in targets]
    plot_posterior_boxes(images.cpu(), boxes, gt_boxes=gt, titles=titles, path=box_path, max_images=n)
    plot_count_posterior(counts.probs, path=count_path, true_counts=truth, max_images=n)
    return box_path, count_path


def cmd_sample(args: argparse.Namespace) -> int:
    model, config, cls = _load_run(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.png"
    _, test_set = _test_dataset(config, cls, args.dataset, args.num_samples, args.data_root)
    posterior = _posterior_figure(model, test_set, args.num_samples, out)
    print(f"posterior parses of {min(args.num_samples, len(test_set))} test scenes: {posterior}")
    sampled = _posterior_sample_figures(model, test_set, args.num_samples, args.num_draws, out)
    if sampled is not None:
        print(f"boxes of {args.num_draws} posterior draws per scene: {sampled[0]}")
        print(f"posterior over the number of objects: {sampled[1]}")
    image_size = tuple(test_set[0][0].shape[-2:])
    prior = _prior_figure(model, args.num_samples, image_size, out.with_name(f"{out.stem}-prior{out.suffix}"))
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


def cmd_demo(args: argparse.Namespace) -> int:
    from ppl_scenes.runs import METRICS_FILE
    from ppl_scenes.viz import plot_curves

    out = Path(args.out) if args.out else _free_demo_dir()
    minutes = args.minutes if args.minutes is not None else (None if args.steps else DEMO_MINUTES)
    budget = f"{minutes:g} min" if minutes else f"{args.steps} steps"
    _info(f"{PROG} demo: SPAIR on scattered MNIST digits, {budget} of CPU training")
    model, test_set, metrics, seconds = _train(
        DEMO_MODEL,
        out,
        steps=args.steps,
        minutes=minutes,
        data_root=args.data_root,
        progress=not args.no_progress,
        command=args.command_line,
    )
    figure = _posterior_figure(model, test_set, 8, out / "demo.png")
    curves = plot_curves(out / METRICS_FILE, keys=("loss",), path=out / "loss.png")
    del curves
    print(f"SPAIR trained for {metrics.get('step')} steps in {seconds / 60:.1f} min")
    print(f"test metrics on {metrics.get('num_scenes')} unseen scenes:")
    print(_format_metrics({k: v for k, v in metrics.items() if k not in ("dataset", "step", "num_scenes")}))
    print("files:")
    print(f"  {figure}  test images with inferred (blue) and true (yellow) boxes, reconstructions below")
    print(f"  {out / 'eval.json'}  the metrics above")
    print(f"  {out / 'loss.png'}  training loss (-ELBO per image)")
    print(f"  {out}/  the run: evaluate again with `{PROG} eval {out}`, resume with")
    print(f"       `{PROG} train spair --out {out} --resume --minutes M`")
    return 0


# -- upgrade -------------------------------------------------------------------------------------
def cmd_upgrade(args: argparse.Namespace) -> int:
    from ppl_scenes.rundir import upgrade

    for run_dir in args.run_dirs:
        converted = upgrade(run_dir)
        done = f"converted {', '.join(converted)} (kept as *.legacy)" if converted else "nothing to convert"
        print(f"{run_dir}: {done}")
    return 0


# -- parser and entry point ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-scenes`` (one subcommand per verb)."""
    from ppl_scenes._version import __version__
    from ppl_scenes.models import MODELS

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate and sample object-centric scene models (Pyro).",
        epilog=f"Run `{PROG} VERB --help` for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{train,eval,sample,demo,upgrade}")

    def data_root(p):
        p.add_argument(
            "--data-root",
            metavar="DIR",
            help="MNIST root (default: $PPL_SCENES_DATA, else ~/.cache/ppl_scenes)",
        )

    train = verbs.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train MODEL and write a run directory; ends with an evaluation on test scenes.",
        epilog="Overrides: KEY=VALUE (model config), train.KEY=VALUE (TrainConfig), data.KEY=VALUE "
        "(dataset generator), e.g. what_dim=32 train.batch_size=16 data.num_digits=1,5",
    )
    train.add_argument("model", metavar="MODEL", help=f"model name: {', '.join(sorted(MODELS))}")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (new, or --resume)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, metavar="N", help="optimisation steps")
    budget.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help="wall-clock budget (total, resumes included); the config's steps stay an upper bound",
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
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    train.set_defaults(func=cmd_train)

    ev = verbs.add_parser(
        "eval",
        help="evaluate a trained run on test scenes",
        description="Evaluate a run on the test split of its dataset (or another) and write eval.json.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--dataset", metavar="NAME", help="dataset (default: the run's)")
    ev.add_argument("--num-test", type=positive_int, metavar="N", help="test scenes (default: the run's)")
    data_root(ev)
    ev.add_argument("--json", action="store_true", help="print only a JSON object on stdout")
    ev.set_defaults(func=cmd_eval)

    sample = verbs.add_parser(
        "sample",
        help="figure of posterior parses (and prior samples)",
        description="Parse test scenes and draw them with inferred boxes and reconstructions; "
        "when the model can sample its prior, also FILE-prior.png.",
    )
    sample.add_argument("run_dir", metavar="RUN_DIR")
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
    args.command_line = shlex.join([PROG, *argv])
    args.stdout = sys.stdout

    from ppl_scenes.infer.trainer import TrainingDiverged

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
    except KeyboardInterrupt:
        _error("interrupted (a run resumes from its last checkpoint with `train ... --resume`)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
