"""Where the untrained saccade model looks: the attention's brightness weight and inhibition of return.

Before any training, the saccade model with ``where_attention=True`` places its glimpses by the
proxy's local brightness (weight ``attention_saliency``), a learned per-step prior map and the
inhibition of return (strength ``inhibition_of_return``). This script measures, for every pair of
``--saliency`` and ``--inhibition`` values, how many digits of the two-digit cluttered validation
scenes (split ``"val"``, ``--num-val`` of them: the settings are chosen on them, so no test scene is
used) the untrained model's glimpses hold (``objects_in_view``: the fraction of digits of which some
glimpse holds at least 90 % of the box) and how much the glimpses move between scenes
(``glimpse_centre_std``), beside the old start of four fixed tiles (``where_attention=False``, the
2x2 spread grid at ``max_scale=0.5``). It trains nothing; it picks the defaults' starting point.

Writes under ``--out`` (default ``benchmarks/saccade_attention_start``):

* ``saccade_attention_start.json`` -- settings, machine and the measurements;
* ``objects_in_view.png`` -- the fraction against both values;
* ``saccades_start.png`` -- the default model's untrained glimpses on validation scenes.

Reproduce the recorded numbers (CPU, about a minute)::

    PPL_SCENES_DATA=/path/to/data python experiments/saccade_attention_start.py --num-val 300
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from _common import (  # noqa: E402
    command_line,
    finite,
    machine,
    make_parser,
    write_record,
)
from _saccade import add_saccade_args, cluttered_scenes, example_scenes, parse_saccade_args, plot_saccades  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ppl_scenes import VariationalSaccading  # noqa: E402
from ppl_scenes.config import config_to_dict  # noqa: E402

NAME = "saccade_attention_start"
KEYS = ("objects_in_view", "glimpse_centre_std", "glimpse_side")


def build_parser():
    parser = make_parser(__doc__, NAME, num_train=1, num_train_help="unused (nothing is trained)")
    add_saccade_args(parser)
    parser.add_argument("--saliency", type=float, nargs="+", default=[0, 15, 30, 60, 120])
    parser.add_argument("--inhibition", type=float, nargs="+", default=[0, 10, 30])
    return parser


def plot_grid(
    grid: list[list[float]], saliency: Sequence[float], inhibition: Sequence[float], path: Path
) -> Path:
    fig = Figure(figsize=(1.2 * len(saliency) + 2, 0.8 * len(inhibition) + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(torch.tensor(grid).T, vmin=0, vmax=1, cmap="viridis", origin="lower")
    ax.set_xticks(range(len(saliency)), [f"{s:g}" for s in saliency])
    ax.set_yticks(range(len(inhibition)), [f"{v:g}" for v in inhibition])
    ax.set_xlabel("attention_saliency")
    ax.set_ylabel("inhibition_of_return")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(i, j, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k")
    fig.colorbar(image, ax=ax, label="objects in view (untrained)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args, overrides = parse_saccade_args(parser, argv)
    splits, data = cluttered_scenes(args, train=False)
    val_set = splits.val  # the settings are chosen on these: never on test scenes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    def measure(**settings) -> dict[str, float]:
        model = VariationalSaccading(**{**overrides, **settings})
        metrics = model.evaluate(val_set, progress=not args.no_progress)
        return {k: metrics[k] for k in KEYS}

    tiles = measure(where_attention=False, max_scale=0.5)
    attention = {
        f"saliency={s:g},inhibition={v:g}": {"saliency": s, "inhibition": v}
        | measure(where_attention=True, attention_saliency=s, inhibition_of_return=v)
        for s in args.saliency
        for v in args.inhibition
    }
    grid = [
        [attention[f"saliency={s:g},inhibition={v:g}"]["objects_in_view"] for v in args.inhibition]
        for s in args.saliency
    ]
    default = VariationalSaccading(**overrides)
    images, targets = example_scenes(val_set)
    figures = {
        "objects_in_view": plot_grid(grid, args.saliency, args.inhibition, out / "objects_in_view.png"),
        "saccades_start": plot_saccades(default, images, targets, "identify", out / "saccades_start.png"),
    }
    record = {
        "experiment": NAME,
        "command": command_line(NAME, argv),
        "machine": machine(),
        "data": data,
        "num_scenes": len(val_set),
        "splits": {"validation": splits.record["validation"]},
        "digit_source": splits.source,
        "default_model": config_to_dict(default.config),
        "tiles": tiles,
        "attention": attention,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    write_record(out / f"{NAME}.json", finite(record))
    in_view = {k: v["objects_in_view"] for k, v in attention.items()}
    print(json.dumps({"tiles": tiles["objects_in_view"], "attention": in_view}))
    return record


if __name__ == "__main__":
    main()
