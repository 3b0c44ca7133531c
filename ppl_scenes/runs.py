"""Restoring trained models from their run directories.

``load(run_dir)`` rebuilds any trained model from its run directory: its config from ``config.json``,
its weights from the checksummed ``weights.safetensors`` (nothing is unpickled). What a run directory
holds, and every read and write of it, is :mod:`ppl_scenes.rundir`; its names are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ppl_scenes.config import replace_config
from ppl_scenes.models import MODELS
from ppl_scenes.rundir import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    RunDir,
    RunDirError,
    atomic_write_bytes,
    json_value,
    read_config,
    read_metrics,
    strict_json,
    upgrade,
    write_json,
)

__all__ = [
    "CONFIG_FILE",
    "EVAL_FILE",
    "METRICS_FILE",
    "RunDir",
    "RunDirError",
    "atomic_write_bytes",
    "build_model",
    "json_value",
    "load",
    "read_config",
    "read_metrics",
    "strict_json",
    "upgrade",
    "write_json",
]


def build_model(name: str, model_config: dict[str, Any] | None = None):
    """Instantiate a registered model by name from a (JSON) config dict."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    config = replace_config(cls.config_class(), model_config or {})
    return cls(config)


def load(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Restore a trained model from its run directory, in eval mode.

    Raises:
        RunDirError: when the directory, its config or its checkpoint is missing or corrupt, or the
            checkpoint is of the old pickle format (``ppl-scenes upgrade RUN_DIR`` converts it).
    """
    run = RunDir(run_dir)
    config = run.read_config()
    try:
        model = build_model(config["model"], config.get("model_config"))
    except ValueError as err:
        raise RunDirError(f"{Path(run_dir) / CONFIG_FILE}: {err}") from None
    state = run.load_checkpoint(map_location, weights_only=True)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise RunDirError(f"checkpoint in {run_dir} does not fit its model config: {err}") from None
    model.step = state["step"]
    model.set_step(model.step)
    return model.eval()
