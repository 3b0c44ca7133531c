"""The training machinery every model shares: batches, logging, checkpoints, resume, bad steps.

:class:`Trainer` runs the loop; subclasses say what one step is (:class:`ppl_scenes.infer.svi.SVITrainer`
takes an ELBO step, MIST's lifting trainer its alternating steps). Batches are a pure function of
``(seed, step)`` and the RNG states are checkpointed, so a resumed CPU run reproduces the
uninterrupted run's losses exactly.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppl_scenes._version import __version__
from ppl_scenes.checks import check_images, check_non_negative, check_positive, check_positive_int
from ppl_scenes.config import config_to_dict
from ppl_scenes.infer.allocator import keep_freed_memory
from ppl_scenes.models.base import Supervised
from ppl_scenes.runs import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    RunDirError,
    atomic_write_bytes,
    json_value,
    read_checkpoint,
    read_config,
    read_metrics,
    save_checkpoint,
    write_json,
)


@dataclass
class TrainConfig:
    """Settings of a training run (the models' ``default_train`` override these defaults).

    Attributes:
        steps: number of optimisation steps (upper bound when ``minutes`` is set too).
        minutes: wall-clock budget of the run (a resumed run counts the time spent before it);
            training stops after the step that crosses it (0 = none).
        batch_size: images per step.
        lr: Adam learning rate of every parameter not named in ``lr_per_module``.
        lr_per_module: learning rates by module path, e.g. ``{"encoder.backbone": 1e-4}``: a key applies
            to the parameters of that module and its submodules (``"encoder"`` does not match
            ``"encoder2.weight"``); the longest matching key wins; a key matching no parameter is an
            error.
        clip_norm: gradient norm clipping (0 = off).
        num_particles: ELBO particles per step.
        log_every: steps between ``metrics.jsonl`` records.
        checkpoint_every: steps between checkpoints (one is always written at the end; none is
            written at a step that was skipped as non-finite).
        eval_every: steps between evaluations (0 = only at the end).
        max_bad_steps: consecutive non-finite steps after which training stops with
            :class:`TrainingDiverged`.
        seed: seeds the model's randomness and the batch order.
        device: ``cpu`` or ``cuda``.
        tensorboard: also write TensorBoard scalars under ``RUN_DIR/tb`` (needs ``tensorboard``).
        lr_decay_from: fraction of the budget after which every learning rate decays (1 = never, the
            default). The budget's fraction is the larger of ``step / steps`` and, with ``minutes``,
            the share of the wall-clock budget spent, so a run limited by minutes decays over its
            last minutes. Late in a run, Adam's constant rate keeps the metrics swinging from one
            evaluation to the next; a decayed rate settles them.
        lr_decay_to: the factor the learning rates reach at the end of the budget (half-cosine from 1).
        keep_freed_memory: when the scenes are generated batch by batch (a dataset too large to hold
            in memory), fix glibc's malloc thresholds so freed tensors stay in the heap for the next
            step (:func:`ppl_scenes.infer.allocator.keep_freed_memory`; about a quarter less time a step).
            Default True; it changes nothing for data held in memory.
    """

    steps: int = 1000
    minutes: float = 0.0
    batch_size: int = 32
    lr: float = 1e-3
    lr_per_module: dict[str, float] = field(default_factory=dict)
    clip_norm: float = 10.0
    num_particles: int = 1
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int = 0
    max_bad_steps: int = 20
    seed: int = 0
    device: str = "cpu"
    tensorboard: bool = False
    lr_decay_from: float = 1.0
    lr_decay_to: float = 0.1
    keep_freed_memory: bool = True

    def __post_init__(self):
        self.steps = check_positive_int(self.steps, "steps")
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.lr = check_positive(self.lr, "lr")
        self.log_every = check_positive_int(self.log_every, "log_every")
        self.checkpoint_every = check_positive_int(self.checkpoint_every, "checkpoint_every")
        self.max_bad_steps = check_positive_int(self.max_bad_steps, "max_bad_steps")
        self.num_particles = check_positive_int(self.num_particles, "num_particles")
        self.minutes = check_non_negative(self.minutes, "minutes")
        self.clip_norm = check_non_negative(self.clip_norm, "clip_norm")
        self.eval_every = check_non_negative(self.eval_every, "eval_every", integer=True)
        self.seed = check_non_negative(self.seed, "seed", integer=True)
        if not isinstance(self.lr_per_module, dict):
            raise ValueError(f"lr_per_module must be a dict of prefix -> lr, got {self.lr_per_module!r}")
        for prefix, lr in self.lr_per_module.items():
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"lr_per_module keys must be parameter-name prefixes, got {prefix!r}")
            check_positive(lr, f"lr_per_module[{prefix!r}]")
        for name in ("lr_decay_from", "lr_decay_to"):
            value = check_non_negative(getattr(self, name), name)
            if value > 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
            setattr(self, name, value)
        for name in ("tensorboard", "keep_freed_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not (
            self.device in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)
        ):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError("device 'cuda' was asked for but CUDA is not available on this machine")
            index = int(self.device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"device {self.device!r} was asked for but this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s)"
                )


class NonFiniteStep(Exception):
    """Raised inside a step whose loss or gradient is not finite; the step is skipped."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is left intact."""


#: Training sets larger than this (estimated from the first image) are not stacked into one tensor:
#: their batches are generated on demand (:class:`LazyScenes`). 2 GiB: e.g. 20,000 1024x1024 scenes
#: (80 GB as float32) would not fit in memory.
MAX_IN_MEMORY_BYTES = 2 * 2**30


class LazyScenes:
    """A dataset's images fetched batch by batch, for training sets too large to hold in memory.

    Indexing with a tensor of scene indices (or a slice) generates those scenes and returns their
    images stacked ``[B, C, H, W]`` (validated as training images); the targets of the last batch
    fetched are kept in :attr:`last_targets` for the model's supervision.
    """

    def __init__(self, data) -> None:
        self.data = data
        self.last_targets: list[Any] = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> Tensor:
        rows = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        items = [self.data[int(i)] for i in rows]
        self.last_targets = [item[1] if len(item) > 1 else None for item in items]
        try:
            images = torch.stack([item[0] for item in items])
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"training images differ in shape or are not tensors: {err}") from None
        return check_images(images, name="training images")


