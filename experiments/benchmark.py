"""One harness, one cross-model table (issue 34): every model on the same test scenes of one task.

    python experiments/benchmark.py --task scattered
    python experiments/benchmark.py --task multiscale --run spair=RUN_DIR --run ssdir=RUN_DIR2

Each model (``spair``, ``gmair``, ``ssdir``, ``saccade``, ``mist``: the package's pretrained model,
or a trained run directory given by ``--run NAME=RUN_DIR``) and the connected-components baseline
parse the SAME test scenes (``split="test"``, ``--seed``, ``--num-test``) and are scored by
``ppl_scenes.metrics.evaluate_detection`` (AP@0.5, AP .5:.95, count accuracy, with bootstrap
intervals) and ``evaluate_by_count`` (per true count). Per model the record also holds the inference
milliseconds per image (median of timed ``parse`` passes on one batch, after a warm-up, the models
timed in turns), the parse's peak memory (peak RSS of a fresh child process, see ``MEMORY_METHOD``),
the parameters, and the training CPU minutes (the model card's, or the run's ``metrics.jsonl``).
``--device cuda`` adds GPU numbers (inference images/s and training step time per batch size).

A model that cannot be scored on the task is reported with the reason, never dropped: the saccade
model predicts per image (no boxes); a model that is neither shipped nor given by ``--run`` is
"missing". How each model parses the task is in its ``notes``: MIST with ``count_from_labels`` is told
the true counts (an advantage); SSDIR parses a fixed input size, so larger images go in overlapping
tiles (``ppl_scenes.files.tile_parse``) and smaller ones padded; a model trained on other scenes is
applied anyway, out of its training distribution. ConnComp's threshold is chosen on validation
scenes (``split="val"``, ``--val-seed``), never on the test scenes.

Writes ``OUT/<task>.json`` (default ``benchmarks/benchmark/``) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyro
import torch
from _common import (
    command_line,
    finite,
    fraction,
    machine,
    non_negative_int,
    positive_int,
    table,
    write_record,
)

from ppl_scenes import Upscaled, fit, load, make_dataset, pretrained, pretrained_info, pretrained_names
from ppl_scenes.baselines import ConnComp
from ppl_scenes.files import tile_parse
from ppl_scenes.metrics import evaluate_by_count, evaluate_detection, parse_options
from ppl_scenes.rundir import read_config, read_metrics
from ppl_scenes.scene import ImageLevel, RankedParse, SceneParse, TargetedParse, TiledParse

NAME = "benchmark"
ROOT = Path(__file__).resolve().parents[1]

#: The models of the table, in its order (ConnComp comes last).
MODEL_NAMES = ("spair", "gmair", "ssdir", "mist", "saccade")

#: The tasks: the generator and its keyword arguments (the test scenes' canvas and counts).
TASKS: dict[str, dict[str, Any]] = {
    "scattered": {"dataset": "scattered", "kwargs": {"canvas_size": 48, "num_digits": [1, 5]}},
    "multiscale": {"dataset": "multiscale", "kwargs": {}},
}

#: ConnComp's thresholds tried on the validation scenes: the generators' ink threshold .. its default.
CONNCOMP_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)

MEMORY_METHOD = (
    "a fresh child process per model loads the model and the timing batch, resets the kernel's peak-RSS "
    "mark (/proc/self/clear_refs = 5), parses the batch once and reports VmHWM - VmRSS-before (MB): "
    "the parse's peak working memory over the loaded model; peak_rss_mb is the child's whole peak RSS "
    "(VmHWM after the parse; ru_maxrss where /proc is missing, then the delta is a lower bound)"
)


# -- flags -----------------------------------------------------------------------------------------
def run_item(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--run takes NAME=RUN_DIR, got {item!r}")
    return name, path


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="scattered", help="the shared task")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", metavar="DIR", help="where <task>.json goes")
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(MODEL_NAMES),
        metavar="NAME",
        help="models of the table (each pretrained, or given by --run)",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        type=run_item,
        metavar="NAME=RUN_DIR",
        help="score the trained run directory as NAME instead of the pretrained model (repeatable)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=101, help="seed of the test scenes")
    parser.add_argument("--num-test", type=positive_int, default=500, help="test scenes")
    parser.add_argument(
        "--val-seed", type=non_negative_int, default=202, help="seed of the validation scenes"
    )
    parser.add_argument(
        "--num-val", type=positive_int, default=200, help="validation scenes (ConnComp's tau)"
    )
    parser.add_argument(
        "--conncomp-thresholds",
        type=fraction,
        nargs="+",
        default=list(CONNCOMP_THRESHOLDS),
        metavar="TAU",
        help="ConnComp thresholds tried on the validation scenes (best AP@0.5, then count accuracy)",
    )
    parser.add_argument("--intervals", type=non_negative_int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="scenes per parse (scoring, timing)"
    )
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed passes per model")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed passes per model first")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads, for every model")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model memory child processes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda adds GPU numbers")
    parser.add_argument(
        "--gpu-batch-sizes", type=positive_int, nargs="+", default=[1, 8, 32, 128], metavar="B"
    )
    parser.add_argument(
        "--gpu-steps", type=positive_int, default=6, help="training steps timed per batch size"
    )
    parser.add_argument("--data-root", metavar="DIR", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never download MNIST")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # the child process's job (JSON)
    return parser


# -- the scenes ----------------------------------------------------------------------------------
def scenes(
    task: str, split: str, num: int, seed: int, root: str | None, download: bool, first: int | None = None
) -> list:
    """The ``(image, target)`` pairs of the task's ``split`` (only the ``first`` ones when given)."""
    spec = TASKS[task]
    dataset = make_dataset(
        spec["dataset"], split, num_scenes=num, seed=seed, root=root, download=download, **spec["kwargs"]
    )
    return [dataset[i] for i in range(min(len(dataset), first or len(dataset)))]


