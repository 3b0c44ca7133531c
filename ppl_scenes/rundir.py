"""Run directories: the one place that reads and writes what a training run stores.

A run directory holds::

    config.json           the run's settings (model and its config, training settings, data, seed,
                          version, command), ``history`` (the earlier settings of a resumed run) and
                          ``checksums`` (the sha256 of each checkpoint file)
    weights.safetensors   the model's state dict                                  } the checkpoint
    state.safetensors     the checkpoint's other tensors (optimiser moments, RNG) }
    state.json            the rest (step, elapsed time, optimiser settings, ...)  }
    metrics.jsonl         one JSON record per logged step
    eval.json             the final evaluation
    detector.safetensors  SSDIR's detector, saved when its first stage ends
    tb/                   TensorBoard scalars (``TrainConfig.tensorboard``)
    .lock                 locked by the training that writes into the directory, while it runs

Nothing here unpickles: safetensors and JSON cannot run code, and every checkpoint file is checked
against the checksum ``config.json`` records before it is read. A checkpoint is written as
``NAME.pending`` files, committed by recording their checksums in ``config.json`` (an atomic
rename), then renamed into place; a pending file whose checksum is recorded is used where it lies,
so a crash at any point leaves the old checkpoint or the new one, and a reader never mixes the two.
Directories of the old pickle format (``checkpoint.pt``) are converted by :func:`upgrade`
(``ppl-scenes upgrade RUN_DIR``).

A low layer: this module imports only the standard library, numpy, torch and safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor
from torch.distributions import constraints

try:
    import fcntl
except ImportError:  # not POSIX: run directories are not locked
    fcntl = None

__all__ = [
    "CHECKPOINT_FILES",
    "CONFIG_FILE",
    "DETECTOR_FILE",
    "EVAL_FILE",
    "METRICS_FILE",
    "RunDir",
    "RunDirError",
    "atomic_write_bytes",
    "json_value",
    "load_tensors",
    "read_config",
    "read_metrics",
    "save_tensors",
    "strict_json",
    "upgrade",
    "write_json",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
#: The files of a checkpoint, each with its checksum in ``config.json``.
CHECKPOINT_FILES = (WEIGHTS_FILE, STATE_TENSORS_FILE, STATE_FILE)
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
DETECTOR_FILE = "detector.safetensors"
TENSORBOARD_DIR = "tb"
LOCK_FILE = ".lock"
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"
LEGACY_DETECTOR_FILE = "detector.pt"
STATE_FORMAT = "ppl_scenes.checkpoint/1"
_PENDING = ".pending"
#: Tries of a reader whose checkpoint was replaced while it read (a training writing it).
_READ_ATTEMPTS = 50


class RunDirError(ValueError):
    """A run directory is missing, incomplete, corrupt, unsafe to load or in use."""


# -- files and JSON --------------------------------------------------------------------------------
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


def _jsonable(obj):
    if isinstance(obj, Tensor):
        return strict_json(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _pending(path: Path) -> Path:
    return path.with_name(path.name + _PENDING)


# -- tensors ---------------------------------------------------------------------------------------
def _tensor_bytes(tensors: Mapping[str, Any], what: str) -> bytes:
    """``tensors`` in the safetensors format, as contiguous CPU copies; anything but a tensor is refused."""
    flat = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise RunDirError(f"{what} must map names to tensors; {name!r} holds a {type(value).__name__}")
        flat[name] = value.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
    return safetensors.torch.save(flat, metadata={"format": "pt"})


def _tensors_from_bytes(data: bytes, source: Path) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise RunDirError(f"{source} is corrupt: {err}") from None


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Tensor]) -> None:
    """Write ``tensors`` (name -> tensor, e.g. a state dict) to a safetensors file, atomically."""
    data = _tensor_bytes(tensors, str(path))
    atomic_write_bytes(Path(path), lambda f: f.write(data))


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The tensors of a safetensors file (reading it cannot run code), on ``map_location``.

    Raises:
        RunDirError: when the file is missing, unreadable or not a safetensors file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    return {k: v.to(map_location) for k, v in _tensors_from_bytes(data, path).items()}


# -- the checkpoint's structure as JSON ------------------------------------------------------------
#: The constraints of ``pyro.param`` values a checkpoint may hold: these by identity, ...
_CONSTRAINTS = {
    "real": constraints.real,
    "positive": constraints.positive,
    "nonnegative": constraints.nonnegative,
    "unit_interval": constraints.unit_interval,
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
}
#: ... these kinds by their bounds (a copy of ``real``, ``simplex`` or ``lower_cholesky`` by its kind).
_BOUNDED = {
    "interval": (constraints.interval, ("lower_bound", "upper_bound")),
    "greater_than": (constraints.greater_than, ("lower_bound",)),
    "greater_than_eq": (constraints.greater_than_eq, ("lower_bound",)),
    "less_than": (constraints.less_than, ("upper_bound",)),
}
_TAGS = ("__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__", "__constraint__")


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _encode(obj: Any, tensors: dict[str, Tensor], path: str) -> Any:
    """``obj`` as JSON, its tensors moved to ``tensors`` under names made from their ``path``."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return _encode(obj.item(), tensors, path)
    if isinstance(obj, Tensor):
        key = path or "tensor"
        while key in tensors:
            key += "'"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        data = _encode(obj.ravel().tolist(), tensors, path)
        return {"__ndarray__": obj.dtype.str, "shape": list(obj.shape), "data": data}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, _join(path, i)) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, _join(path, i)) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, _join(path, k)) for k, v in obj.items()}
        if not all(k is None or isinstance(k, bool | int | float | str) for k in obj):
            raise RunDirError(f"a checkpoint cannot hold the dict keys at {path!r}: {list(obj)[:5]}")
        return {
            "__dict__": [
                [_encode(k, tensors, path), _encode(v, tensors, _join(path, k))] for k, v in obj.items()
            ]
        }
    if isinstance(obj, constraints.Constraint):
        return _encode_constraint(obj, tensors, path)
    raise RunDirError(
        f"a checkpoint cannot hold a {type(obj).__name__} (at {path!r}): only tensors, numbers, strings, "
        "lists, tuples, dicts, numeric numpy arrays and the constraints "
        f"{', '.join([*_CONSTRAINTS, *_BOUNDED])}"
    )


