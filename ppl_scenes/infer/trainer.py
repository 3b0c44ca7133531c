"""The training machinery every model shares: batches, logging, checkpoints, resume, bad steps.

:class:`Trainer` runs the loop; subclasses say what one step is (:class:`ppl_scenes.infer.svi.SVITrainer`
takes an ELBO step, MIST's lifting trainer its alternating steps). Batches are a pure function of
``(seed, step)`` and the RNG states are checkpointed, so a resumed CPU run reproduces the
uninterrupted run's losses exactly. Launched by ``torchrun`` with more than one process, the loop
trains data-parallel (:mod:`ppl_scenes.infer.distributed`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppl_scenes._version import __version__
from ppl_scenes.config import config_to_dict
from ppl_scenes.data.loading import LazyScenes, materialize, too_large
from ppl_scenes.infer.allocator import keep_freed_memory
from ppl_scenes.infer.compiled import (
    compile_failure_message,
    compile_model,
    is_compile_failure,
    uncompile_model,
)
from ppl_scenes.infer.config import TrainConfig
from ppl_scenes.infer.distributed import Distributed
from ppl_scenes.infer.flat_adam import FlatAdam, clip_flat_gradients
from ppl_scenes.infer.optim import adam_by_module, decay_factor, scale_learning_rates
from ppl_scenes.infer.state import fork_rng, restore_training_state, training_state
from ppl_scenes.models.base import Supervised
from ppl_scenes.rundir import RunDir, RunDirError

__all__ = ["NonFiniteStep", "TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted"]


class NonFiniteStep(Exception):
    """Raised inside a step whose loss or gradient is not finite; the step is skipped."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is left intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C) after ``step`` steps and ``seconds`` of training (resumes
    included); the run resumes from its last checkpoint, at step ``last_checkpoint_step`` (None:
    none was written)."""

    def __init__(self, step: int, seconds: float, last_checkpoint_step: int | None):
        super().__init__(f"training interrupted at step {step}")
        self.step, self.seconds, self.last_checkpoint_step = step, seconds, last_checkpoint_step


class Trainer:
    """Runs a training loop with logging, evaluation, checkpoints and resume.

    Every ``log_every`` steps (and at the last step) a record ``{"step", "loss", ...}`` is appended to
    ``RUN_DIR/metrics.jsonl``; evaluations (every ``eval_every`` steps and at the end) add their
    results to the record of their step, prefixed ``eval/``, and the final one is written to
    ``eval.json``. The run ends at the first limit of its budget it reaches (``config.steps``,
    ``config.minutes``); the last record and ``eval.json`` name it as ``stop_reason`` (``"steps"``
    or ``"minutes"``, see :meth:`stop_reason`), and :attr:`stopped_by` keeps it (``"interrupted"``
    after Ctrl-C, which is raised again as :class:`TrainingInterrupted`, ``"diverged"`` before
    :class:`TrainingDiverged`). A step whose loss or gradient is not finite changes nothing and is
    counted in ``skipped_steps``; ``max_bad_steps`` of them in a row raise :class:`TrainingDiverged`.

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
        #: The loss of the last :meth:`step_optimizer` call, read back with its gradient norm.
        self.last_loss = float("nan")
        #: Which limit ended the last :meth:`fit` (:meth:`stop_reason`; None while it runs).
        self.stopped_by: str | None = None
        self._matched_prefixes: set[str] = set()
        #: The open run directory while :meth:`fit` runs (None without ``out``).
        self.run_dir: RunDir | None = None
        self.batch_index: Tensor | None = None
        self.supervision: dict[str, Tensor] | None = None
        self._lazy: LazyScenes | None = None
        #: The training images (:meth:`prepare_data`'s result), set by :meth:`fit`.
        self.images: Tensor | LazyScenes | None = None
        #: This process's place in a data-parallel run (None: one process), set by :meth:`fit`.
        self.distributed: Distributed | None = None
        #: The device training runs on (``config.device``; ``cuda:LOCAL_RANK`` data-parallel).
        self.device = torch.device(self.config.device)

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
        if self.config.keep_freed_memory:
            keep_freed_memory()
        if too_large(data):
            self._lazy = LazyScenes(data)
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
        factors = self.model.learning_rate_factors()
        base_lr = lr if lr is not None else self.config.lr
        opt, matched = adam_by_module(params, names, base_lr, self.config.lr_per_module, factors)
        self._matched_prefixes |= matched
        return opt

    def lr_decay_factor(self, step: int) -> float:
        """The factor on every learning rate at ``step`` (see ``TrainConfig.lr_decay_from``)."""
        cfg = self.config
        done = step / cfg.steps if cfg.steps else 0.0
        if cfg.minutes:
            done = max(done, self.elapsed / (cfg.minutes * 60))
        return decay_factor(done, cfg.lr_decay_from, cfg.lr_decay_to)

    # -- budget ------------------------------------------------------------------------------------
    def stop_reason(self) -> str | None:
        """Which limit of the budget the run has reached: ``"steps"``, ``"minutes"``, or None (go on).

        ``steps`` is reached at ``config.steps`` (never with ``steps=0``), ``minutes`` once the run's
        elapsed seconds (resumes included) reach ``config.minutes``; both reached, the steps are named
        (the run did all it was asked).
        """
        cfg = self.config
        if cfg.steps and self.step >= cfg.steps:
            return "steps"
        if cfg.minutes and self.elapsed >= cfg.minutes * 60:
            return "minutes"
        return None

    def stage_over(self) -> bool:
        """Whether the current stage of a staged run has used its share of the minutes budget (then
        :meth:`next_stage` is called after the step is logged). A one-stage trainer has none: False."""
        return False

    def next_stage(self) -> None:
        """Move on to the next stage (see :meth:`stage_over`); a one-stage trainer never does."""
        raise NotImplementedError

    def decay_learning_rates(self, step: int) -> dict[str, float]:
        """Scale every optimiser's rates by :meth:`lr_decay_factor`; returns ``{"lr_factor": f}`` to log.

        Each parameter group keeps its configured rate as ``initial_lr``
        (:func:`~ppl_scenes.infer.optim.scale_learning_rates`). No decay set: nothing changes.
        """
        if self.config.lr_decay_from >= 1:
            return {}
        factor = self.lr_decay_factor(step)
        scale_learning_rates(self.optimizers.values(), factor)
        return {"lr_factor": factor}

    def parameter_names(self) -> dict[int, str]:
        """``id(param) -> name`` of the model's parameters (what :meth:`make_optimizer` matches)."""
        return {id(p): n for n, p in self.model.named_parameters()}

    def gradient_reduction(self, name: str) -> str:
        """How optimiser ``name``'s loss reduces over the batch: ``mean`` (the default) or ``sum``.

        Data-parallel training sums the ranks' gradients for a ``sum`` and averages them for a
        ``mean``, so that a step's gradient is the whole batch's.
        """
        return "mean"

    def step_optimizer(self, name: str, loss: Tensor | None, params) -> float:
        """Backward ``loss`` and step optimiser ``name`` over ``params``; returns the gradient norm.

        A non-finite loss or gradient raises :class:`NonFiniteStep` before the optimiser steps, so it
        changes nothing. Data-parallel, the gradients are all-reduced between the backward and the
        clipping and check, so every rank takes the same step or skips it (``loss=None``: this rank's
        loss could not be computed, the step is skipped everywhere).
        """
        if self.distributed is not None:
            params = list(params)
            self.last_loss = float(loss) if loss is not None else float("nan")
            ok = math.isfinite(self.last_loss)
            opt = self.optimizers[name]
            opt.zero_grad(set_to_none=True)
            if ok:
                loss.backward()
            if not self.distributed.reduce_gradients(params, self.gradient_reduction(name), ok):
                raise NonFiniteStep(f"non-finite {name} loss (on some data-parallel rank)")
            norm = self.clip_and_check(params, opt)
            opt.step()
            return norm
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()  # a non-finite loss is refused below, before the optimiser steps
        norm = self.clip_and_check(params, opt, loss)
        opt.step()
        return norm

    def clip_and_check(
        self, params, optimizer: torch.optim.Optimizer | None = None, loss: Tensor | None = None
    ) -> float:
        """Clip gradients (if configured) and raise :class:`NonFiniteStep` on a non-finite gradient
        (or a non-finite ``loss``, read back with the norm in one transfer and kept as
        :attr:`last_loss`).

        With a :class:`~ppl_scenes.infer.flat_adam.FlatAdam` ``optimizer`` whose parameters all have
        gradients, the gradients are clipped as its flat tensors (one norm per group).

        Returns:
            the total gradient norm before clipping.
        """
        max_norm = self.config.clip_norm if self.config.clip_norm > 0 else float("inf")
        flats = optimizer.gather_gradients() if isinstance(optimizer, FlatAdam) else None
        if flats is not None:
            total = clip_flat_gradients(flats, max_norm)
        else:
            total = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
        if loss is None:
            norm = float(total)  # the one read-back
        else:
            norm, self.last_loss = torch.stack((total.to(loss.dtype), loss.detach().reshape(()))).tolist()
            if not math.isfinite(self.last_loss):
                raise NonFiniteStep("non-finite loss")
        if not math.isfinite(norm):
            raise NonFiniteStep("non-finite gradient")
        return norm

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
        if resume and self.out is None:
            raise ValueError("resume needs a run directory (out)")
        self.device = torch.device(self.config.device)
        self.distributed = Distributed.from_env(self.config.device, self.config.batch_size)
        try:
            if self.distributed is not None:
                self.device = self.distributed.device
                self.distributed.check_same({**self._config_record(), "out": str(self.out), "resume": resume})
            images = self.images = self.prepare_data(data)
            self.model.check_input(images[:1], name="training images")
            self.run_dir, saved = self._open_run_dir_once(resume)
            try:
                return self._train(images, saved)
            finally:
                if self.run_dir is not None:
                    self.run_dir.close()
        finally:
            if self.distributed is not None:
                self.distributed.close()

    def _open_run_dir_once(self, resume: bool) -> tuple[RunDir | None, dict[str, Any] | None]:
        """:meth:`_open_run_dir`; data-parallel, rank 0 opens (once every rank has checked it) and the
        others read the checkpoint only."""
        ddp = self.distributed
        if ddp is None:
            return self._open_run_dir(resume)
        ddp.wait_for_main()  # every rank's checks of the directory come before rank 0 writes into it
        failed = None
        opened: tuple[RunDir | None, dict[str, Any] | None] = (None, None)
        try:
            if ddp.main:
                opened = self._open_run_dir(resume)
        except BaseException as err:
            failed = err
        try:
            ddp.agree(failed is None, "to open the run directory")
        except BaseException:
            if opened[0] is not None:
                opened[0].close()
            raise
        if failed is not None:
            raise failed
        if not ddp.main and resume:
            return None, RunDir(self.out).load_checkpoint(map_location=self.device)
        return opened

    def _train(self, images, saved: dict[str, Any] | None) -> list[dict[str, Any]]:
        """:meth:`fit`'s work once the data and the run directory are checked (``saved``: the
        checkpoint a resumed run starts from)."""
        cfg = self.config
        device, ddp = self.device, self.distributed
        pyro.set_rng_seed(cfg.seed)
        self.model.to(device).train()
        self._compiled = compile_model(self.model, cfg.compile_backend) if cfg.compile else []
        self._matched_prefixes = set()
        self.batch_index = torch.arange(min(cfg.batch_size, len(images)))
        with fork_rng(device):
            self._eager_if_compiling_fails(self.setup, images[self.batch_index].to(device))
        if ddp is not None:  # every rank starts from rank 0's weights
            ddp.broadcast_from_main(ddp.model_state(self.model))
        unmatched = sorted(set(cfg.lr_per_module) - self._matched_prefixes)
        if unmatched:
            raise ValueError(
                f"lr_per_module names {unmatched} but no parameter lies in such a module; parameter names "
                f"look like {[n for n, _ in list(self.model.named_parameters())[:3]]}"
            )
        if saved is not None:
            self._restore(saved)
        self._write_config(resumed=saved is not None)
        records: list[dict[str, Any]] = []
        start_step, start_time = self.step, time.perf_counter() - self.elapsed
        self.stopped_by = stop = self.stop_reason()
        if stop is None and self.stage_over():  # resumed past the stage's share (a smaller budget)
            self.next_stage()
        bar = tqdm(
            total=cfg.steps or None,
            initial=start_step,
            desc=f"training {self.model.name}",
            disable=not self.progress,
        )
        try:
            while stop is None:
                step = self.step + 1
                annealed = {**self.model.set_step(step), **self.decay_learning_rates(step)}
                self.batch_index = self.batch_indices(step, len(images))
                if ddp is not None:
                    ddp.seed_step(cfg.seed, step)
                    self.batch_index = ddp.shard(self.batch_index)
                batch = images[self.batch_index].to(device)
                try:
                    stats = self._train_step_or_eager(batch)
                    self.bad_steps = 0
                except NonFiniteStep:
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    for opt in self.optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    if self.bad_steps >= cfg.max_bad_steps:
                        self._diverged(step)
                    stats = {"loss": float("nan")}
                if ddp is not None:
                    stats = ddp.mean_stats(stats)
                    ddp.broadcast_from_main(list(self.model.buffers()))  # batch-norm statistics
                self.step = step
                self.elapsed = time.perf_counter() - start_time
                self.stopped_by = stop = self.stop_reason()
                last = stop is not None
                stage_over = not last and self.stage_over()
                bar.update(1)
                if math.isfinite(stats["loss"]):
                    bar.set_postfix(loss=f"{stats['loss']:.4g}")
                eval_due = self.eval_fn is not None and (
                    last or (cfg.eval_every > 0 and step % cfg.eval_every == 0)
                )
                if step % cfg.log_every == 0 or last or eval_due or stage_over:
                    rec = {"step": step, **stats, **self.model.loss_terms(), **annealed}
                    rec.update(skipped_steps=self.skipped_steps, seconds=round(self.elapsed, 3))
                    if last:
                        rec["stop_reason"] = stop
                    if stage_over:
                        rec["stage_stop_reason"] = "minutes"
                    if eval_due:
                        rec.update({f"eval/{k}": v for k, v in self._evaluate(final=last).items()})
                    records.append(rec)
                    self._log(rec)
                if stage_over:
                    self.next_stage()
                    bar.update(self.step - step)
                    self._checkpoint()  # the next stage starts from here on a resume
                # A checkpoint holds the state after a good step; the end is always saved.
                elif (step % cfg.checkpoint_every == 0 and self.bad_steps == 0) or last:
                    self._checkpoint()
            if self.step == start_step and self.eval_fn is not None:
                self._evaluate(final=True)  # nothing left to train (resumed run): evaluate all the same
        except KeyboardInterrupt as err:
            self.stopped_by = "interrupted"
            raise TrainingInterrupted(self.step, self.elapsed, self.last_checkpoint_step) from err
        finally:
            bar.close()
            self.model.eval()
        return records

    def _train_step_or_eager(self, batch: Tensor) -> dict[str, float]:
        """:meth:`train_step`; until a compiled run's first step has run, through
        :meth:`_eager_if_compiling_fails`."""
        if not self._compiled:
            return self.train_step(batch)
        stats = self._eager_if_compiling_fails(self.train_step, batch)
        self._compiled = []  # compiled and ran: later steps need no guard
        return stats

    def _eager_if_compiling_fails(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; where ``torch.compile`` fails to compile the model's methods on the way (it
        compiles at their first call, e.g. inductor without a C++ compiler), the eager methods come
        back and ``fn`` is redone from the same random state (the same noise), with a warning."""
        if not self._compiled:
            return fn(*args)
        rng = pyro.util.get_rng_state()
        try:
            return fn(*args)
        except Exception as err:
            if not is_compile_failure(err):
                raise
            uncompile_model(self.model, self._compiled)
            self._compiled = []
            warnings.warn(
                f"train.compile: compiling {type(self.model).__name__} with backend "
                f"{self.config.compile_backend!r} failed ({compile_failure_message(err)}); training eagerly",
                stacklevel=3,
            )
            for opt in getattr(self, "optimizers", {}).values():
                opt.zero_grad(set_to_none=True)
            pyro.util.set_rng_state(rng)
            return fn(*args)

    def _diverged(self, step: int):
        cfg = self.config
        first = step - self.bad_steps + 1
        self.stopped_by = "diverged"
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
    def _open_run_dir(self, resume: bool) -> tuple[RunDir | None, dict[str, Any] | None]:
        """The run directory, checked and locked before anything is written (None without ``out``),
        and the checkpoint to resume from (None for a new run)."""
        if self.out is None:
            return None, None
        run_dir = RunDir(self.out)
        if resume:
            stored = run_dir.read_config()
            if stored["model"] != self.model.name:
                raise RunDirError(
                    f"cannot resume: {str(self.out)!r} holds a {stored['model']!r} run, "
                    f"not {self.model.name!r}"
                )
        else:
            run_dir.check_new()
        run_dir.lock()
        try:
            if resume:  # fail early on a missing, corrupt or legacy checkpoint
                return run_dir, run_dir.load_checkpoint(map_location=self.device)
            run_dir.check_new()  # again, now that no other training can start here
        except BaseException:
            run_dir.close()
            raise
        return run_dir, None

    def _config_record(self) -> dict[str, Any]:
        """What ``config.json`` records of the run."""
        record = {
            "model": self.model.name,
            "model_config": config_to_dict(self.model.config),
            "train_config": asdict(self.config),
            "seed": self.config.seed,
            "version": __version__,
            **self.run_info,
        }
        if self.distributed is not None:
            record["world_size"] = self.distributed.world_size
        return record

    def _write_config(self, resumed: bool = False) -> None:
        """Record the run in ``config.json`` (a resume with changed settings keeps the old in ``history``)."""
        if self.run_dir is None:
            return
        self.run_dir.write_config(self._config_record(), resumed_at=self.step if resumed else None)

    def _checkpoint(self) -> None:
        if self.run_dir is not None and self.last_checkpoint_step != self.step:
            counters = {"step": self.step, "skipped_steps": self.skipped_steps, "elapsed": self.elapsed}
            self.run_dir.save_checkpoint(training_state(self.model, self.optimizers, **counters))
            self.last_checkpoint_step = self.step

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            restore_training_state(state, self.model, self.optimizers)
            self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
            self.elapsed = float(state.get("elapsed", 0.0))
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise RunDirError(
                f"cannot resume from the checkpoint in {str(self.out)!r}: it does not fit this model "
                f"and trainer ({type(err).__name__}: {err})"
            ) from None
        self.last_checkpoint_step = self.step
        if self.run_dir is not None:  # data-parallel: rank 0's
            self.run_dir.truncate_metrics(self.step)  # the resumed run replays the steps after the checkpoint

    def _log(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        self.run_dir.append_metrics(record)
        if self.config.tensorboard:
            self.run_dir.add_scalars(record)

    def _evaluate(self, final: bool) -> dict[str, Any]:
        """Run ``eval_fn`` (eval mode, no gradient, RNG untouched); the final results go to eval.json."""
        if self.eval_fn is None:
            return {}
        if self.distributed is not None and not self.distributed.main:
            self.distributed.wait_for_main()  # rank 0 alone evaluates
            return {}
        self.model.eval()
        # Evaluation must not disturb the training run's random stream (resume exactness).
        try:
            with torch.no_grad(), fork_rng(self.device):
                results = self.eval_fn(self.model)
        finally:
            self.model.train()
            if self.distributed is not None:
                self.distributed.wait_for_main()
        if not isinstance(results, dict):
            raise ValueError(f"eval_fn must return a dict of metrics, got {type(results).__name__}")
        if final and self.run_dir is not None:
            self.run_dir.write_eval({"step": self.step, "stop_reason": self.stopped_by, **results})
        return results