def fingerprint(items: list) -> str:
    """sha256 of the scenes' images and true boxes: equal fingerprints, equal scenes."""
    h = hashlib.sha256()
    for image, target in items:
        h.update(image.contiguous().numpy().tobytes())
        h.update(torch.as_tensor(target["boxes"], dtype=torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# -- models ----------------------------------------------------------------------------------------
class Tiled:
    """A fixed-input (or K-object) model parsing each image in overlapping tiles (or padded)."""

    def __init__(self, model):
        self.model = model
        self.name = model.name

    @property
    def device(self):
        return self.model.device

    def parse(self, x, score_threshold: float | None = None) -> SceneParse:
        parts = [tile_parse(self.model, image, threshold=score_threshold) for image in x]
        labels = None if any(p.labels is None for p in parts) else [p.labels[0] for p in parts]
        recon = None
        if all(p.reconstruction is not None for p in parts):
            recon = torch.cat([p.reconstruction for p in parts])
        return SceneParse(
            boxes=[p.boxes[0] for p in parts],
            scores=[p.scores[0] for p in parts],
            labels=labels,
            reconstruction=recon,
        )


class RankedTiled(Tiled, RankedParse):
    """:class:`Tiled` for a model whose parse keeps ranked candidates."""

    @property
    def presence_threshold(self) -> float:
        return float(self.model.presence_threshold)


def adapt(model, image_size: tuple[int, int]) -> tuple[Any, list[str], str]:
    """``(what to parse with, notes, how)``; raises NotApplicable for a model without boxes."""
    if isinstance(model, ImageLevel):
        raise NotApplicable(
            "image-level model: it predicts labels per image; its boxes are glimpses, not objects, "
            "so there is nothing to detect or count"
        )
    if isinstance(model, TargetedParse) and model.requires_targets:
        return model, ["told the true number of objects per scene (count_from_labels): an advantage"], "whole"
    if isinstance(model, TiledParse):
        tile = tuple(int(s) for s in model.parse_tile)
        wrapper = RankedTiled if isinstance(model, RankedParse) else Tiled
        h, w = image_size
        if model.fixed_input and tile != (h, w):
            how = "padded" if tile[0] >= h and tile[1] >= w else "tiles"
            text = f"fixed {tile[0]}x{tile[1]} input: " + (
                "images padded" if how == "padded" else "overlapping tiles merged by NMS"
            )
            return wrapper(model), [text], how
        if not model.fixed_input and (h > tile[0] or w > tile[1]):
            return wrapper(model), [f"parsed in overlapping {tile[0]}x{tile[1]} tiles merged by NMS"], "tiles"
    return model, [], "whole"


class NotApplicable(Exception):
    """The model cannot be scored on the task (the reason is the message)."""


def source_of(name: str, runs: dict[str, str]) -> dict[str, Any] | None:
    if name in runs:
        return {"kind": "run", "run_dir": runs[name]}
    if name in pretrained_names():
        return {"kind": "pretrained", "name": name}
    return None


def load_source(source: dict[str, Any]):
    if source["kind"] == "run":
        return load(source["run_dir"])
    if source["kind"] == "pretrained":
        return pretrained(source["name"])
    return ConnComp(threshold=source["threshold"])


def provenance(source: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from, what they were trained on, how long, with which preset."""
    if source["kind"] == "pretrained":
        card = pretrained_info(source["name"])
        return {
            "source": {**source, "sha256": card.get("sha256"), "command": card.get("command")},
            "trained_on": {"dataset": card.get("dataset"), "kwargs": card.get("data_kwargs")},
            "preset": card.get("preset"),
            "steps": card.get("steps"),
            "train_cpu_minutes": card.get("cpu_minutes"),
            "train_minutes_from": "model card cpu_minutes",
        }
    if source["kind"] == "run":
        config = read_config(source["run_dir"])
        metrics = read_metrics(source["run_dir"])
        last = metrics[-1] if metrics else {}
        seconds = last.get("seconds")
        data = config.get("data") or {}
        command = config.get("command") or ""
        preset = config.get("preset")
        if preset is None and "--preset" in command.split():
            words = command.split()
            preset = words[words.index("--preset") + 1] if words.index("--preset") + 1 < len(words) else None
        return {
            "source": {**source, "command": command or None},
            "trained_on": {"dataset": data.get("name"), "kwargs": data.get("kwargs")},
            "preset": preset,
            "steps": last.get("step"),
            "train_cpu_minutes": None if seconds is None else round(float(seconds) / 60, 2),
            "train_minutes_from": "run metrics.jsonl seconds (wall clock of training, its own threads: "
            f"{config.get('torch_threads', 'not recorded')})",
        }
    return {
        "source": {"kind": "baseline", "threshold": source["threshold"]},
        "trained_on": None,
        "preset": None,
        "steps": 0,
        "train_cpu_minutes": 0.0,
        "train_minutes_from": "no training",
    }


def num_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters())) if hasattr(model, "parameters") else 0


def distribution_note(task: str, trained_on: dict[str, Any] | None) -> list[str]:
    if not trained_on or trained_on.get("dataset") is None:
        return []
    spec = TASKS[task]
    kwargs = trained_on.get("kwargs") or {}
    same = trained_on["dataset"] == spec["dataset"] and all(
        kwargs.get(k, v) == v for k, v in spec["kwargs"].items() if k == "canvas_size"
    )
    if same:
        return []
    size = kwargs.get("canvas_size")
    canvas = f" ({size}x{size} canvases)" if isinstance(size, int) else ""
    return [f"trained on {trained_on['dataset']}{canvas}: out of its training distribution here"]


# -- ConnComp's threshold, on validation scenes ---------------------------------------------------
def choose_conncomp(args, batch_size: int) -> dict[str, Any]:
    val = scenes(args.task, "val", args.num_val, args.val_seed, args.data_root, not args.no_download)
    grid = {}
    for tau in args.conncomp_thresholds:
        s = evaluate_detection(ConnComp(threshold=tau), val, batch_size=batch_size)
        grid[str(tau)] = {k: s[k] for k in ("ap50", "ap_coco", "count_accuracy", "count_mae")}

    def key(tau):
        s = grid[str(tau)]
        return (s["ap50"] if s["ap50"] == s["ap50"] else -1.0, s["count_accuracy"])

    chosen = max(args.conncomp_thresholds, key=key)
    return {
        "split": "val",
        "seed": args.val_seed,
        "num_scenes": len(val),
        "criterion": "AP@0.5, then count accuracy",
        "scores": grid,
        "chosen_threshold": chosen,
        "scenes_sha256": fingerprint(val),
    }


# -- timing and memory -------------------------------------------------------------------------------
def time_models(parsers: dict[str, Any], batch: list, repeats: int, warmup: int) -> dict[str, dict]:
    """Median ms per image of ``parse`` on one batch, the models timed in turns (rotating order)."""
    images = torch.stack([im for im, _ in batch])
    targets = [t for _, t in batch]
    options = {n: parse_options(p, targets) for n, p in parsers.items()}
    with torch.no_grad():
        for name, p in parsers.items():
            for _ in range(warmup):
                p.parse(images.to(p.device), **options[name])
        times: dict[str, list[float]] = {n: [] for n in parsers}
        names = list(parsers)
        for rep in range(repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                p = parsers[name]
                x = images.to(p.device)
                start = time.perf_counter()
                p.parse(x, **options[name])
                times[name].append(time.perf_counter() - start)
    return {
        n: {
            "ms_per_image": 1000 * statistics.median(t) / len(images),
            "batch_ms": [round(1000 * v, 3) for v in t],
        }
        for n, t in times.items()
    }


def _proc_status() -> dict[str, float] | None:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = float(value.split()[0]) / 1024  # kB -> MB
    return out if len(out) == 2 else None


def memory_probe(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: load the model and the batch, then the peak RSS of one parse (MB)."""
    torch.set_num_threads(job["threads"])
    batch = scenes(
        job["task"],
        "test",
        job["num_test"],
        job["seed"],
        job["data_root"],
        job["download"],
        job["batch_size"],
    )
    images = torch.stack([im for im, _ in batch])
    targets = [t for _, t in batch]
    model = load_source(job["source"])
    try:
        parser, _, _ = adapt(model, tuple(images.shape[-2:]))
    except NotApplicable:
        parser = model
    options = parse_options(parser, targets)
    gc.collect()
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    before = _proc_status()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        parser.parse(images, **options)
    after = _proc_status()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if reset and before and after:
        return {
            "parse_peak_mb": round(after["VmHWM"] - before["VmRSS"], 2),
            "peak_rss_mb": round(after["VmHWM"], 2),
            "method": "VmHWM after clear_refs",
        }
    return {
        "parse_peak_mb": round(maxrss_after - maxrss_before, 2),
        "peak_rss_mb": round(maxrss_after, 2),
        "method": "ru_maxrss delta (lower bound)",
    }


def measure_memory(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = str(job["threads"])
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-probe", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(Path(__file__).resolve().parent),
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- GPU --------------------------------------------------------------------------------------------
def gpu_numbers(model, args, test: list, device: str = "cuda") -> dict[str, Any]:
    """Inference images/s and training step time per batch size on the GPU (errors recorded).

    ``device="cpu"`` runs the same measurements on the CPU (the tests' smoke run of this path).
    """
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    out: dict[str, Any] = {"device": name, "inference": {}, "train_step": {}}
    sizes = args.gpu_batch_sizes
    pool = torch.stack([im for im, _ in test])
    targets = [t for _, t in test]

    def batch_of(size):
        idx = [i % len(pool) for i in range(size)]
        return pool[idx], [targets[i] for i in idx]

    gpu_model = copy.deepcopy(model).to(device).eval()
    try:
        parser, _, _ = adapt(gpu_model, tuple(pool.shape[-2:]))
    except NotApplicable:
        parser = gpu_model
    for size in sizes:
        try:
            images, tg = batch_of(size)
            images = images.to(device)
            options = parse_options(parser, tg)
            options = {k: v.to(device) if torch.is_tensor(v) else v for k, v in options.items()}
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                for _ in range(max(1, args.warmup)):
                    parser.parse(images, **options)
                sync()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    parser.parse(images, **options)
                    sync()
                    times.append(time.perf_counter() - start)
            out["inference"][str(size)] = {
                "images_per_s": size / statistics.median(times),
                "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            }
        except Exception as err:  # noqa: BLE001 (recorded: one batch size must not stop the table)
            out["inference"][str(size)] = {"error": f"{type(err).__name__}: {err}"}
    train = scenes(args.task, "train", max(sizes) * 2, args.seed + 1, args.data_root, not args.no_download)
    if isinstance(model, TiledParse) and model.fixed_input:  # SSDIR trains at its own input size
        train = Upscaled(train, tuple(model.config.image_size))
    if isinstance(model, ImageLevel):  # learns from image labels: cluttered scenes (at least 100 px)
        train = make_dataset(
            "cluttered",
            "train",
            num_scenes=max(sizes) * 2,
            seed=args.seed + 1,
            canvas_size=max(100, *pool.shape[-2:]),
            root=args.data_root,
            download=not args.no_download,
        )
    for size in sizes:
        try:
            seconds = {}
            for steps in (1, 1 + args.gpu_steps):
                pyro.clear_param_store()
                fresh = type(model)(copy.deepcopy(model.config))  # untrained, the same architecture
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    run_dir = Path(tmp) / "run"
                    fit(
                        fresh, train, steps=steps, batch_size=size, device=device, progress=False, out=run_dir
                    )
                    sync()
                    seconds[steps] = time.perf_counter() - start
            out["train_step"][str(size)] = {
                "step_ms": 1000 * (seconds[1 + args.gpu_steps] - seconds[1]) / args.gpu_steps,
                "method": f"(fit of {1 + args.gpu_steps} steps - fit of 1 step) / {args.gpu_steps}, "
                "an untrained model of the same config",
            }
        except Exception as err:  # noqa: BLE001
            out["train_step"][str(size)] = {"error": f"{type(err).__name__}: {err}"}
    return out


# -- the harness ---------------------------------------------------------------------------------------
COLUMNS = {
    "name": "model",
    "trained": "trained on",
    "ap50": "AP@.5",
    "ap_coco": "AP.5:.95",
    "count_accuracy": "count acc",
    "ms": "ms/img",
    "mem": "peak MB",
    "parameters": "params",
    "minutes": "train min",
    "note": "note",
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    runs = dict(args.run)
    names = list(dict.fromkeys([*args.models, *runs]))
    command = command_line(NAME, argv)
    progress = not args.no_progress
    download = not args.no_download

    test = scenes(args.task, "test", args.num_test, args.seed, args.data_root, download)
    image_size = tuple(test[0][0].shape[-2:])
    test_print = fingerprint(test)
    batch = test[: args.batch_size]
    conncomp_val = choose_conncomp(args, args.batch_size)
    tau = conncomp_val["chosen_threshold"]

    rows: list[dict[str, Any]] = []
    parsers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    sources: dict[str, dict[str, Any]] = {}
    for name in names:
        source = source_of(name, runs)
        if source is None:
            rows.append(
                {
                    "name": name,
                    "status": "missing",
                    "reason": "no pretrained weights shipped and no --run given",
                    "notes": [],
                }
            )
            continue
        model = load_source(source).eval()
        info = provenance(source)
        row = {
            "name": name,
            "model": model.name,
            **info,
            "parameters": num_parameters(model),
            "notes": distribution_note(args.task, info["trained_on"]),
        }
        try:
            parse_with, notes, how = adapt(model, image_size)
            row["notes"] += notes
            row["parse"] = how
            row["status"] = "scored"
        except NotApplicable as reason:
            row.update(status="n/a", reason=str(reason), parse=None)
            parse_with = model  # timed and measured all the same: it does parse the images
        if isinstance(model, TiledParse) and "mist" in model.name and row["status"] == "scored":
            row["notes"].append("boxes are its square patches, scored against the true (ink) boxes")
        rows.append(row)
        parsers[name] = parse_with
        models[name] = model
        sources[name] = source
    conncomp = ConnComp(threshold=tau)
    rows.append(
        {
            "name": "conncomp",
            "model": "conncomp",
            **provenance({"kind": "conncomp", "threshold": tau}),
            "parameters": 0,
            "notes": [f"threshold {tau} chosen on validation scenes"],
            "parse": "whole",
            "status": "scored",
        }
    )
    parsers["conncomp"] = conncomp
    models["conncomp"] = conncomp
    sources["conncomp"] = {"kind": "conncomp", "threshold": tau}

    for row in rows:
        if row["status"] != "scored":
            continue
        name = row["name"]
        if progress:
            print(f"{NAME}: scoring {name} on {len(test)} {args.task} test scenes", file=sys.stderr)
        try:
            scores = evaluate_detection(
                parsers[name], test, batch_size=args.batch_size, progress=progress, intervals=args.intervals
            )
            by_count = evaluate_by_count(parsers[name], test, batch_size=args.batch_size)["by_count"]
        except (ValueError, RuntimeError) as err:  # e.g. other channels: reported, not dropped
            row.update(status="n/a", reason=f"cannot parse these scenes: {type(err).__name__}: {err}")
            parsers.pop(name)
            continue
        row["scores"] = scores
        row["by_count"] = by_count
        row["test_scenes_sha256"] = test_print

    timings = time_models(parsers, batch, args.repeats, args.warmup)
    for row in rows:
        if row["name"] in timings:
            row["timing"] = timings[row["name"]]
            row["ms_per_image"] = timings[row["name"]]["ms_per_image"]
            if not args.no_memory:
                job = {
                    "source": sources[row["name"]],
                    "task": args.task,
                    "seed": args.seed,
                    "num_test": args.num_test,
                    "batch_size": len(batch),
                    "threads": args.threads,
                    "data_root": args.data_root,
                    "download": download,
                }
                row["memory"] = measure_memory(job)
            if args.device == "cuda" and row["name"] != "conncomp":
                row["gpu"] = gpu_numbers(models[row["name"]], args, test)

    spec = TASKS[args.task]
    record = {
        "experiment": NAME,
        "task": args.task,
        "command": command,
        "machine": machine(),
        "seed": args.seed,
        "settings": {k: v for k, v in vars(args).items() if k not in ("no_progress", "memory_probe")},
        "test": {
            "dataset": spec["dataset"],
            "kwargs": spec["kwargs"],
            "split": "test",
            "seed": args.seed,
            "num_scenes": len(test),
            "image_size": list(image_size),
            "scenes_sha256": test_print,
        },
        "validation": {"conncomp": conncomp_val},
        "timing": {
            "batch_size": len(batch),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": args.threads,
            "method": "median over timed passes of parse on one batch of test scenes, after warm-up "
            "passes; the models timed in turns, the order rotating each pass",
        },
        "memory_method": None if args.no_memory else MEMORY_METHOD,
        "models": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = finite(record)  # strict JSON: NaN (e.g. AP without objects) as null
    path = write_record(out / f"{args.task}.json", record)
    print(f"{NAME}: {len(test)} {args.task} test scenes ({image_size[0]}x{image_size[1]}), seed {args.seed}")
    print(table([summary_row(r) for r in rows], COLUMNS))
    print(f"{NAME}: wrote {path}")
    return record


def summary_row(row: dict[str, Any]) -> dict[str, Any]:
    scores = row.get("scores") or {}
    trained = row.get("trained_on") or {}
    note = row.get("reason") or "; ".join(row.get("notes") or [])
    return {
        "name": row["name"],
        "trained": trained.get("dataset") or "-",
        "ap50": scores.get("ap50"),
        "ap_coco": scores.get("ap_coco"),
        "count_accuracy": scores.get("count_accuracy"),
        "ms": row.get("ms_per_image"),
        "mem": (row.get("memory") or {}).get("parse_peak_mb"),
        "parameters": row.get("parameters"),
        "minutes": row.get("train_cpu_minutes"),
        "note": note[:60],
    }


if __name__ == "__main__":
    main()