def _encode_constraint(obj: constraints.Constraint, tensors: dict[str, Tensor], path: str) -> dict[str, Any]:
    for name, known in _CONSTRAINTS.items():
        if obj is known:
            return {"__constraint__": name}
    for name, (kind, bounds) in _BOUNDED.items():
        if type(obj) is kind:
            return {"__constraint__": name, "args": [_encode(getattr(obj, b), tensors, path) for b in bounds]}
    for name in ("real", "simplex", "lower_cholesky"):
        if type(obj) is type(_CONSTRAINTS[name]):
            return {"__constraint__": name}
    raise RunDirError(
        f"a checkpoint cannot hold the constraint {obj!r} (at {path!r}); known: "
        f"{', '.join([*_CONSTRAINTS, *_BOUNDED])}"
    )


class _Decoder:
    """Rebuilds what :func:`_encode` wrote, refusing anything it would not have written."""

    def __init__(self, tensors: dict[str, Tensor], source: Path) -> None:
        self.tensors, self.source, self.used = tensors, source, set()

    def fail(self, where: str, what: str):
        raise RunDirError(f"{self.source} is not a valid checkpoint: {what} (at {where or 'its top'})")

    def decode(self, obj: Any) -> Any:
        """The decoded ``obj``; every tensor of the file must be used."""
        value = self.value(obj, "")
        extra = sorted(set(self.tensors) - self.used)
        if extra:
            raise RunDirError(
                f"{self.source.with_name(STATE_TENSORS_FILE)} holds tensors no entry uses: {extra[:5]}"
            )
        return value

    def value(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, list):
            return [self.value(v, _join(where, i)) for i, v in enumerate(obj)]
        if not isinstance(obj, dict):
            self.fail(where, f"a {type(obj).__name__}")
        tags = [k for k in obj if k.startswith("__")]
        if not tags:
            return {k: self.value(v, _join(where, k)) for k, v in obj.items()}
        tag = tags[0]
        if len(tags) > 1 or tag not in _TAGS:
            self.fail(where, f"unknown entry {tag!r}")
        fields = {"__ndarray__": {"shape", "data"}, "__constraint__": {"args"}}.get(tag, set())
        if set(obj) - {tag} - fields:
            self.fail(where, f"unexpected fields {sorted(set(obj) - {tag} - fields)} in a {tag} entry")
        return getattr(self, "decode_" + tag.strip("_"))(obj, where)

    def decode_tensor(self, obj: dict, where: str) -> Tensor:
        key = obj["__tensor__"]
        if not isinstance(key, str) or key not in self.tensors:
            self.fail(where, f"a tensor {key!r} that {STATE_TENSORS_FILE} does not hold")
        self.used.add(key)
        return self.tensors[key]

    def decode_tuple(self, obj: dict, where: str) -> tuple:
        if not isinstance(obj["__tuple__"], list):
            self.fail(where, "a tuple that is not a list")
        return tuple(self.value(obj["__tuple__"], where))

    def decode_dict(self, obj: dict, where: str) -> dict:
        pairs = obj["__dict__"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            self.fail(where, "a dict that is not a list of pairs")
        out = {}
        for key, value in pairs:
            key = self.value(key, where)
            if not (key is None or isinstance(key, bool | int | float | str)):
                self.fail(where, f"a dict key of type {type(key).__name__}")
            out[key] = self.value(value, _join(where, key))
        return out

    def decode_float(self, obj: dict, where: str) -> float:
        if obj["__float__"] not in ("nan", "inf", "-inf"):
            self.fail(where, f"a float {obj['__float__']!r}")
        return float(obj["__float__"])

    def decode_ndarray(self, obj: dict, where: str) -> np.ndarray:
        try:
            dtype = np.dtype(obj["__ndarray__"])
            if dtype.kind not in "biuf":
                raise TypeError(f"dtype {dtype} is not numeric")
            return np.array(self.value(obj.get("data"), where), dtype=dtype).reshape(obj.get("shape"))
        except (TypeError, ValueError, OverflowError) as err:
            self.fail(where, f"a malformed array ({err})")

    def decode_constraint(self, obj: dict, where: str) -> constraints.Constraint:
        name, args = obj["__constraint__"], self.value(obj.get("args", []), where)
        if not isinstance(name, str):
            self.fail(where, f"a constraint named {name!r}")
        if name in _CONSTRAINTS and "args" not in obj:
            return _CONSTRAINTS[name]
        if name in _BOUNDED and isinstance(args, list) and len(args) == len(_BOUNDED[name][1]):
            if all(isinstance(a, int | float | Tensor) and not isinstance(a, bool) for a in args):
                return _BOUNDED[name][0](*args)
        self.fail(
            where,
            f"a constraint {name!r} with arguments {args!r} (known: {', '.join([*_CONSTRAINTS, *_BOUNDED])})",
        )


# -- the run directory -----------------------------------------------------------------------------
class RunDir:
    """A run directory and everything stored in it (see the module docstring for its files).

    Reading needs nothing; a training (or :func:`upgrade`) that writes takes :meth:`lock` first, so
    that two never write into one directory. As a context manager it locks on entry and closes
    (:meth:`close`) on exit.

    Args:
        path: the directory (made by the first write or by :meth:`lock` when it does not exist).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._writer = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __enter__(self) -> RunDir:
        self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lock and life ---------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the directory for this process: an exclusive OS lock on ``RUN_DIR/.lock``.

        The lock ends with :meth:`unlock` or :meth:`close`, or with the process (a crash included),
        so a lock file left behind by a process that died blocks nothing.

        Raises:
            RunDirError: when another training holds it (in this process or another), or the path
                is a file.
        """
        if self._lock_fd is not None or fcntl is None:
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{str(self.path)!r} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise RunDirError(
                    f"run directory {str(self.path)!r} is in use by another training"
                    f"{f' (process {holder})' if holder.isdigit() else ''}; wait for it to end or use "
                    "another path"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                here, mine = os.stat(path), os.fstat(fd)
                if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            os.close(fd)  # the holder removed the file as it let go: lock the one there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    @property
    def locked(self) -> bool:
        """Whether this object holds the directory's lock."""
        return self._lock_fd is not None

    def unlock(self) -> None:
        """Let go of the lock (and remove the lock file); nothing when not locked."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        try:
            with contextlib.suppress(OSError):
                os.unlink(self.path / LOCK_FILE)  # while still locked: a waiter then locks a new file
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the TensorBoard writer (if any) and :meth:`unlock`."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        finally:
            self.unlock()

    def check_new(self) -> None:
        """Refuse a file, or a non-empty directory (a lock file alone does not count), for a new run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{str(self.path)!r} exists and is not a directory")
        if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise RunDirError(
                f"run directory {str(self.path)!r} already exists and is not empty; "
                "use resume or another path"
            )

    # -- config.json -----------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json``, raising :class:`RunDirError` when missing or unreadable."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {str(self.path)!r} does not exist")
        path = self.path / CONFIG_FILE
        if not path.is_file():
            raise RunDirError(f"{str(self.path)!r} is not a run directory: it has no {CONFIG_FILE}")
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"{path} is corrupt: {err}") from None
        if not isinstance(config, dict) or not isinstance(config.get("model"), str):
            raise RunDirError(f"{path} is corrupt: it names no model")
        if not isinstance(config.get("model_config", {}), dict):
            raise RunDirError(f"{path} is corrupt: its model_config is not a JSON object")
        return config

    def write_config(self, settings: Mapping[str, Any], resumed_at: int | None = None) -> bool:
        """Record the run's settings in ``config.json``; returns whether the file was written.

        A new run (``resumed_at`` None) writes them as they are. A run resumed at step ``resumed_at``
        whose settings changed (a budget, the decay, model settings) keeps each earlier record in
        ``history`` with ``until_step``, the step it reached; with unchanged settings nothing is
        written. The checkpoint's checksums are kept.
        """
        record = json_value(dict(settings))
        reserved = sorted({"history", "checksums"} & set(record))
        if reserved:
            raise ValueError(f"run settings must not set {reserved}: config.json keeps those itself")
        if resumed_at is not None:
            earlier = self.read_config()
            history = earlier.pop("history", [])
            checksums = earlier.pop("checksums", None)
            if record == earlier:
                return False
            record["history"] = [*history, {**earlier, "until_step": resumed_at}]
            if checksums is not None:
                record["checksums"] = checksums
        write_json(self.path / CONFIG_FILE, record)
        return True

    # -- checkpoint ------------------------------------------------------------------------------
    def checksums(self) -> dict[str, str]:
        """The sha256 of each checkpoint file as ``config.json`` records them.

        Raises:
            RunDirError: when no checkpoint is recorded (or only a legacy pickled one lies here).
        """
        recorded = self.read_config().get("checksums")
        if recorded is None:
            if (self.path / LEGACY_CHECKPOINT_FILE).is_file():
                raise RunDirError(
                    f"{str(self.path)!r} holds a checkpoint in the old pickle format "
                    f"({LEGACY_CHECKPOINT_FILE}), which is not loaded: unpickling can run code. "
                    f"Convert it with `ppl-scenes upgrade {self.path}` (it loads only tensors)"
                )
            raise RunDirError(f"{str(self.path)!r} has no checkpoint: was it trained?")
        if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
            raise RunDirError(f"{self.path / CONFIG_FILE} is corrupt: its checksums are not strings by file")
        return recorded

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint is recorded here (a legacy ``checkpoint.pt`` counts: loading it says
        what to do)."""
        if (self.path / LEGACY_CHECKPOINT_FILE).is_file():
            return True
        try:
            return "checksums" in self.read_config()
        except RunDirError:
            return False

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write a checkpoint: ``state["model"]`` (the model's state dict) and the rest of ``state``.

        ``state`` may hold tensors, numbers, strings, ``None``, lists, tuples, dicts (any scalar
        keys), numeric numpy arrays and the allow-listed ``torch.distributions`` constraints. The
        writer should hold the :meth:`lock`.
        """
        if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
            raise RunDirError("a checkpoint needs the model's state dict under 'model'")
        tensors: dict[str, Tensor] = {}
        rest = _encode({k: v for k, v in state.items() if k != "model"}, tensors, "")
        self._commit(
            {
                WEIGHTS_FILE: _tensor_bytes(state["model"], "the model's state dict"),
                STATE_TENSORS_FILE: _tensor_bytes(tensors, "the checkpoint's state"),
                STATE_FILE: json.dumps({"format": STATE_FORMAT, "state": rest}, allow_nan=False).encode(),
            }
        )

    def _commit(self, files: dict[str, bytes]) -> None:
        """Write ``files`` as pending, record their checksums (the commit), rename them into place."""
        config = self.read_config()
        self._settle_pending()
        sums = {name: _sha256(data) for name, data in files.items()}
        try:
            for name, data in files.items():
                atomic_write_bytes(_pending(self.path / name), lambda f, data=data: f.write(data))
            write_json(self.path / CONFIG_FILE, {**config, "checksums": sums})
        except BaseException:
            with contextlib.suppress(Exception):
                self._settle_pending()  # drops the pending files, unless the commit went through
            raise
        self._settle_pending(sums)

    def _settle_pending(self, recorded: dict[str, str] | None = None) -> None:
        """Rename pending files of the recorded checkpoint into place; delete those never committed.

        ``recorded``: the checksums just committed (their files need not be read again).
        """
        trusted = recorded is not None
        if recorded is None:
            recorded = self.read_config().get("checksums")
            recorded = recorded if isinstance(recorded, dict) else {}
        for name in CHECKPOINT_FILES:
            pending = _pending(self.path / name)
            if not pending.exists():
                continue
            data = None if trusted else _read_if_exists(pending)
            if trusted or (data is not None and _sha256(data) == recorded.get(name)):
                os.replace(pending, self.path / name)
            else:
                pending.unlink(missing_ok=True)

    def _read_recorded(self, name: str, expected: str) -> tuple[bytes | None, str]:
        """The bytes of checkpoint file ``name`` whose sha256 is ``expected`` (its pending copy first),
        or ``None`` and what is wrong."""
        path = self.path / name
        for candidate in (_pending(path), path):
            data = _read_if_exists(candidate)
            if data is not None and _sha256(data) == expected:
                return data, ""
        if not path.exists():
            return None, f"{path} is missing: the run directory is incomplete"
        return None, f"{path} does not match its sha256 in {CONFIG_FILE}: it is corrupt or was changed"

    def _read_checkpoint_files(self, names: tuple[str, ...]) -> dict[str, bytes]:
        """The checked bytes of checkpoint files ``names``, all of one checkpoint.

        A file that does not match is an error only when no checkpoint was committed while reading
        it; otherwise (a training writing here) the newer checkpoint is read.
        """
        for _ in range(_READ_ATTEMPTS):
            recorded = self.checksums()
            files, problem = {}, ""
            for name in names:
                if name not in recorded:
                    raise RunDirError(
                        f"{self.path / CONFIG_FILE} is corrupt: it records no checksum of {name}"
                    )
                data, problem = self._read_recorded(name, recorded[name])
                if data is None:
                    break
                files[name] = data
            else:
                return files
            if self.checksums() == recorded:
                raise RunDirError(problem)
            time.sleep(0.02)
        raise RunDirError(f"the checkpoint in {str(self.path)!r} kept changing while it was read; try again")

    def load_checkpoint(
        self, map_location: str | torch.device = "cpu", weights_only: bool = False
    ) -> dict[str, Any]:
        """The checkpoint as :meth:`save_checkpoint` was given it, every file checked against its checksum.

        Args:
            map_location: device of the tensors.
            weights_only: read only the weights and the step: ``{"model": ..., "step": ...}``.

        Raises:
            RunDirError: no checkpoint (or a legacy one: it says to run ``ppl-scenes upgrade``), a
                missing, changed or malformed file.
        """
        names = (WEIGHTS_FILE, STATE_FILE) if weights_only else CHECKPOINT_FILES
        files = self._read_checkpoint_files(names)
        source = self.path / STATE_FILE
        try:
            tree = json.loads(files[STATE_FILE])
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise RunDirError(f"{source} is corrupt: {err}") from None
        if (
            not isinstance(tree, dict)
            or tree.get("format") != STATE_FORMAT
            or not isinstance(tree.get("state"), dict)
        ):
            raise RunDirError(f"{source} is not a checkpoint of format {STATE_FORMAT!r}")
        if weights_only:
            state = {"step": tree["state"].get("step", 0)}
        else:
            tensors = _tensors_from_bytes(files[STATE_TENSORS_FILE], self.path / STATE_TENSORS_FILE)
            tensors = {k: v.to(map_location) for k, v in tensors.items()}
            try:
                state = _Decoder(tensors, source).decode(tree["state"])
            except RecursionError:
                raise RunDirError(f"{source} is corrupt: it is nested too deeply") from None
        step = state.get("step", 0)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise RunDirError(f"{source} is corrupt: its step is {step!r}")
        weights = _tensors_from_bytes(files[WEIGHTS_FILE], self.path / WEIGHTS_FILE)
        return {**state, "model": {k: v.to(map_location) for k, v in weights.items()}}

    # -- metrics, evaluation, TensorBoard --------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON object on one line) to ``metrics.jsonl``."""
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl`` (empty when the run logged nothing yet).

        A half-written last line (a run interrupted mid-write, or still writing) is ignored.

        Raises:
            RunDirError: when a line before the last one is not a JSON object.
        """
        path = self.path / METRICS_FILE
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

    def truncate_metrics(self, step: int) -> None:
        """Drop the records after ``step`` (a resumed run replays the steps after its checkpoint)."""
        path = self.path / METRICS_FILE
        if path.is_file():
            kept = [json.dumps(r) for r in self.read_metrics() if r.get("step", 0) <= step]
            atomic_write_bytes(path, lambda f: f.write("".join(ln + "\n" for ln in kept).encode()))

    def add_scalars(self, record: dict[str, Any]) -> None:
        """Write the numbers of a metrics record as TensorBoard scalars under ``RUN_DIR/tb``.

        Raises:
            RuntimeError: when the ``tensorboard`` package is not installed.
        """
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError(
                    "tensorboard=True needs the 'tensorboard' package (pip install tensorboard)"
                ) from None
            self._writer = SummaryWriter(str(self.path / TENSORBOARD_DIR))
        for k, v in record.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                self._writer.add_scalar(k, v, record["step"])

    def read_eval(self) -> dict[str, Any]:
        """The final evaluation in ``eval.json``, raising :class:`RunDirError` when missing or corrupt."""
        path = self.path / EVAL_FILE
        try:
            results = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"{path} cannot be read: {err}") from None
        if not isinstance(results, dict):
            raise RunDirError(f"{path} is corrupt: not a JSON object")
        return results

    def write_eval(self, results: dict[str, Any]) -> None:
        """Write the final evaluation to ``eval.json`` (strict JSON, atomically)."""
        write_json(self.path / EVAL_FILE, results)


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json`` (:meth:`RunDir.read_config`)."""
    return RunDir(run_dir).read_config()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of the run's ``metrics.jsonl`` (:meth:`RunDir.read_metrics`)."""
    return RunDir(run_dir).read_metrics()


# -- legacy run directories ------------------------------------------------------------------------
def _numpy_rng_globals() -> list:
    """What unpickling the numpy array of ``np.random.get_state()`` needs, and nothing else."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    allowed = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # the name numpy 1 pickles
        (_reconstruct, "numpy._core.multiarray._reconstruct"),  # the name numpy 2 pickles
        np.ndarray,
        np.dtype,
    ]
    uint32 = getattr(getattr(np, "dtypes", None), "UInt32DType", None)
    return allowed if uint32 is None else [*allowed, uint32]


def _legacy_globals() -> list:
    """What a legacy checkpoint may name besides tensors: the numpy RNG array's globals and the
    classes of the allow-listed constraints (the old trainer saved ``pyro.get_param_store().get_state()``
    whole, so a model that calls ``pyro.module``, like the saccade model, pickled a ``constraints.real``
    copy for each of its parameters)."""
    kinds = {type(c) for c in _CONSTRAINTS.values()} | {kind for kind, _ in _BOUNDED.values()}
    return [*_numpy_rng_globals(), *sorted(kinds, key=lambda k: k.__qualname__)]


def _load_legacy(path: Path) -> Any:
    """A pickled ``.pt`` file read with ``torch.load(weights_only=True)`` and the allow-list of
    :func:`_legacy_globals`."""
    if not hasattr(torch.serialization, "safe_globals"):
        raise RunDirError(f"converting {path} safely needs torch >= 2.5 (torch.serialization.safe_globals)")
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:  # lists the globals the pickle names, without loading them
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            needed = []
        allowed = {
            g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _legacy_globals()
        }
        unsafe = [g for g in needed if g not in allowed]
        if not unsafe:
            raise RunDirError(f"{path} is corrupt: {err}") from None
        raise RunDirError(
            f"{path} is not converted: besides tensors it holds {', '.join(unsafe)}, and unpickling "
            "those could run code. It is left as it is; only load it if you trust where it came from"
        ) from None
    except Exception as err:  # torch raises many kinds of errors for damaged files
        raise RunDirError(f"{path} is corrupt: {err}") from None


def _retire(path: Path) -> Path:
    """Rename a converted file to ``NAME.legacy`` (``NAME.legacy-2``, ... when taken); never delete it."""
    target, k = path.with_name(path.name + ".legacy"), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.legacy-{k}")
    os.replace(path, target)
    return target


def upgrade(run_dir: str | os.PathLike) -> list[str]:
    """Convert a run directory of the old pickle format to safetensors and checksums.

    ``checkpoint.pt`` and SSDIR's ``detector.pt`` are read with ``torch.load(weights_only=True)``,
    which allows tensors and plain containers, plus exactly the numpy globals of
    ``np.random.get_state()``'s array and the classes of the allow-listed constraints (the old
    trainer saved the whole ``pyro`` param store, constraints included); their contents are written
    as this module's files, then the old files are renamed to ``NAME.legacy`` (never deleted).

    Returns:
        the names of the files converted (empty: nothing to convert).

    Raises:
        RunDirError: not a run directory, one in use by a training, or an old file that holds
            anything else (unpickling it could run code) or is damaged; nothing is changed then.
    """
    rd = RunDir(run_dir)
    rd.read_config()
    converted = []
    with rd:
        legacy = rd.path / LEGACY_CHECKPOINT_FILE
        if legacy.is_file():
            state = _load_legacy(legacy)
            if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
                raise RunDirError(f"{legacy} is corrupt: no model weights in it")
            rd.save_checkpoint(state)
            _retire(legacy)
            converted.append(LEGACY_CHECKPOINT_FILE)
        detector = rd.path / LEGACY_DETECTOR_FILE
        if detector.is_file():
            weights = _load_legacy(detector)
            if not isinstance(weights, Mapping):
                raise RunDirError(f"{detector} is corrupt: it holds no state dict")
            save_tensors(rd.path / DETECTOR_FILE, weights)
            _retire(detector)
            converted.append(LEGACY_DETECTOR_FILE)
    return converted
