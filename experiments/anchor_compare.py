"""Our SPAIR step beside the public SPAIR_pytorch implementation (the anchor), at the anchor's sizes.

The anchor is Yonk Shi's PyTorch port of SPAIR (``github.com/yonkshi/SPAIR_pytorch``, a ``spair``
package with ``spair/config.py`` and ``spair/models.py``). Its code is not part of this repository:
fetch it yourself and pass its checkout with ``--anchor-path DIR``; without it the script exits with a
message saying so. Its own requirements (e.g. ``tensorboardX``) are not needed: the script hands it a
writer that records nothing.

The anchor's later versions keep their run in globals that its ``train.py`` sets up: a ``RunManager``
(``spair/manager.py``) holding the device, the writer, the command-line flags (``run_args``) and the
global step, which the model reads while it runs. The script sets them up as ``train.py`` does: the
flags at the defaults of the ``add_argument`` calls in the anchor's ``train.py`` (read, not run), the
global step counting the anchor's steps from 0. The anchor's model is its sequential SPAIR (``SPAIR``,
later ``Spair``), the counterpart of ours (not its ``ConvSpair``). Its debug plots (every 50th step,
sized by its ``debug_tools.GRID_SIZE``) are drawn on the anchor's own grid and handed to the writer.
Its modules are compiled as ``python -O`` would, without their ``assert`` statements: its tensor-layout
checks take a 4x4 grid (48 px) with 4 box coordinates for the wrong layout.

Both models are set to the anchor's network sizes -- 28x28 glimpses and objects, a 48-pixel anchor
box, 50-d ``z_what``, 12-pixel cells (the anchor backbone's total stride) -- and take complete
training steps (loss, backward, Adam) on the same scattered-digit batch, at 48x48 and 128x128,
alternating one step of ours with one of the anchor's after ``--warmup`` untimed steps of each, so
that both see the same machine load. Each runs in a process of its own (:class:`Programs`), as it
would be trained, so that neither's memory turnover lands on the other's step. Reports the median and
quartiles (ms) of each, their minor page faults per step, and the ratio of the medians.

Writes ``benchmarks/anchor_compare/anchor_compare.json``. Reproduce::

    git clone https://github.com/yonkshi/SPAIR_pytorch /tmp/SPAIR_pytorch
    PPL_SCENES_DATA=/path/to/data python experiments/anchor_compare.py --anchor-path /tmp/SPAIR_pytorch
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import inspect
import multiprocessing
import resource
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, mnist_source, positive_int, write_record

from ppl_scenes import SPAIR, make_dataset
from ppl_scenes.infer import SVITrainer, TrainConfig
from ppl_scenes.infer.allocator import keep_freed_memory

NAME = "anchor_compare"
#: The anchor's network sizes (its ``spair/config.py``), which our model is set to as well.
ANCHOR_SIZES = {"object": 28, "glimpse": 28, "anchor_box": 48, "what_dim": 50, "cell": 12}


#: The anchor's model classes this script knows, its sequential SPAIR under the names it had over time.
ANCHOR_MODELS = ("SPAIR", "Spair")
#: The ``RunManager(...)`` arguments this script can give (names as in the anchor's ``train.py``).
RUN_MANAGER_ARGS = ("run_name", "dataset", "device", "writer", "run_args", "cfg")


class _NullWriter:
    """Stands in for the anchor's TensorBoard writer (and ``tensorboardX.SummaryWriter``): records nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _OptimizedLoader(importlib.machinery.SourceFileLoader):
    """Compiles an anchor module as ``python -O`` would (its ``assert`` statements dropped), uncached."""

    def get_code(self, fullname: str) -> types.CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True, optimize=1)


