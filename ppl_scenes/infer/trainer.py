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

from ppl_scenes import __version__
from ppl_scenes.checks import check_images, check_positive, check_positive_int
from ppl_scenes.runs import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    RunDirError,
    read_checkpoint,
    save_checkpoint,
    write_json,
)


@dataclass
class TrainConfig:
    """Settings of a training run (the models' ``default_train`` override these defaults).

    Attributes:
        steps: number of optimisation steps (upper bound when ``minutes`` is set too).
        minutes: wall-clock budget; training stops after the step that crosses it (0 = none).
        batch_size: images per step.
        lr: Adam learning rate of every parameter not named in ``lr_per_module``.
        lr_per_module: learning rates by parameter-name prefix, e.g. ``{"guide.backbone": 1e-4}``.
        clip_norm: gradient norm clipping (0 = off).
        num_particles: ELBO particles per step.
        log_every: steps between ``metrics.jsonl`` records.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        eval_every: steps between evaluations (0 = only at the end).
        max_bad_steps: consecutive non-finite steps after which training stops with an error.
        seed: seeds the model's randomness and the batch order.
        device: ``cpu`` or ``cuda``.
        tensorboard: also write TensorBoard scalars under ``RUN_DIR/tb`` (needs ``tensorboard``).
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

    def __post_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive(self.lr, "lr")
        check_positive_int(self.log_every, "log_every")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.max_bad_steps, "max_bad_steps")
        check_positive_int(self.num_particles, "num_particles")
        if self.minutes < 0 or self.eval_every < 0 or self.clip_norm < 0:
            raise ValueError("minutes, eval_every and clip_norm must be >= 0")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available on this machine")


class NonFiniteStep(Exception):
    """Raised inside a step whose loss or gradient is not finite; the step is skipped."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is left intact."""


def materialize(data, desc: str = "scenes") -> Tensor:
    """Images of a dataset of ``(image, target)`` pairs (or a tensor) as one ``[N, C, H, W]`` tensor."""
    if isinstance(data, Tensor):
        return check_images(data, name="training images")
    if len(data) == 0:
        raise ValueError("the training dataset is empty")
    images = [
        data[i][0]
        for i in tqdm(range(len(data)), desc=f"generating {desc}", leave=False, disable=len(data) < 2000)
    ]
    return check_images(torch.stack(images), name="training images")


