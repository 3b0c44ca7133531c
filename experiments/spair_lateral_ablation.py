"""SPAIR §5.5 / Fig. 7: the guide with and without lateral connections, on crowded scenes.

Two SPAIR models, identical but for ``lateral`` (the guide's connections from a cell to the latents
already sampled at its neighbours, paper §4.3), are trained with the same seed on random 48x48 crops
of 84x84 scattered-MNIST scenes with 11-15 digits (the paper's hardest §5.2 condition) and then parse
full 84x84 test scenes with 1, 2, ..., 20 digits, ``--test-per-count`` of each. Per count: AP averaged
over IoU 0.1:0.1:0.9, AP@0.5, mean absolute count error and count accuracy, with ConnComp alongside.
Without lateral connections neighbouring cells cannot tell that they see the same digit, which shows
as duplicate detections (over-counting) and lower AP.

Writes under ``--out`` (default ``benchmarks/spair_lateral_ablation``):

* ``spair_lateral_ablation.json`` -- settings, machine, steps and training seconds, overall and
  per-count metrics of both variants and ConnComp;
* ``by_count.png`` -- AP, absolute count error and 0-1 count error against the number of digits,
  one line per variant (Fig. 7);
* ``examples_lateral.png``, ``examples_no-lateral.png`` -- full test scenes with inferred (blue) and
  true (yellow) boxes, and the reconstructions;
* ``runs/lateral/``, ``runs/no-lateral/`` -- the training runs.

Reproduce the recorded numbers (CPU, 30 minutes of training per variant)::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_lateral_ablation.py --minutes 30 --no-progress
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import add_crops_args, command_line, crops_experiment, make_parser

NAME = "spair_lateral_ablation"
#: The paper's training condition for the ablation: 84x84 scenes with 11-15 digits.
TRAIN_DIGITS = (11, 15)
#: The two guides compared (SPAIR config overrides); everything else is SPAIR's default.
VARIANTS = {"lateral": {"lateral": True}, "no lateral": {"lateral": False}}


def build_parser():
    parser = make_parser(__doc__, NAME)
    add_crops_args(parser, train_digits=TRAIN_DIGITS)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the experiment; returns the JSON record it writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return crops_experiment(args, parser, NAME, command_line(NAME, argv), VARIANTS)


if __name__ == "__main__":
    main()
