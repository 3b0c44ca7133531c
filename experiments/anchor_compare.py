"""Our SPAIR step beside the public SPAIR_pytorch implementation (the anchor), at the anchor's sizes.

The anchor is Yonk Shi's PyTorch port of SPAIR (``github.com/yonkshi/SPAIR_pytorch``, a ``spair``
package with ``spair/config.py`` and ``spair/models.py``). Its code is not part of this repository:
fetch it yourself and pass its checkout with ``--anchor-path DIR``; without it the script exits with a
message saying so. Its own requirements (e.g. ``tensorboardX``) are not needed: the script hands it a
writer that records nothing.

Both models are set to the anchor's network sizes -- 28x28 glimpses and objects, a 48-pixel anchor
box, 50-d ``z_what``, 12-pixel cells (the anchor backbone's total stride) -- and take complete
training steps (loss, backward, Adam) on the same scattered-digit batch, at 48x48 and 128x128,
alternating one step of ours with one of the anchor's after ``--warmup`` untimed steps of each, so
that both see the same machine load. Reports the median and quartiles (ms) of each and their ratio.

Writes ``benchmarks/anchor_compare/anchor_compare.json``. Reproduce::

    git clone https://github.com/yonkshi/SPAIR_pytorch /tmp/SPAIR_pytorch
    PPL_SCENES_DATA=/path/to/data python experiments/anchor_compare.py --anchor-path /tmp/SPAIR_pytorch
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, positive_int, write_record

from ppl_scenes import SPAIR, make_dataset
from ppl_scenes.infer import SVITrainer, TrainConfig

NAME = "anchor_compare"
#: The anchor's network sizes (its ``spair/config.py``), which our model is set to as well.
ANCHOR_SIZES = {"object": 28, "glimpse": 28, "anchor_box": 48, "what_dim": 50, "cell": 12}


class _NullWriter:
    """Stands in for the anchor's TensorBoard writer: every call records nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


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
    sys.path.insert(0, str(path))
    try:
        config = importlib.import_module("spair.config")
        models = importlib.import_module("spair.models")
    except ImportError as err:
        raise SystemExit(f"the anchor at {path} does not import: {err}") from err
    return config, models


def anchor_step(config: Any, models: Any, images: torch.Tensor) -> Callable[[], None]:
    """One training step of the anchor's SPAIR (its forward's loss, backward, Adam) on ``images``."""
    s = ANCHOR_SIZES
    size = images.shape[-1]
    config.BATCH_SIZE = len(images)
    config.INPUT_IMAGE_SHAPE = [images.shape[1], size, size]
    config.OBJECT_SHAPE = [s["object"], s["object"]]
    config.ANCHORBOX_SHAPE = [s["anchor_box"], s["anchor_box"]]
    config.N_ATTRIBUTES = s["what_dim"]
    config.N_CONTEXT_DIM = 4 + s["what_dim"] + 1 + 1
    # the anchor's constructor changed over its history: (image_shape) or (image_shape, writer, device)
    given = [config.INPUT_IMAGE_SHAPE, _NullWriter(), images.device]
    count = len(inspect.signature(models.SPAIR).parameters)
    if count not in (1, 3):
        raise SystemExit(f"this anchor's SPAIR{inspect.signature(models.SPAIR)} is not one this script knows")
    net = models.SPAIR(*given[:count]).to(images.device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    state = {"step": 0}

    def step() -> None:
        optim.zero_grad()
        out = net(images, state["step"])
        loss = out[0] if isinstance(out, tuple | list) else out
        loss.backward()
        optim.step()
        state["step"] += 1

    return step


def summary(times: list[float]) -> dict[str, float]:
    q = torch.tensor(times).quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
    return {"median_ms": q[1], "q25_ms": q[0], "q75_ms": q[2], "steps": len(times)}


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
    config, models = load_anchor(args.anchor_path.resolve())
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    results: dict[str, Any] = {}
    for size in args.sizes:
        torch.manual_seed(args.seed)
        images = scenes(size, args.batch_size, args.seed, args.data_root, not args.no_download).to(
            args.device
        )
        steps = {"ours": our_step(images), "anchor": anchor_step(config, models, images)}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.timed_steps):
            for name, step in steps.items():  # alternating: both see the same load
                sync()
                start = time.perf_counter()
                step()
                sync()
                times[name].append(1000 * (time.perf_counter() - start))
        results[str(size)] = {name: summary(t) for name, t in times.items()}
        ours, anchor = results[str(size)]["ours"]["median_ms"], results[str(size)]["anchor"]["median_ms"]
        results[str(size)]["anchor_over_ours"] = anchor / ours
        print(f"{size} px, batch {args.batch_size}: ours {ours:.1f} ms, anchor {anchor:.1f} ms", flush=True)
    record = {
        "command": command_line(NAME, argv),
        "machine": machine(),
        "device": args.device,
        "batch_size": args.batch_size,
        "sizes": ANCHOR_SIZES,
        "results": results,
    }
    path = write_record(Path(args.out) / f"{NAME}.json", record)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
    sys.exit(0)