class _AnchorFinder(importlib.abc.MetaPathFinder):
    """Finds the anchor's ``spair`` package in its checkout and loads it with :class:`_OptimizedLoader`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "spair" and not name.startswith("spair."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [str(self.root)] if name == "spair" else path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _OptimizedLoader(spec.loader.name, spec.loader.path)
        return spec


class _Flags(argparse.Namespace):
    """The anchor's ``run_args``: its ``train.py`` flags at their defaults; an unknown one stops the run."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise SystemExit(
            f"the anchor reads run_args.{name}, a flag its train.py does not define (or that this script "
            "could not read from it): this checkout is not of a shape this script knows"
        )


def scenes(size: int, batch: int, seed: int, root: str | None, download: bool) -> torch.Tensor:
    """A batch of scattered-digit scenes of ``size`` px (5 digits per 48x48, scaled with the area)."""
    digits = max(1, round(5 * (size / 48) ** 2))
    data = make_dataset(
        "scattered",
        "train",
        num_scenes=batch,
        num_digits=digits,
        canvas_size=size,
        seed=seed,
        root=root,
        download=download,
    )
    return torch.stack([data[i][0] for i in range(batch)])


def our_step(images: torch.Tensor) -> Callable[[], None]:
    """One SVI step of our SPAIR at the anchor's sizes (the library's trainer)."""
    s = ANCHOR_SIZES
    model = SPAIR(
        cell_size=(s["cell"], s["cell"]),
        anchor=(float(s["anchor_box"]),) * 2,
        object_size=(s["object"], s["object"]),
        glimpse_size=(s["glimpse"], s["glimpse"]),
        what_dim=s["what_dim"],
    )
    trainer = SVITrainer(model, TrainConfig(batch_size=len(images), steps=10**6), progress=False)
    trainer.setup(images)
    state = {"step": 0}

    def step() -> None:
        state["step"] += 1
        model.set_step(state["step"])
        trainer.train_step(images)

    return step


def load_anchor(path: Path) -> tuple[Any, Any]:
    """The anchor's ``spair.config`` and ``spair.models`` modules, imported from its checkout."""
    if not (path / "spair" / "models.py").is_file() or not (path / "spair" / "config.py").is_file():
        raise SystemExit(
            f"{path} is not a SPAIR_pytorch checkout (no spair/models.py and spair/config.py): clone "
            "https://github.com/yonkshi/SPAIR_pytorch and pass its folder as --anchor-path"
        )
    # the anchor logs through tensorboardX, which it need not have here: a writer that records nothing
    sys.modules["tensorboardX"] = types.ModuleType("tensorboardX")
    sys.modules["tensorboardX"].SummaryWriter = _NullWriter  # type: ignore[attr-defined]
    # its asserts dropped, as under `python -O`: its layout checks (to_H_W_C, to_C_H_W) tell [B, C, H, W]
    # from [B, H, W, C] by C != H, which a 4x4 grid (48 px) trips on its 4 box coordinates
    sys.meta_path.insert(0, _AnchorFinder(path))
    sys.path.insert(0, str(path))
    try:
        config = importlib.import_module("spair.config")
        models = importlib.import_module("spair.models")
    except ImportError as err:
        raise SystemExit(f"the anchor at {path} does not import: {err}") from err
    return config, models


def anchor_flags(path: Path) -> _Flags:
    """The defaults of the anchor's command-line flags: its ``train.py``'s ``add_argument`` calls, not run.

    Flags whose default is not a literal (a log folder) get None; those the script cannot rebuild
    (a non-literal name or action) are left out, and the model stops the run if it reads one.
    """
    flags = _Flags()
    script = next((f for f in (path / "train.py", path / "spair" / "train.py") if f.is_file()), None)
    if script is None:
        return flags
    parser = argparse.ArgumentParser(add_help=False)
    builtin = {"int": int, "float": float, "str": str}
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
            continue
        try:
            names = [ast.literal_eval(arg) for arg in node.args]
            options = {}
            for keyword in node.keywords:
                if keyword.arg == "type":
                    options["type"] = builtin[getattr(keyword.value, "id", "")]
                elif keyword.arg == "default":
                    try:
                        options["default"] = ast.literal_eval(keyword.value)
                    except ValueError:
                        options["default"] = None
                elif keyword.arg in ("action", "nargs", "choices", "dest", "const"):
                    options[keyword.arg] = ast.literal_eval(keyword.value)
            if names and all(isinstance(name, str) and name.startswith("-") for name in names):
                parser.add_argument(*names, **options)
        except (ValueError, KeyError, TypeError, argparse.ArgumentError):
            continue
    return _Flags(**vars(parser.parse_args([])))


