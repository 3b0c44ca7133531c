"""SPAIR §5.2 / Fig. 3: train on 48x48 crops, parse full 84x84 scenes holding up to 20 digits.

SPAIR is trained on random 48x48 crops of 84x84 scattered-MNIST scenes with 6-10 digits (MNIST
training digits; the network never sees a full image) and then parses full 84x84 test scenes (MNIST
test digits) holding 1, 2, ..., 20 digits, ``--test-per-count`` of each. Per count it records AP
averaged over IoU 0.1:0.1:0.9, AP@0.5, the mean absolute count error and the count accuracy (one minus
the paper's 0-1 error), with ConnComp on the same scenes. Headline: the mean absolute count error over
the test scenes with 11-20 digits (``variants.SPAIR.count_mae_11_20``; target <= 1.0).

Writes under ``--out`` (default ``benchmarks/spair_generalization``):

* ``spair_generalization.json`` -- settings, machine, steps and training seconds, overall and
  per-count metrics of SPAIR and ConnComp;
* ``by_count.png`` -- Fig. 3's three panels: AP, absolute count error and 0-1 count error against the
  number of digits;
* ``examples_spair.png`` -- full test scenes with inferred (blue) and true (yellow) boxes, and the
  reconstructions;
* ``runs/spair/`` -- the training run (``ppl-scenes eval`` / ``ppl_scenes.load`` restore it).

Reproduce the recorded numbers (CPU, 30 minutes of training)::

    PPL_SCENES_DATA=/path/to/data python experiments/spair_generalization.py --minutes 30 --no-progress
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import add_crops_args, command_line, crops_experiment, make_parser

NAME = "spair_generalization"


def build_parser():
    parser = make_parser(__doc__, NAME)
    add_crops_args(parser, train_digits=None)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the experiment; returns the JSON record it writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return crops_experiment(args, parser, NAME, command_line(NAME, argv), {"SPAIR": {}})


if __name__ == "__main__":
    main()