class Trainer:
    """Runs a training loop with logging, evaluation, checkpoints and resume.

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
        self._writer = None

    # -- what subclasses provide ---------------------------------------------------------------
    def setup(self, example_batch: Tensor) -> None:
        """Build ``self.optimizers`` (called once, before any checkpoint is restored)."""
        raise NotImplementedError

    def train_step(self, batch: Tensor) -> dict[str, float]:
        """One optimisation step; returns at least ``{"loss": ...}``; raises :class:`NonFiniteStep`."""
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------
    def make_optimizer(
        self, params: list[torch.nn.Parameter], names: dict[int, str], lr: float | None = None
    ):
        """Adam over ``params``, with per-module learning rates from ``config.lr_per_module``."""
        base_lr = lr if lr is not None else self.config.lr
        groups: dict[float, list] = {}
        for p in params:
            name = names.get(id(p), "")
            matches = [k for k in self.config.lr_per_module if name.startswith(k)]
            group_lr = self.config.lr_per_module[max(matches, key=len)] if matches else base_lr
            groups.setdefault(group_lr, []).append(p)
        return torch.optim.Adam([{"params": ps, "lr": g} for g, ps in groups.items()])

    def clip_and_check(self, params) -> float:
        """Clip gradients (if configured) and raise :class:`NonFiniteStep` on a non-finite gradient."""
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

        Returns:
            the logged records of this call.
        """
        cfg = self.config
        device = torch.device(cfg.device)
        self._prepare_run_dir(resume)
        images = materialize(data)
        self.model.check_input(images[:1], name="training images")
        pyro.set_rng_seed(cfg.seed)
        self.model.to(device).train()
        with torch.random.fork_rng(devices=[]):
            self.setup(images[: cfg.batch_size].to(device))
        if resume:
            self._restore()
        records: list[dict[str, Any]] = []
        start_step, start_time = self.step, time.perf_counter() - self.elapsed
        bar = tqdm(
            total=cfg.steps, initial=start_step, desc=f"training {self.model.name}", disable=not self.progress
        )
        try:
            while self.step < cfg.steps:
                if cfg.minutes and time.perf_counter() - start_time > cfg.minutes * 60:
                    break
                step = self.step + 1
                annealed = self.model.set_step(step)
                batch = images[self.batch_indices(step, len(images))].to(device)
                try:
                    stats = self.train_step(batch)
                    self.bad_steps = 0
                except NonFiniteStep:
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    for opt in self.optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    if self.bad_steps >= cfg.max_bad_steps:
                        raise TrainingDiverged(
                            f"{self.bad_steps} consecutive steps had a non-finite loss or gradient "
                            f"(at step {step}); "
                            f"stopping. The last good checkpoint is left as it was."
                        ) from None
                    stats = {"loss": float("nan")}
                self.step = step
                self.elapsed = time.perf_counter() - start_time
                bar.update(1)
                if math.isfinite(stats["loss"]):
                    bar.set_postfix(loss=f"{stats['loss']:.4g}")
                if step % cfg.log_every == 0 or step == cfg.steps:
                    rec = {"step": step, **stats, **self.model.loss_terms(), **annealed}
                    rec.update(skipped_steps=self.skipped_steps, seconds=round(self.elapsed, 3))
                    records.append(rec)
                    self._log(rec)
                if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.steps:
                    self._evaluate(final=False)
                if step % cfg.checkpoint_every == 0:
                    self._checkpoint()
        finally:
            bar.close()
        if self.step > start_step or not resume:
            self._checkpoint()
        self._evaluate(final=True)
        if self._writer is not None:
            self._writer.close()
        self.model.eval()
        return records

    # -- run directory -------------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        if self.out is None:
            if resume:
                raise ValueError("resume needs a run directory (out)")
            return
        config_path = self.out / CONFIG_FILE
        if resume:
            if not config_path.is_file():
                raise RunDirError(f"cannot resume: {str(self.out)!r} is not a run directory")
            read_checkpoint(self.out)  # fail early on a missing or corrupt checkpoint
            return
        if self.out.exists() and any(self.out.iterdir()):
            raise RunDirError(
                f"run directory {str(self.out)!r} already exists and is not empty; use resume or another path"
            )
        from ppl_scenes.models.base import config_to_dict

        write_json(
            config_path,
            {
                "model": self.model.name,
                "model_config": config_to_dict(self.model.config),
                "train_config": asdict(self.config),
                "seed": self.config.seed,
                "version": __version__,
                **self.run_info,
            },
        )

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
        if self.out is not None:
            save_checkpoint(self.out, self._state())

    def _restore(self) -> None:
        state = read_checkpoint(self.out, map_location=self.config.device)
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        pyro.get_param_store().set_state(state["param_store"])
        self.step, self.skipped_steps, self.elapsed = state["step"], state["skipped_steps"], state["elapsed"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        # Records logged after the checkpoint are replayed by the resumed run: drop them.
        path = self.out / METRICS_FILE
        if path.is_file():
            kept = [
                ln
                for ln in path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= self.step
            ]
            path.write_text("".join(ln + "\n" for ln in kept))

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
                if k != "step" and isinstance(v, int | float):
                    self._writer.add_scalar(k, v, record["step"])

    def _evaluate(self, final: bool) -> None:
        if self.eval_fn is None:
            return
        self.model.eval()
        # Evaluation must not disturb the training run's random stream (resume exactness).
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            results = self.eval_fn(self.model)
        self.model.train()
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in results.items()}})
        if final and self.out is not None:
            write_json(self.out / EVAL_FILE, {"step": self.step, **results})