def set_config(config: Any, images: torch.Tensor) -> None:
    """The anchor's config globals at the batch, the image and the sizes of ANCHOR_SIZES; the rest its own."""
    s = ANCHOR_SIZES
    size = images.shape[-1]
    values = {
        "BATCH_SIZE": len(images),
        "INPUT_IMAGE_SHAPE": [images.shape[1], size, size],
        "OBJECT_SHAPE": [s["object"], s["object"]],
        "ANCHORBOX_SHAPE": [s["anchor_box"], s["anchor_box"]],
        "N_ATTRIBUTES": s["what_dim"],
        "N_CONTEXT_DIM": 4 + s["what_dim"] + 1 + 1,
    }
    missing = [name for name in values if not hasattr(config, name)]
    if missing:
        raise SystemExit(
            f"this anchor's spair/config.py has no {', '.join(missing)}: not a shape this script knows"
        )
    for name, value in values.items():
        setattr(config, name, value)


def run_manager(config: Any, flags: _Flags, device: torch.device) -> Any:
    """The anchor's ``RunManager`` class, set up as its ``train.py`` does; None where the anchor has none."""
    manager = sys.modules.get("spair.manager")
    if manager is None:
        return None
    cls = getattr(manager, "RunManager", None)
    if cls is None or not hasattr(cls, "global_step"):
        raise SystemExit(
            "this anchor's spair/manager.py has no RunManager.global_step: not a shape this script knows"
        )
    given = {
        "run_name": NAME,
        "dataset": None,
        "device": device,
        "writer": _NullWriter(),
        "run_args": flags,
        "cfg": config,
    }
    if getattr(manager, "instance", None) is None:  # a singleton: built once, as train.py does
        params = list(inspect.signature(cls).parameters)
        unknown = [name for name in params if name not in RUN_MANAGER_ARGS]
        if unknown:
            raise SystemExit(f"this anchor's RunManager{inspect.signature(cls)} is not one this script knows")
        cls(**{name: given[name] for name in params})
    for name in ("device", "writer", "run_args"):
        setattr(cls, name, given[name])
    return cls