def materialize(data, desc: str = "scenes", progress: bool = True, with_targets: bool = False):
    """Images of a dataset of ``(image, target)`` pairs (or a tensor) as one ``[N, C, H, W]`` tensor.

    With ``with_targets`` the result is ``(images, targets)``, the targets a list in the images' order
    (a bare image tensor has none: the list is empty).
    """
    if isinstance(data, Tensor):
        images = check_images(data, name="training images")
        return (images, []) if with_targets else images
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ValueError(
            f"training data must be an image tensor or a dataset of (image, target) pairs, "
            f"got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError("the training dataset is empty")
    disable = not progress or len(data) < 2000
    items = [data[i] for i in tqdm(range(len(data)), desc=f"generating {desc}", leave=False, disable=disable)]
    images = [item[0] for item in items]
    if not all(isinstance(im, Tensor) for im in images):
        raise ValueError("training data must yield (image, target) pairs whose image is a tensor [C, H, W]")
    try:
        stacked = torch.stack(images)
    except RuntimeError as err:
        raise ValueError(f"training images differ in shape: {err}") from None
    stacked = check_images(stacked, name="training images")
    if not with_targets:
        return stacked
    return stacked, [item[1] if len(item) > 1 else None for item in items]


def _too_large(data) -> bool:
    """Whether a dataset's images would take more than :data:`MAX_IN_MEMORY_BYTES` stacked."""
    if isinstance(data, Tensor) or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        return False
    if len(data) == 0:
        return False
    first = data[0]
    image = first[0] if isinstance(first, tuple | list) else first
    if not isinstance(image, Tensor):
        return False
    return image.numel() * image.element_size() * len(data) > MAX_IN_MEMORY_BYTES


def _fork_rng(device: torch.device):
    """Fork the RNGs a computation on ``device`` may draw from (CPU always; the CUDA device if used)."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.random.fork_rng(devices=[index], device_type="cuda")


def _module_prefix_matches(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` lies in module ``prefix`` (``.`` or Pyro's ``$$$`` separate levels)."""
    if name == prefix or prefix.endswith((".", "$")):
        return name.startswith(prefix)
    return name.startswith(prefix + ".") or name.startswith(prefix + "$$$")


class Trainer:
    """Runs a training loop with logging, evaluation, checkpoints and resume.

    Every ``log_every`` steps (and at the last step) a record ``{"step", "loss", ...}`` is appended to
    ``RUN_DIR/metrics.jsonl``; evaluations (every ``eval_every`` steps and at the end) add their
    results to the record of their step, prefixed ``eval/``, and the final one is written to
    ``eval.json``. A step whose loss or gradient is not finite changes nothing and is counted in
    ``skipped_steps``; ``max_bad_steps`` of them in a row raise :class:`TrainingDiverged`.

    Args:
        model: a :class:`ppl_scenes.models.base.SceneModel`.
        config: the run's :class:`TrainConfig`.
        out: the run directory (None: train without writing anything).
        eval_fn: ``eval_fn(model) -> dict`` called every ``eval_every`` steps and at the end.
        run_info: extra entries for ``config.json`` (e.g. the dataset and its settings).
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        model,
        config: TrainConfig | None = None,
        out: str | Path | None = None,
        eval_fn: Callable[[Any], dict[str, float]] | None = None,
        run_info: dict[str, Any] | None = None,
        progress: bool = True,
    ):
        if config is not None and not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if eval_fn is not None and not callable(eval_fn):
            raise ValueError(f"eval_fn must be callable, got {type(eval_fn).__name__}")
        if run_info is not None and not isinstance(run_info, dict):
            raise ValueError(f"run_info must be a dict, got {type(run_info).__name__}")
        self.model = model
        self.config = config or TrainConfig()
        self.out = Path(out) if out is not None else None
        self.eval_fn = eval_fn
        self.run_info = run_info or {}
        self.progress = progress
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step = 0
        self.bad_steps = 0
        self.skipped_steps = 0
        self.elapsed = 0.0
        self.last_checkpoint_step: int | None = None
        self._matched_prefixes: set[str] = set()
        self._writer = None
        self.batch_index: Tensor | None = None
        self.supervision: dict[str, Tensor] | None = None
        self._lazy: LazyScenes | None = None
        #: The training images (:meth:`prepare_data`'s result), set by :meth:`fit`.
        self.images: Tensor | LazyScenes | None = None

    # -- what subclasses provide ---------------------------------------------------------------
    def setup(self, example_batch: Tensor) -> None:
        """Build ``self.optimizers`` (called once, before any checkpoint is restored)."""
        raise NotImplementedError

    def train_step(self, batch: Tensor) -> dict[str, float]:
        """One optimisation step; returns at least ``{"loss": ...}``; raises :class:`NonFiniteStep`.

        A step that raises :class:`NonFiniteStep` must not have changed any parameter.
        """
        raise NotImplementedError

    def prepare_data(self, data) -> Tensor:
        """The ``[N, C, H, W]`` images to train on (called once by :meth:`fit`).

        A model that learns from labels too (:class:`~ppl_scenes.models.base.Supervised`, e.g. the
        saccade model's ``y``): it is handed the scenes' targets once, and
        :meth:`batch_supervision` then gives the rows of the current batch. A trainer may also
        override this to keep targets of its own (MIST's); during :meth:`train_step`,
        ``self.batch_index`` holds the indices of the batch's scenes into these images.
        """
        self._lazy = None
        if _too_large(data):
            self._lazy = LazyScenes(data)
            if self.config.keep_freed_memory:
                keep_freed_memory()
            self.supervision = {} if isinstance(self.model, Supervised) else None
            return self._lazy
        if not isinstance(self.model, Supervised):
            self.supervision = None
            return materialize(data, progress=self.progress)
        images, targets = materialize(data, progress=self.progress, with_targets=True)
        self.supervision = self.model.supervision(targets)
        return images

    def batch_supervision(self, device) -> dict[str, Tensor]:
        """The model's supervision (see :meth:`prepare_data`) for the current batch; empty when none."""
        if self.supervision is not None and self._lazy is not None:
            labels = self.model.supervision(self._lazy.last_targets)
            return {k: v.to(device) for k, v in labels.items()}
        if not self.supervision:
            return {}
        return {k: v[self.batch_index].to(device) for k, v in self.supervision.items()}

    # -- shared machinery ----------------------------------------------------------------------
    def make_optimizer(
        self, params: list[torch.nn.Parameter], names: dict[int, str], lr: float | None = None
    ):
        """Adam over ``params``, with per-module learning rates from ``config.lr_per_module``.

        Parameters no ``lr_per_module`` prefix names take the base rate times the model's
        :meth:`~ppl_scenes.models.base.SceneModel.learning_rate_factors` (1 where none applies).

        Args:
            params: the parameters to optimise.
            names: ``id(param) -> name`` (e.g. from ``model.named_parameters()``), for the prefixes.
            lr: learning rate of the parameters no prefix matches (default ``config.lr``).
        """
        base_lr = lr if lr is not None else self.config.lr
        factors = self.model.learning_rate_factors()
        groups: dict[float, list] = {}
        for p in params:
            name = names.get(id(p), "")
            matches = [k for k in self.config.lr_per_module if _module_prefix_matches(name, k)]
            relative = [k for k in factors if _module_prefix_matches(name, k)]
            if matches:
                key = max(matches, key=len)
                self._matched_prefixes.add(key)
                group_lr = self.config.lr_per_module[key]
            elif relative:
                group_lr = base_lr * factors[max(relative, key=len)]
            else:
                group_lr = base_lr
            groups.setdefault(group_lr, []).append(p)
        return torch.optim.Adam([{"params": ps, "lr": g} for g, ps in groups.items()])

    def lr_decay_factor(self, step: int) -> float:
        """The factor on every learning rate at ``step`` (see ``TrainConfig.lr_decay_from``)."""
        cfg = self.config
        if cfg.lr_decay_from >= 1:
            return 1.0
        done = step / cfg.steps
        if cfg.minutes:
            done = max(done, self.elapsed / (cfg.minutes * 60))
        if done <= cfg.lr_decay_from:
            return 1.0
        t = min(1.0, (done - cfg.lr_decay_from) / (1 - cfg.lr_decay_from))
        return cfg.lr_decay_to + (1 - cfg.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * t))

    def decay_learning_rates(self, step: int) -> dict[str, float]:
        """Scale every optimiser's rates by :meth:`lr_decay_factor`; returns ``{"lr_factor": f}`` to log.

        Each parameter group keeps its configured rate as ``initial_lr`` (saved with the optimiser, so
        a resumed run scales the same base), as torch's schedulers do. No decay set: nothing changes.
        """
        if self.config.lr_decay_from >= 1:
            return {}
        factor = self.lr_decay_factor(step)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor
        return {"lr_factor": factor}

    def parameter_names(self) -> dict[int, str]:
        """``id(param) -> name`` of the model's parameters (what :meth:`make_optimizer` matches)."""
        return {id(p): n for n, p in self.model.named_parameters()}

    def step_optimizer(self, name: str, loss: Tensor, params) -> float:
        """Backward ``loss`` and step optimiser ``name`` over ``params``; returns the gradient norm.

        A non-finite loss or gradient raises :class:`NonFiniteStep` before the optimiser steps, so it
        changes nothing.
        """
        if not torch.isfinite(loss):
            raise NonFiniteStep(f"non-finite {name} loss")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = self.clip_and_check(params)
        opt.step()
        return norm

    def clip_and_check(self, params) -> float:
        """Clip gradients (if configured) and raise :class:`NonFiniteStep` on a non-finite gradient.

        Returns:
            the total gradient norm before clipping.
        """
        params = [p for p in params if p.grad is not None]
        max_norm = self.config.clip_norm if self.config.clip_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not torch.isfinite(norm):
            raise NonFiniteStep("non-finite gradient")
        return float(norm)

    def batch_indices(self, step: int, n: int) -> Tensor:
        """The batch of ``step``: a pure function of (seed, step), so resumed runs see the same data."""
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return torch.randint(n, (self.config.batch_size,), generator=g)

    def fit(self, data, resume: bool = False) -> list[dict[str, Any]]:
        """Train on ``data`` (a dataset of ``(image, target)`` pairs or an image tensor).

        Nothing is written to the run directory before the data, the model and the directory have
        been checked (a failed start leaves no half-made run behind).

        Returns:
            the logged records of this call.

        Raises:
            ValueError: on bad data; :class:`RunDirError` on a run directory that cannot be used.
            TrainingDiverged: after ``max_bad_steps`` consecutive non-finite steps.
        """
        cfg = self.config
        device = torch.device(cfg.device)
        if resume and self.out is None:
            raise ValueError("resume needs a run directory (out)")
        images = self.images = self.prepare_data(data)
        self.model.check_input(images[:1], name="training images")
        self._check_run_dir(resume)
        pyro.set_rng_seed(cfg.seed)
        self.model.to(device).train()
        self._matched_prefixes = set()
        self.batch_index = torch.arange(min(cfg.batch_size, len(images)))
        with _fork_rng(device):
            self.setup(images[self.batch_index].to(device))
        unmatched = sorted(set(cfg.lr_per_module) - self._matched_prefixes)
        if unmatched:
            raise ValueError(
                f"lr_per_module names {unmatched} but no parameter lies in such a module; parameter names "
                f"look like {[n for n, _ in list(self.model.named_parameters())[:3]]}"
            )
        if resume:
            self._restore()
        self._write_config(resume)
        records: list[dict[str, Any]] = []
        start_step, start_time = self.step, time.perf_counter() - self.elapsed
        budget = cfg.minutes * 60 if cfg.minutes else math.inf
        bar = tqdm(
            total=cfg.steps, initial=start_step, desc=f"training {self.model.name}", disable=not self.progress
        )
        try:
            while self.step < cfg.steps and self.elapsed < budget:
                step = self.step + 1
                annealed = {**self.model.set_step(step), **self.decay_learning_rates(step)}
                self.batch_index = self.batch_indices(step, len(images))
                batch = images[self.batch_index].to(device)
                try:
                    stats = self.train_step(batch)
                    self.bad_steps = 0
                except NonFiniteStep:
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    for opt in self.optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    if self.bad_steps >= cfg.max_bad_steps:
                        self._diverged(step)
                    stats = {"loss": float("nan")}
                self.step = step
                self.elapsed = time.perf_counter() - start_time
                last = step >= cfg.steps or self.elapsed >= budget
                bar.update(1)
                if math.isfinite(stats["loss"]):
                    bar.set_postfix(loss=f"{stats['loss']:.4g}")
                eval_due = self.eval_fn is not None and (
                    last or (cfg.eval_every > 0 and step % cfg.eval_every == 0)
                )
                if step % cfg.log_every == 0 or last or eval_due:
                    rec = {"step": step, **stats, **self.model.loss_terms(), **annealed}
                    rec.update(skipped_steps=self.skipped_steps, seconds=round(self.elapsed, 3))
                    if eval_due:
                        rec.update({f"eval/{k}": v for k, v in self._evaluate(final=last).items()})
                    records.append(rec)
                    self._log(rec)
                # A checkpoint holds the state after a good step; the end is always saved.
                if (step % cfg.checkpoint_every == 0 and self.bad_steps == 0) or last:
                    self._checkpoint()
            if self.step == start_step and self.eval_fn is not None:
                self._evaluate(final=True)  # nothing left to train (resumed run): evaluate all the same
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self.model.eval()
        return records

    def _diverged(self, step: int):
        cfg = self.config
        first = step - self.bad_steps + 1
        self._log({"step": step, "loss": float("nan"), "skipped_steps": self.skipped_steps, "diverged": True})
        if self.out is None:
            kept = "nothing was saved (no run directory)"
        elif self.last_checkpoint_step is None:
            kept = f"no checkpoint was written before (checkpoint_every={cfg.checkpoint_every})"
        else:
            kept = (
                f"the last good checkpoint (step {self.last_checkpoint_step}) in {str(self.out)!r} "
                "is left as it was"
            )
        raise TrainingDiverged(
            f"training diverged: {self.bad_steps} consecutive steps ({first} to {step}) had a non-finite "
            f"loss or gradient (max_bad_steps={cfg.max_bad_steps}); {kept}. "
            "A lower lr or a clip_norm may help."
        )

    # -- run directory -------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> None:
        """Refuse an unusable run directory before anything is written."""
        if self.out is None:
            return
        if resume:
            stored = read_config(self.out)
            if stored["model"] != self.model.name:
                raise RunDirError(
                    f"cannot resume: {str(self.out)!r} holds a {stored['model']!r} run, "
                    f"not {self.model.name!r}"
                )
            read_checkpoint(self.out)  # fail early on a missing or corrupt checkpoint
            return
        if self.out.exists() and not self.out.is_dir():
            raise RunDirError(f"{str(self.out)!r} exists and is not a directory")
        if self.out.is_dir() and any(self.out.iterdir()):
            raise RunDirError(
                f"run directory {str(self.out)!r} already exists and is not empty; use resume or another path"
            )

    def _write_config(self, resume: bool = False) -> None:
        """Write ``config.json``; a resumed run whose settings changed keeps the earlier ones in ``history``.

        A resume may change the budget, the decay or (through the experiment scripts) model settings:
        ``config.json`` then describes the run as it goes on, and ``history`` lists each earlier record
        with ``until_step``, the step it reached. A resume with unchanged settings rewrites nothing.
        """
        if self.out is None:
            return

        record = json_value(
            {
                "model": self.model.name,
                "model_config": config_to_dict(self.model.config),
                "train_config": asdict(self.config),
                "seed": self.config.seed,
                "version": __version__,
                **self.run_info,
            }
        )
        if resume:
            earlier = read_config(self.out)
            history = earlier.pop("history", [])
            if record == earlier:
                return
            record["history"] = [*history, {**earlier, "until_step": self.step}]
        write_json(self.out / CONFIG_FILE, record)

    def _state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "param_store": pyro.get_param_store().get_state(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "elapsed": self.elapsed,
            "rng": rng,
        }

    def _checkpoint(self) -> None:
        if self.out is not None and self.last_checkpoint_step != self.step:
            save_checkpoint(self.out, self._state())
            self.last_checkpoint_step = self.step

    def _restore(self) -> None:
        state = read_checkpoint(self.out, map_location=self.config.device)
        try:
            self.model.load_state_dict(state["model"])
            _restore_param_store(state.get("param_store"))
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
            self.elapsed = float(state.get("elapsed", 0.0))
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise RunDirError(
                f"cannot resume from {self.out / 'checkpoint.pt'}: it does not fit this model "
                f"and trainer ({type(err).__name__}: {err})"
            ) from None
        self.last_checkpoint_step = self.step
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            cuda_states = [s.cpu() for s in state["rng"]["cuda"]]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
        # Records logged after the checkpoint are replayed by the resumed run: drop them.
        path = self.out / METRICS_FILE
        if path.is_file():
            kept = [json.dumps(r) for r in read_metrics(self.out) if r.get("step", 0) <= self.step]
            atomic_write_bytes(path, lambda f: f.write("".join(ln + "\n" for ln in kept).encode()))

    def _log(self, record: dict[str, Any]) -> None:
        if self.out is None:
            return
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.config.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise RuntimeError(
                        "tensorboard=True needs the 'tensorboard' package (pip install tensorboard)"
                    ) from None
                self._writer = SummaryWriter(str(self.out / "tb"))
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._writer.add_scalar(k, v, record["step"])

    def _evaluate(self, final: bool) -> dict[str, Any]:
        """Run ``eval_fn`` (eval mode, no gradient, RNG untouched); the final results go to eval.json."""
        if self.eval_fn is None:
            return {}
        self.model.eval()
        # Evaluation must not disturb the training run's random stream (resume exactness).
        try:
            with torch.no_grad(), _fork_rng(torch.device(self.config.device)):
                results = self.eval_fn(self.model)
        finally:
            self.model.train()
        if not isinstance(results, dict):
            raise ValueError(f"eval_fn must return a dict of metrics, got {type(results).__name__}")
        if final and self.out is not None:
            write_json(self.out / EVAL_FILE, {"step": self.step, **results})
        return results


def _restore_param_store(saved: dict[str, Any] | None) -> None:
    """Put saved ``pyro.param`` values into the param store *in place*.

    ``ParamStoreDict.set_state`` would swap in new tensors, leaving the optimiser (built by
    ``setup``) stepping the old ones: parameters of a ``pyro.param`` guide would silently freeze.
    """
    if not saved or not saved.get("params"):
        return
    store = pyro.get_param_store()
    current = dict(store.named_parameters())
    new = {}
    for name, value in saved["params"].items():
        if name in current and current[name].shape == value.shape:
            with torch.no_grad():
                current[name].copy_(value)
        else:
            new[name] = value
    if new:
        constraints = {k: v for k, v in saved.get("constraints", {}).items() if k in new}
        store.set_state({"params": new, "constraints": constraints})
