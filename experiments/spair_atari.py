"""SPAIR §5.4: Space Invaders, trained on 48x48 crops of frames and parsed on full 210x160 frames.

Frames come from the Arcade Learning Environment (``ale-py``, the optional extra ``atari``:
``pip install 'ppl_scenes[atari]'``; the Space Invaders ROM ships in its wheel) played by a uniformly
random policy, as in the paper: every ``--frame-every``-th frame of ``--num-frames`` is kept (RGB, scaled
to [0, 1]), episodes restart when the game ends. SPAIR (3 channels; cell and anchor sized for the
invaders, see :data:`ATARI_CONFIG`) is trained on random 48x48 crops of those frames and then parses
``--num-test`` full frames from a separate run of the game. There is no ground truth: the result is
qualitative (the paper's Fig. 6), with the number of objects SPAIR finds per frame set beside the
number of ConnComp components (the background is black) as a rough check.

Writes under ``--out`` (default ``benchmarks/spair_atari``):

* ``spair_atari.json`` -- settings, machine, ale-py version, steps and training seconds, objects per
  test frame (SPAIR and ConnComp);
* ``parses.png`` -- full test frames with SPAIR's boxes (blue) and reconstructions (Fig. 6);
* ``crops.png`` -- training crops with their parses;
* ``runs/spair/`` -- the training run (``ppl_scenes.load`` restores it).

Without ale-py the script stops with exit status 2 and says how to install it.

Reproduce the recorded numbers (CPU, 30 minutes of training)::

    python experiments/spair_atari.py --minutes 30 --no-progress
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    add_conncomp_arg,
    apply_threads,
    check_run_dirs,
    command_line,
    machine,
    make_parser,
    model_record,
    positive_int,
    settings_record,
    table,
    train_model,
    train_record,
    write_record,
)

from ppl_scenes.baselines import ConnComp
from ppl_scenes.data.atari import INSTALL_HINT, play_atari
from ppl_scenes.data.atari import import_ale as _import_ale
from ppl_scenes.viz import plot_scenes

NAME = "spair_atari"
GAME = "space_invaders"
#: SPAIR's settings for Space Invaders frames. Invaders are about 8 px wide and 10 px tall, 16 px
#: apart in a row and about 18 px between rows: a 12-pixel cell holds at most one invader's centre,
#: and a 16-pixel anchor puts the prior's mean box size (half the anchor) at their size.
ATARI_CONFIG = {"channels": 3, "cell_size": (12, 12), "anchor": (16.0, 16.0)}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__, NAME, digits=False, num_train=10_000, num_train_help="training crops")
    parser.add_argument(
        "--num-frames", type=positive_int, default=500, metavar="N", help="training frames kept"
    )
    parser.add_argument(
        "--frame-every", type=positive_int, default=8, metavar="K", help="keep every K-th frame of play"
    )
    parser.add_argument(
        "--num-test", type=positive_int, default=8, metavar="N", help="full test frames parsed"
    )
    parser.add_argument("--crop-size", type=positive_int, default=48, metavar="S", help="training crop side")
    add_conncomp_arg(parser)
    return parser


def import_ale():
    """The ``ale_py`` module, or exit status 2 with the install hint."""
    try:
        return _import_ale()
    except ImportError as err:
        print(f"{NAME}: error: this experiment needs ale-py: {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2) from err


def random_crops(frames: torch.Tensor, n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (uniform frame, uniform position) as float32 in [0, 1]."""
    _, _, h, w = frames.shape
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the frames ({h}x{w})")
    rng = np.random.default_rng([seed, 0x41544152])
    idx = rng.integers(0, len(frames), n)
    ys = rng.integers(0, h - size + 1, n)
    xs = rng.integers(0, w - size + 1, n)
    crops = torch.stack([frames[i, :, y : y + size, x : x + size] for i, y, x in zip(idx, ys, xs)])
    return crops.float() / 255.0


def parse_figure(model, images: torch.Tensor, path: Path, title: str, zoom: float = 2.0) -> list[int]:
    """Parse ``images``, draw them with their boxes and reconstructions; returns the counts."""
    parse = model.parse(images.to(model.device))
    fig = plot_scenes(
        images,
        [b.cpu() for b in parse.boxes],
        reconstructions=parse.reconstruction.cpu().clamp(0, 1),
        titles=[f"{title} {i}: {len(b)} objects" for i, b in enumerate(parse.boxes)],
    )
    fig.set_size_inches(*(zoom * fig.get_size_inches()))  # frames are large: draw them about 1:1
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return [len(b) for b in parse.boxes]


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the experiment; returns the JSON record it writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crop_size % ATARI_CONFIG["cell_size"][0] or args.crop_size % ATARI_CONFIG["cell_size"][1]:
        parser.error(f"--crop-size must be a multiple of the cell size {ATARI_CONFIG['cell_size']}")
    import_ale()  # fail early, before any work, when ale-py is missing
    apply_threads(args)
    out = Path(args.out)
    run_dir = out / "runs" / "spair"
    check_run_dirs(parser, [run_dir], args.resume)
    command = command_line(NAME, argv)
    progress = not args.no_progress

    frames = play_atari(args.num_frames, args.frame_every, args.seed, GAME, progress)
    test_frames = play_atari(args.num_test, args.frame_every, args.seed + 1, GAME, progress).float() / 255.0
    crops = random_crops(frames, args.num_train, args.crop_size, args.seed)
    data = {
        "name": f"ale:{GAME}",
        "kwargs": {
            "num_frames": args.num_frames,
            "frame_every": args.frame_every,
            "crop_size": args.crop_size,
        },
    }
    if progress:
        print(
            f"{NAME}: training SPAIR on {len(crops)} {args.crop_size}px crops of {len(frames)} frames",
            file=sys.stderr,
        )
    model, cost = train_model(crops, run_dir, args, data, command, progress, **ATARI_CONFIG)

    figures = {"parses": out / "parses.png", "crops": out / "crops.png"}
    spair_counts = parse_figure(model, test_frames, figures["parses"], "frame")
    parse_figure(model, crops[:8], figures["crops"], "crop", zoom=1.0)
    boxes = ConnComp(threshold=args.conncomp_threshold).parse(test_frames).boxes
    conncomp_counts = [len(b) for b in boxes]

    record: dict[str, Any] = {
        "experiment": NAME,
        "command": command,
        "machine": machine(),
        "ale_py": importlib.metadata.version("ale-py"),
        "game": GAME,
        "frame_size": list(test_frames.shape[-2:]),
        "settings": settings_record(args),
        "train": train_record(args),
        "model": model_record(**ATARI_CONFIG),
        **cost,
        "objects_per_frame": {
            "spair": spair_counts,
            "conncomp": conncomp_counts,
            "spair_mean": float(np.mean(spair_counts)),
            "conncomp_mean": float(np.mean(conncomp_counts)),
        },
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", record)
    rows = [
        {"what": "SPAIR", "objects": record["objects_per_frame"]["spair_mean"], "steps": cost["steps"]},
        {"what": "ConnComp", "objects": record["objects_per_frame"]["conncomp_mean"]},
    ]
    print(f"{NAME}: {len(test_frames)} full {test_frames.shape[-2]}x{test_frames.shape[-1]} frames parsed")
    print(table(rows, {"what": "", "objects": "objects/frame", "steps": "steps"}))
    print(f"{NAME}: wrote {out / (NAME + '.json')}, {figures['parses']} and {figures['crops']}")
    return record


if __name__ == "__main__":
    main()
