"""Operations per training step: what one SVI step (and MIST's lifting step) dispatches, and its time.

For every model at its default training size (``ppl-scenes train NAME`` defaults: the model's config
defaults, its default dataset and generator settings, its default batch), builds the model's own
trainer and measures complete training steps (loss, backward, clipping, optimiser step):

* ``spair`` -- 48x48 scattered scenes of 5 digits, batch 32;
* ``gmair`` -- 64x64 multi-MNIST, batch 32;
* ``ssdir`` -- the SVI stage at 128x128 multiscale scenes, batch 32, the detector frozen. Untrained
  (the default, as in the earlier records), it keeps about one object per scene, so the renderer's
  work is far below a trained model's; ``--shipped-detector`` puts the shipped SSDIR's trained
  detector in (:func:`ppl_scenes.pretrained`), which keeps the scenes' digits, up to 24;
* ``saccade`` -- cluttered scenes, batch 32;
* ``mist`` -- the lifting step of Algorithm 1 on mist-hard scenes, batch 16.

After ``--warmup`` untimed steps, one step runs under ``torch.profiler`` (every ``aten::`` operation
at every nesting level is counted, ``with_stack=True``): the count, the top operation names, and the
top call sites (the innermost ``ppl_scenes`` or ``pyro`` frame above each operation; operations of
the backward pass count as ``autograd``). Then ``--timed-steps`` steps are
timed (median and quartiles, ms) with ``--threads`` torch threads. With ``--device cuda`` the
profiled step also counts CUDA kernels and their summed time (GPU-busy time), and timings
synchronise.

With ``--against REV`` the step of the package as it was at git revision ``REV`` (copied out of git
under another name, so both load in one process) is built too, its operations counted with the same
threads (``aten_ops_baseline``), and the two are timed in alternation (``timing`` now,
``timing_baseline`` then): this machine's speed drifts by a quarter between runs, so only steps timed
in turns compare. ``--against-script REV2`` builds that step with this script as it was at ``REV2``,
for a package older than the script (issue 36's *before*: ``--against 8166e6d --against-script
c2f5fef``).

Writes ``benchmarks/step_profile/<label>.json``. Reproduce::

    PPL_SCENES_DATA=/path/to/data python experiments/step_profile.py --label after --threads 2
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyro
import torch
from _common import command_line, machine, mnist_source, positive_int, write_record

from ppl_scenes import MODELS, make_dataset, pretrained
from ppl_scenes.infer import TRAINERS, TrainConfig
from ppl_scenes.infer.compiled import compile_model

NAME = "step_profile"
#: The models profiled, each at its default training size.
DEFAULT_MODELS = ("spair", "gmair", "ssdir", "saccade", "mist")
#: Frames of these packages name an operation's call site (the innermost one wins).
SITE_PACKAGES = ("ppl_scenes/", "pyro/")


def build_step(
    name: str,
    batch_size: int | None = None,
    image_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    root: str | None = None,
    download: bool = True,
    compile_backend: str | None = None,
    shipped_detector: bool = False,
    keep_freed_memory: bool = True,
) -> Callable[[], Any]:
    """A function running one training step of model ``name`` at its defaults (see the docstring).

    Args:
        batch_size: images per step (default: the model's ``default_train``).
        image_size: SPAIR and GMAIR only: square scenes of this size instead of the default.
        compile_backend: run the model's ``compiled_methods`` through ``torch.compile`` with this
            backend, as ``train.compile=true`` does (None: eager, the default).
        shipped_detector: SSDIR only: the shipped model's trained detector in place of an untrained one.
        keep_freed_memory: ``TrainConfig.keep_freed_memory`` (as training's default: fix glibc's malloc
            thresholds, process-wide, when the data are prepared).
    """
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    cls = MODELS[name]
    model = cls()
    if shipped_detector and name == "ssdir":
        model.detector.load_state_dict(pretrained("ssdir").detector.state_dict())
    batch = batch_size or cls.default_train.get("batch_size", TrainConfig.batch_size)
    kwargs: dict[str, Any] = dict(cls.default_data_kwargs)
    if image_size is not None:
        kwargs["canvas_size"] = image_size
        if name == "spair":  # the digit count grows with the area (as spair_speed's scenes)
            kwargs["num_digits"] = max(1, round(5 * (image_size / 48) ** 2))
    data = make_dataset(
        cls.default_dataset, "train", num_scenes=batch, seed=seed, root=root, download=download, **kwargs
    )
    config = TrainConfig(
        batch_size=batch, steps=10**6, device=device, log_every=10**6, keep_freed_memory=keep_freed_memory
    )
    trainer = TRAINERS[model.trainer](model, config, progress=False)
    images = trainer.prepare_data(data)
    model.to(device).train()
    if compile_backend:
        compile_model(model, compile_backend)
    trainer.batch_index = torch.arange(batch)
    x = images[trainer.batch_index].to(device)
    trainer.setup(x)
    stage = getattr(trainer, "detector_steps", None)
    if stage is not None:  # SSDIR: the SVI stage, the detector frozen as it is
        model.freeze_detector()
    state = {"step": stage or 0}

    def step() -> Any:
        state["step"] += 1
        trainer.step = state["step"]
        model.set_step(state["step"])
        return trainer.train_step(x)

    return step


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_ms(step: Callable[[], Any], device: str) -> float:
    """Milliseconds of one call of ``step`` (the device's queued work included)."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return 1000 * (time.perf_counter() - start)


def minor_faults() -> int | None:
    """The process's minor page faults so far (pages the kernel mapped and zero-filled on first
    touch); None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(step: Callable[[], Any], device: str) -> tuple[float, int | None]:
    """:func:`step_ms` of one call and the minor page faults it caused (None where not counted)."""
    before = minor_faults()
    ms = step_ms(step, device)
    after = minor_faults()
    return ms, None if before is None or after is None else after - before


def quartiles(times: list[float], faults: Sequence[int | None] = ()) -> dict[str, float]:
    """Median and quartiles (ms) of step times, and the mean minor page faults a step where counted."""
    q = torch.tensor(times).quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
    result = {"median_ms": q[1], "q25_ms": q[0], "q75_ms": q[2], "steps": len(times)}
    if faults and all(f is not None for f in faults):
        result["minor_faults_per_step"] = sum(faults) / len(faults)
    return result


def time_step(step: Callable[[], Any], steps: int, device: str) -> dict[str, float]:
    """Median and quartiles (ms) of ``steps`` calls of ``step``, and their page faults."""
    runs = [timed(step, device) for _ in range(steps)]
    return quartiles([ms for ms, _ in runs], [f for _, f in runs])


def call_site(event: Any) -> str:
    """Where an operation came from: the innermost Python frame above it in ``ppl_scenes`` or ``pyro``
    (``file(line): function``), else its innermost Python frame, else ``autograd`` (the backward pass)."""
    python = None
    parent = event.cpu_parent
    while parent is not None:
        name = parent.name.replace("\\", "/")
        if not name.startswith("aten::") and "(" in name and "): " in name:
            for package in SITE_PACKAGES:
                if package in name:
                    return package + name.rsplit(package, 1)[1]
            python = python or name
        parent = parent.cpu_parent
    return python or "autograd"


def host_reads(events: Any) -> int:
    """Values the step reads back to the host (``.item()``, ``float()``, ``.tolist()``, a Python
    branch on a tensor): on a GPU each waits for the queue to drain. The optimiser's own reads are
    left out: fused Adam reads its step counts on the CPU only (on CUDA it reads none)."""

    def in_optimiser(event: Any) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if "_fused_adam" in parent.name or "Optimizer.step" in parent.name:
                return True
            parent = parent.cpu_parent
        return False

    reads = [e for e in events if e.name == "aten::_local_scalar_dense" or "method tolist of" in e.name]
    return sum(not in_optimiser(e) for e in reads)


def profile_step(step: Callable[[], Any], device: str, top: int = 15) -> dict[str, Any]:
    """Operations (and CUDA kernels) of one call of ``step``, counted with ``torch.profiler``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    sync(device)
    with profile(activities=activities, with_stack=True) as prof:
        step()
        sync(device)
    events = prof.events()
    ops = [e for e in events if e.name.startswith("aten::") and e.device_type == DeviceType.CPU]
    names = Counter(e.name for e in ops)
    sites: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for e in ops:
        site = call_site(e)
        sites[site] += 1
        modules[site.split("(", 1)[0]] += 1
    record: dict[str, Any] = {
        "aten_ops": len(ops),
        "host_reads": host_reads(events),
        "top_ops": dict(names.most_common(top)),
        "top_sites": dict(sites.most_common(top)),
        "top_modules": dict(modules.most_common(top)),
    }
    if device.startswith("cuda"):
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        record["cuda_kernels"] = len(kernels)
        record["gpu_busy_ms"] = sum(e.time_range.elapsed_us() for e in kernels) / 1000
    return record


def measure(
    name: str,
    args: Any,
    batch_size: int | None = None,
    image_size: int | None = None,
    profile_ops: bool = True,
) -> dict[str, Any]:
    """Profile and time one model's step (see the module docstring); one record.

    With ``args.compile``, the eager step of the same model is built too and the two are timed in
    alternation (``timing`` compiled, ``timing_eager``), so that both see the same machine load.
    """
    where = (args.device, args.seed, args.data_root, not args.no_download)
    backend = getattr(args, "compile", None)
    shipped = getattr(args, "shipped_detector", False)
    keep = not getattr(args, "adaptive_malloc", False)
    step = build_step(
        name, batch_size, image_size, *where, backend, shipped_detector=shipped, keep_freed_memory=keep
    )
    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - started
    result: dict[str, Any] = profile_step(step, args.device) if profile_ops else {}
    result["warmup_seconds"] = warmup
    baseline = getattr(args, "baseline", None)
    if not backend and baseline is None:
        result["timing"] = time_step(step, args.timed_steps, args.device)
        return result
    other = (
        baseline.build_step(name, batch_size, image_size, *where)
        if baseline is not None
        else build_step(
            name, batch_size, image_size, *where, shipped_detector=shipped, keep_freed_memory=keep
        )
    )
    for _ in range(args.warmup):
        other()
    if profile_ops and baseline is not None:
        result["aten_ops_baseline"] = profile_step(other, args.device)["aten_ops"]
    turns = [(timed(step, args.device), timed(other, args.device)) for _ in range(args.timed_steps)]
    result["timing"] = quartiles([ms for (ms, _), _ in turns], [f for (_, f), _ in turns])
    result["timing_baseline" if baseline is not None else "timing_eager"] = quartiles(
        [ms for _, (ms, _) in turns], [f for _, (_, f) in turns]
    )
    return result


def load_baseline(rev: str, script_rev: str | None = None) -> Any:
    """This script as it was at git revision ``script_rev`` (default ``rev``), with the package of
    ``rev``, importable next to today's: ``ppl_scenes`` renamed ``ppl_scenes_at_REV`` in a temporary
    directory."""
    root = Path(__file__).resolve().parent.parent

    def git(*command: str) -> bytes:
        return subprocess.run(["git", *command], cwd=root, capture_output=True, check=True).stdout

    sha = git("rev-parse", "--short", rev).decode().strip()
    package = f"ppl_scenes_at_{sha}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{NAME}_{sha}_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # its modules may import lazily until then
    for tree, path in ((sha, "ppl_scenes"), (script_rev or sha, f"experiments/{NAME}.py")):
        with tarfile.open(fileobj=io.BytesIO(git("archive", tree, path))) as tar:
            tar.extractall(tmp, filter="data")
    (tmp / "ppl_scenes").rename(tmp / package)
    (tmp / "experiments" / f"{NAME}.py").rename(tmp / f"{NAME}_at_{sha}.py")
    for path in [*(tmp / package).rglob("*.py"), tmp / f"{NAME}_at_{sha}.py"]:
        path.write_text(re.sub(r"\bppl_scenes\b", package, path.read_text()))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(f"{NAME}_at_{sha}")


def add_step_args(parser: argparse.ArgumentParser) -> None:
    """The flags of a step's setting that this script and ``gpu_check.py`` share: threads, seed, MNIST
    root and the compiled path (``args.compile``, read by :func:`measure`)."""
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and scenes")
    parser.add_argument("--data-root", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never download MNIST")
    parser.add_argument(
        "--compile",
        metavar="BACKEND",
        help="the train.compile path: torch.compile the models' compiled_methods with BACKEND "
        "(inductor, aot_eager), timed in turns with the eager step; the warm-up steps include the "
        "compiling (default: eager only)",
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Profile every model's step; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON record goes")
    parser.add_argument("--label", default="after", help="the record's name: OUT/LABEL.json")
    parser.add_argument(
        "--models", nargs="+", choices=DEFAULT_MODELS, default=list(DEFAULT_MODELS), help="models to profile"
    )
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first")
    parser.add_argument("--timed-steps", type=positive_int, default=10, help="timed steps per model")
    parser.add_argument("--batch-size", type=positive_int, help="images per step (default: each model's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also build each step as it was at git revision REV, count its operations and time the two "
        "in turns",
    )
    parser.add_argument(
        "--against-script",
        metavar="REV2",
        help="build --against's step with this script as it was at REV2 (for a package older than it)",
    )
    parser.add_argument(
        "--shipped-detector",
        action="store_true",
        help="SSDIR: the shipped model's trained detector (real object counts; not with --against)",
    )
    parser.add_argument(
        "--adaptive-malloc",
        action="store_true",
        help="leave glibc's adaptive malloc thresholds as they are (TrainConfig.keep_freed_memory=false; "
        "the setting is process-wide, so it also holds for --against's step)",
    )
    add_step_args(parser)
    args = parser.parse_args(argv)
    if args.against and args.shipped_detector:
        parser.error(
            "--against builds the other revision's untrained SSDIR detector; leave out --shipped-detector"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.against and args.compile:
        parser.error("--against times the eager steps of two revisions; leave out --compile")
    if args.against_script and not args.against:
        parser.error("--against-script goes with --against")
    args.baseline = load_baseline(args.against, args.against_script) if args.against else None
    models = {}
    for name in args.models:
        models[name] = measure(name, args, batch_size=args.batch_size)
        r = models[name]
        eager = f" (eager, in turns: {r['timing_eager']['median_ms']:.1f})" if "timing_eager" in r else ""
        if "timing_baseline" in r:
            eager = (
                f" ({args.against}: {r['aten_ops_baseline']} aten ops, in turns: "
                f"{r['timing_baseline']['median_ms']:.1f})"
            )
        print(
            f"{name}: {r['aten_ops']} aten ops, median {r['timing']['median_ms']:.1f} ms/step{eager}",
            flush=True,
        )
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "compile": args.compile,
        "against": args.against,
        "against_script": args.against_script,
        "shipped_detector": args.shipped_detector,
        "keep_freed_memory": not args.adaptive_malloc,
        "seed": args.seed,
        "budget": {"warmup_steps": args.warmup, "timed_steps": args.timed_steps},
        "digit_source": mnist_source(args.data_root, not args.no_download),
        "models": models,
    }
    path = write_record(Path(args.out) / f"{args.label}.json", record)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
    sys.exit(0)