def anchor_step(config: Any, models: Any, flags: _Flags, images: torch.Tensor) -> Callable[[], None]:
    """One training step of the anchor's SPAIR (its forward's loss, backward, Adam) on ``images``."""
    set_config(config, images)
    run = run_manager(config, flags, images.device)
    model = next((getattr(models, name) for name in ANCHOR_MODELS if hasattr(models, name)), None)
    if model is None:
        known = sorted(name for name, value in vars(models).items() if inspect.isclass(value))
        raise SystemExit(f"this anchor's spair/models.py has none of {ANCHOR_MODELS} (it has {known})")
    # the anchor's constructor changed over its history: (image_shape) or (image_shape, writer, device)
    given = [config.INPUT_IMAGE_SHAPE, _NullWriter(), images.device]
    count = len(inspect.signature(model).parameters)
    if count not in (1, 3):
        raise SystemExit(
            f"this anchor's {model.__name__}{inspect.signature(model)} is not one this script knows"
        )
    net = model(*given[:count]).to(images.device)
    # and its forward: (x), reading the step from its RunManager, or (x, global_step)
    inputs = len(inspect.signature(net.forward).parameters)
    if inputs not in (1, 2):
        raise SystemExit(
            f"this anchor's {model.__name__}.forward{inspect.signature(net.forward)} is unknown here"
        )
    cell = getattr(getattr(net, "backbone", None), "grid_cell_size", None)
    if cell is not None and [int(c) for c in cell] != [ANCHOR_SIZES["cell"]] * 2:
        raise SystemExit(
            f"the anchor's cells are {list(cell)} px, not the {ANCHOR_SIZES['cell']} px of ANCHOR_SIZES"
        )
    debug = sys.modules.get("spair.debug_tools")
    grid = getattr(getattr(net, "backbone", None), "n_grid_cells", None)
    if debug is not None and hasattr(debug, "GRID_SIZE") and grid is not None:
        debug.GRID_SIZE = int(grid[0])  # its plots assume its 128-pixel grid (11 cells) otherwise
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    state = {"step": 0}

    def step() -> None:
        if run is not None:
            run.global_step = state["step"]
        optim.zero_grad()
        out = net(*[images, state["step"]][:inputs])
        loss = out[0] if isinstance(out, tuple | list) else out
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
            raise SystemExit(f"the anchor's forward gave no scalar loss to train on: {type(loss).__name__}")
        if not torch.isfinite(loss.detach()):
            raise SystemExit(f"the anchor's loss is {loss.item()} at its step {state['step']}")
        loss.backward()
        if state["step"] == 0 and not any(p.grad is not None and p.grad.any() for p in net.parameters()):
            raise SystemExit("the anchor's backward reached none of its parameters")
        optim.step()
        state["step"] += 1

    return step


