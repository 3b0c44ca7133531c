"""Run directories: ``config.json``, ``checkpoint.pt``, ``metrics.jsonl`` and ``eval.json``.

``load(run_dir)`` rebuilds any trained model from its run directory. Checkpoints are written
atomically (temporary file, then rename), so an interrupted write never leaves a corrupt checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"


class RunDirError(ValueError):
    """A run directory is missing, incomplete or corrupt."""


def atomic_write_bytes(path: Path, write) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temporary file beside it, then rename.

    A failure at any point leaves the old file (if any) as it was and no temporary file behind. The
    new file gets the usual permissions (umask), not the private ones of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as ``None``, so that it dumps as strict JSON.

    (Metrics are NaN where they are undefined, e.g. clustering scores with no matched object; Python's
    ``json`` would write a bare ``NaN`` that other JSON readers refuse.)
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON text: the one encoding :func:`write_json` and :func:`json_value` share."""
    return json.dumps(strict_json(data), indent=indent, default=_jsonable, allow_nan=False)


def json_value(data: Any) -> Any:
    """``data`` as it reads back from :func:`write_json` (tuples as lists, NaN as ``None``, ...)."""
    return json.loads(_json_text(data))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented strict JSON (NaN and infinities as ``null``), atomically."""
    text = _json_text(data, indent=2)
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Save a training checkpoint atomically to ``run_dir/checkpoint.pt``."""
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_FILE, lambda f: torch.save(state, f))


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json``, raising :class:`RunDirError` when missing or unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a run directory: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path} is corrupt: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise RunDirError(f"{path} is corrupt: it names no model")
    if not isinstance(config.get("model_config", {}), dict):
        raise RunDirError(f"{path} is corrupt: its model_config is not a JSON object")
    return config


def read_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The run's ``checkpoint.pt``, raising :class:`RunDirError` when missing or corrupt."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} has no {CHECKPOINT_FILE}: was it trained?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many kinds of errors for damaged files
        raise RunDirError(f"{path} is corrupt: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise RunDirError(f"{path} is corrupt: no model weights in it")
    return state


def build_model(name: str, model_config: dict[str, Any] | None = None):
    """Instantiate a registered model by name from a (JSON) config dict."""
    import ppl_scenes.models  # noqa: F401  (registers the models)
    from ppl_scenes.models.base import MODELS, replace_config

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    config = replace_config(cls.config_class(), model_config or {})
    return cls(config)


def load(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Restore a trained model from its run directory, in eval mode.

    Raises:
        RunDirError: when the directory, its config or its checkpoint is missing or corrupt.
    """
    config = read_config(run_dir)
    try:
        model = build_model(config["model"], config.get("model_config"))
    except ValueError as err:
        raise RunDirError(f"{Path(run_dir) / CONFIG_FILE}: {err}") from None
    state = read_checkpoint(run_dir, map_location)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise RunDirError(f"checkpoint in {run_dir} does not fit its model config: {err}") from None
    model.step = int(state.get("step", 0))
    model.set_step(model.step)
    return model.eval()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (empty when the run logged nothing yet).

    A half-written last line (a run interrupted mid-write, or still writing) is ignored.

    Raises:
        RunDirError: when a line before the last one is not a JSON object.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if i == len(lines) - 1:
                break
            raise RunDirError(f"{path} is corrupt at line {i + 1}: {line[:80]!r}")
        records.append(record)
    return records


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return strict_json(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
