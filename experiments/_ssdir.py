"""What the SSDIR experiments share: their flags for the scenes and the detector stage, and step counts."""

from __future__ import annotations

import argparse

from _common import non_negative_int, positive_int

from ppl_scenes import SSDIRConfig


def add_ssdir_args(parser: argparse.ArgumentParser) -> None:
    """``--detector-steps``, ``--canvas-size`` and ``--digit-sizes`` (multi-scale scenes)."""
    parser.add_argument(
        "--detector-steps",
        type=non_negative_int,
        metavar="N",
        help="SSDIR's supervised detector steps before its --steps SVI steps "
        f"(default: {SSDIRConfig.detector_steps})",
    )
    parser.add_argument("--canvas-size", type=positive_int, default=128, metavar="S", help="scene side")
    parser.add_argument(
        "--digit-sizes",
        nargs=2,
        type=positive_int,
        default=[16, 64],
        metavar=("MIN", "MAX"),
        help="digit sides",
    )


def ssdir_overrides(args, config_overrides: dict) -> dict:
    """SSDIR's config overrides: the scenes' size, ``--detector-steps``, then ``--set``-style items."""
    out = {"image_size": (args.canvas_size, args.canvas_size), **config_overrides}
    if args.detector_steps is not None:
        out["detector_steps"] = args.detector_steps
    return out


def ssdir_steps(args, overrides: dict) -> int | None:
    """The run's total steps: ``--steps`` counts SVI steps, and SSDIR's detector steps come first."""
    if args.steps is None:
        return None
    return args.steps + overrides.get("detector_steps", SSDIRConfig.detector_steps)