class Programs:
    """Each program's training step in a process of its own, stepped on demand from this one.

    In one process the two programs share glibc's heap: at 128 px the anchor frees gigabytes a step,
    which the heap hands back to the kernel, and our next step maps its pages afresh (tens of
    thousands of minor page faults a step instead of none, in a trial run). Apart, each keeps its own
    memory, as it would when trained on its own; both processes fix glibc's thresholds as our training does
    (``TrainConfig.keep_freed_memory``), so the allocator setting is the same for both.
    """

    names = ("ours", "anchor")

    def __init__(self, args: argparse.Namespace, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: dict[str, Any] = {}
        self._workers: list[Any] = []
        for name in self.names:
            parent, child = context.Pipe()
            worker = context.Process(target=_serve, args=(child, name, vars(args), size), daemon=True)
            worker.start()
            self._pipes[name] = parent
            self._workers.append(worker)
        try:
            for name in self.names:
                self._reply(name)  # built, or the reason it could not be
        except SystemExit:
            self.close()
            raise

    def steps(self, name: str, count: int) -> tuple[float, int]:
        """Run ``count`` steps of program ``name``: (ms, minor page faults) of the last."""
        self._pipes[name].send(count)
        return self._reply(name)

    def _reply(self, name: str) -> Any:
        try:
            kind, value = self._pipes[name].recv()
        except EOFError:
            raise SystemExit(f"the process running {name} ended unexpectedly") from None
        if kind == "error":
            raise SystemExit(f"{name}: {value}")
        return value

    def __enter__(self) -> Programs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (each finishes its step first)."""
        for pipe in self._pipes.values():
            with contextlib.suppress(OSError):  # a worker that has gone already
                pipe.send(0)
        for worker in self._workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()


def _serve(pipe: Any, name: str, options: dict[str, Any], size: int) -> None:
    """A worker of :class:`Programs`: builds program ``name``'s step on the scenes of ``size`` px, then
    runs as many steps as each request asks (0 ends it), answering with the last one's time and faults."""
    try:
        if options["threads"] is not None:
            torch.set_num_threads(options["threads"])
        if TrainConfig.keep_freed_memory:
            keep_freed_memory()
        torch.manual_seed(options["seed"])
        root, download = options["data_root"], not options["no_download"]
        images = scenes(size, options["batch_size"], options["seed"], root, download).to(options["device"])
        if name == "ours":
            step = our_step(images)
        else:
            path = options["anchor_path"].resolve()
            config, models = load_anchor(path)
            step = anchor_step(config, models, anchor_flags(path), images)
        sync = torch.cuda.synchronize if options["device"].startswith("cuda") else (lambda: None)
        pipe.send(("ready", None))
        while count := _request(pipe):
            for _ in range(count):
                sync()
                start, paged = time.perf_counter(), minor_faults()
                step()
                sync()
            pipe.send(("done", (1000 * (time.perf_counter() - start), minor_faults() - paged)))
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- reported to the parent, which stops
        with contextlib.suppress(OSError):  # unless it has stopped already
            pipe.send(("error", str(err) or type(err).__name__))


def _request(pipe: Any) -> int:
    """The next number of steps asked of a worker; 0 once the parent has gone."""
    try:
        return pipe.recv()
    except EOFError:
        return 0


def summary(times: list[float], faults: list[int]) -> dict[str, float]:
    """Median and quartiles of the step times (ms), and the minor page faults per step (mean)."""
    q = torch.tensor(times).quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
    return {
        "median_ms": q[1],
        "q25_ms": q[0],
        "q75_ms": q[2],
        "steps": len(times),
        "minor_faults_per_step": sum(faults) / len(faults),
    }


def minor_faults() -> int:
    """Minor page faults of this process so far (pages mapped afresh, zero-filled by the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time both implementations side by side; returns (and writes) the JSON record."""
    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--anchor-path", type=Path, help="a checkout of github.com/yonkshi/SPAIR_pytorch")
    parser.add_argument("--out", default=f"benchmarks/{NAME}", help="where the JSON record goes")
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[48, 128], help="image sizes (px)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps of each first")
    parser.add_argument("--timed-steps", type=positive_int, default=20, help="timed steps of each")
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--anchor-revision", help="the anchor checkout's commit, written into the record")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and scenes")
    parser.add_argument("--data-root", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never download MNIST")
    args = parser.parse_args(argv)
    if args.anchor_path is None:
        parser.exit(
            2,
            "anchor_compare needs the anchor's code, which this repository does not ship: clone "
            "https://github.com/yonkshi/SPAIR_pytorch and pass its folder as --anchor-path DIR\n",
        )
    load_anchor(args.anchor_path.resolve())  # fail early, here, on a checkout this script cannot run
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for size in args.sizes:
        with Programs(args, size) as programs:
            for name in programs.names:
                programs.steps(name, args.warmup)
            times: dict[str, list[float]] = {name: [] for name in programs.names}
            faults: dict[str, list[int]] = {name: [] for name in programs.names}
            for _ in range(args.timed_steps):
                for name in programs.names:  # alternating: both see the same load
                    ms, paged = programs.steps(name, 1)
                    times[name].append(ms)
                    faults[name].append(paged)
        results[str(size)] = {name: summary(times[name], faults[name]) for name in times}
        ours, anchor = results[str(size)]["ours"]["median_ms"], results[str(size)]["anchor"]["median_ms"]
        results[str(size)]["anchor_over_ours"] = anchor / ours
        paged = {name: results[str(size)][name]["minor_faults_per_step"] for name in times}
        print(
            f"{size} px, batch {args.batch_size}: ours {ours:.1f} ms, anchor {anchor:.1f} ms "
            f"(page faults a step: ours {paged['ours']:,.0f}, anchor {paged['anchor']:,.0f})",
            flush=True,
        )
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "device": args.device,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "budget": {"warmup_steps": args.warmup, "timed_steps": args.timed_steps},
        "digit_source": mnist_source(args.data_root, not args.no_download),
        "sizes": ANCHOR_SIZES,
        "keep_freed_memory": TrainConfig.keep_freed_memory,
        "processes": "one per program, alternating steps",
        "threads": torch.get_num_threads(),
        "anchor_revision": args.anchor_revision,
        "results": results,
    }
    path = write_record(Path(args.out) / f"{NAME}.json", record)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
    sys.exit(0)
