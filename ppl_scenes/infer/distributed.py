"""Data-parallel training under ``torchrun``: one process per device, one shard of every batch each.

``torchrun --standalone --nproc-per-node N -m ppl_scenes train MODEL --out RUN ...`` sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when ``WORLD_SIZE`` is
above 1 the :class:`~ppl_scenes.infer.trainer.Trainer` joins the process group (NCCL on CUDA, gloo
on the CPU; ``device="cuda"`` means ``cuda:LOCAL_RANK``). Without those variables nothing here runs.

Semantics (the README's *Data-parallel training* says the same):

* ``train.batch_size`` is the *global* batch; it must divide by the number of ranks. Every rank
  draws the same seeded batch (``Trainer.batch_indices`` is a pure function of seed and step) and
  keeps its own contiguous shard of it (:meth:`Distributed.shard`).
* Every rank starts from rank 0's weights, buffers and ``pyro.param`` values (broadcast after the
  trainer's ``setup``), and draws its own latent noise: its RNGs are seeded from
  ``(seed, step, rank)`` at every step (so a resumed run goes on exactly as the uninterrupted one).
* Gradients are **all-reduced explicitly after backward** (:meth:`Distributed.reduce_gradients`):
  one flat buffer per dtype (``torch._utils._flatten_dense_tensors``), summed over the ranks. For a
  loss that *sums* over the batch (the ELBO) the sum of the shards' gradients is the full batch's
  gradient; for a loss that is a *mean* over the batch (MIST's, the supervised baselines') it is
  divided by the number of ranks. Either way the step's gradient equals the single-process gradient
  on the whole batch, to float rounding. This was chosen over wrapping the loss in
  ``DistributedDataParallel`` because the trainers' steps are not one module's forward (MIST's
  lifting takes two optimiser steps per batch, SSDIR switches optimisers between stages, parameters
  may be ``pyro.param`` sites outside any module), and because the non-finite check must see the
  *reduced* gradient: a rank's non-finite loss or gradient is carried through the same all-reduce
  as a flag, so every rank skips the step together, and gradient clipping acts on the reduced
  gradient, so all ranks take identical steps.
* Batch-norm layers (SSDIR's detector) normalise each rank's shard by the shard's own statistics,
  the standard DDP behaviour; rank 0's running statistics are broadcast after every step so the
  ranks stay identical. They are *not* converted to ``torch.nn.SyncBatchNorm``: its forward accepts
  only GPU (CUDA/XPU/private-use) tensors, so it cannot run under gloo on the CPU (checked with
  torch 2.14). SSD's detector loss is also normalised by the matched boxes of the shard. SSDIR's
  first stage therefore steps on the mean of the shards' gradients, not exactly on the full
  batch's; its ranks still agree exactly (``tests/infer/test_distributed.py``), and the
  recalibration before stage 2 sees the same whole batches on every rank. Stage 2 (the ELBO, the
  detector frozen, batch norm in eval mode) is exact.
* Rank 0 alone writes the run directory (``config.json`` records ``world_size``); every rank
  resumes from its checkpoint; evaluation runs on rank 0 while the others wait at a barrier. The
  logged loss (and every other logged float) is the mean over the ranks.
* The ranks' settings (model, training and data config, run directory) are compared at the start
  (a hash, all-gathered); a mismatch is an error on every rank.
* A collective that waits longer than ``PPL_SCENES_DIST_TIMEOUT`` seconds (default 300) fails with
  an error rather than hanging (a dead rank); rank 0's evaluation may take up to
  ``PPL_SCENES_DIST_EVAL_TIMEOUT`` seconds (default 7200) while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import timedelta
from typing import Any

import pyro
import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["Distributed", "env_rank", "env_world_size", "is_main_process"]

#: seconds a collective may wait (a dead rank) before it fails
DEFAULT_TIMEOUT = 300.0
#: seconds the other ranks wait for rank 0's evaluation
DEFAULT_EVAL_TIMEOUT = 7200.0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` as torchrun sets it (0 when unset)."""
    return int(os.environ.get("RANK", "0") or 0) if env_world_size() > 1 else 0


def is_main_process() -> bool:
    """Whether this process writes (rank 0, or no data-parallel launch at all)."""
    return env_rank() == 0


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {text!r}")
    return value


class DistributedError(ValueError):
    """Another rank failed, or the ranks disagree; raised on every rank."""


class Distributed:
    """This process's place in a data-parallel run, and the collectives the trainer needs.

    Build it with :meth:`from_env` (None without a torchrun launch of more than one process).
    """

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device, owns_group: bool):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device
        self.owns_group = owns_group
        # a CPU group with a long timeout for the ranks waiting on rank 0's evaluation
        wait = _seconds("PPL_SCENES_DIST_EVAL_TIMEOUT", DEFAULT_EVAL_TIMEOUT)
        self._wait_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait))

    @classmethod
    def from_env(cls, device: str, batch_size: int) -> Distributed | None:
        """Join the process group torchrun's variables describe; None when ``WORLD_SIZE`` is unset or 1.

        Args:
            device: the training's device (``cpu``, ``cuda`` or ``cuda:N``; CUDA means
                ``cuda:LOCAL_RANK`` and NCCL).
            batch_size: the global batch, which must divide by the number of ranks.
        """
        world_size = env_world_size()
        if world_size <= 1:
            return None
        missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing and not dist.is_initialized():
            raise ValueError(
                f"WORLD_SIZE={world_size} is set but {', '.join(missing)} not: launch data-parallel training "
                "with torchrun (e.g. torchrun --standalone --nproc-per-node 2 -m ppl_scenes train ...)"
            )
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size={batch_size} (the global batch) does not divide by the {world_size} "
                "data-parallel processes; choose a multiple of the number of processes"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device.startswith("cuda"):
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA device(s)"
                )
            where = torch.device("cuda", local_rank)
            torch.cuda.set_device(where)
            backend = "nccl"
        else:
            where, backend = torch.device("cpu"), "gloo"
        owns = not dist.is_initialized()
        if owns:
            timeout = timedelta(seconds=_seconds("PPL_SCENES_DIST_TIMEOUT", DEFAULT_TIMEOUT))
            kwargs = {"device_id": where} if backend == "nccl" else {}
            dist.init_process_group(backend, timeout=timeout, **kwargs)
        elif dist.get_world_size() != world_size:
            raise ValueError(
                f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE={world_size}"
            )
        return cls(dist.get_rank(), world_size, local_rank, where, owns)

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that writes)."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group if :meth:`from_env` made it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    # -- agreement -----------------------------------------------------------------------------------
    def agree(self, ok: bool, what: str) -> None:
        """Raise :class:`DistributedError` on every rank unless every rank is ``ok`` (a collective)."""
        flag = torch.tensor([0.0 if ok else 1.0], device=self.device)
        dist.all_reduce(flag)
        if flag.item() and ok:
            raise DistributedError(f"another data-parallel rank failed {what}; see its error")

    def check_same(self, record: dict[str, Any]) -> None:
        """Fail on every rank unless all ranks hold the same ``record`` (the run's settings)."""
        digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, digest)
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        if odd:
            raise DistributedError(
                f"the data-parallel ranks were started with different settings (ranks {odd} differ from "
                "rank 0: model, overrides, data or --out); start every rank with the same command line"
            )

    def wait_for_main(self) -> None:
        """A barrier with the long timeout: the other ranks wait while rank 0 evaluates or writes."""
        dist.barrier(group=self._wait_group)

    # -- data ------------------------------------------------------------------------------------------
    def shard(self, index: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch's indices."""
        size = len(index) // self.world_size
        return index[self.rank * size : (self.rank + 1) * size]

    def seed_step(self, seed: int, step: int) -> None:
        """Seed every RNG from ``(seed, step, rank)``: different noise per rank, exact on resume."""
        pyro.set_rng_seed(((seed * 1_000_003 + step) * 65_537 + self.rank) % (2**63 - 1))

    # -- parameters ------------------------------------------------------------------------------------
    @torch.no_grad()
    def broadcast_from_main(self, tensors: list[Tensor]) -> None:
        """Copy rank 0's values of ``tensors`` into every rank's (in place)."""
        seen: set[int] = set()
        for t in tensors:
            if id(t) in seen:
                continue
            seen.add(id(t))
            data = t.data if t.device == self.device else t.data.to(self.device)
            dist.broadcast(data, src=0)
            if data is not t.data:
                t.data.copy_(data)

    @staticmethod
    def model_state(model: torch.nn.Module) -> list[Tensor]:
        """The model's parameters and buffers, and every ``pyro.param`` value (unconstrained)."""
        store = [p for _, p in pyro.get_param_store().named_parameters()]
        return [*model.parameters(), *model.buffers(), *store]

    def reduce_gradients(self, params: list[Tensor], reduction: str, ok: bool) -> bool:
        """All-reduce the gradients of ``params`` in place; returns whether every rank was ``ok``.

        Args:
            params: the parameters an optimiser steps (a missing gradient counts as zero; one no rank
                has stays None).
            reduction: ``sum`` (the loss sums over the batch) or ``mean`` (it averages over it).
            ok: whether this rank's loss was finite (its gradients are ignored otherwise).
        """
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        flags = torch.tensor(
            [0.0 if ok else 1.0, *(float(p.grad is not None) for p in params)], device=self.device
        )
        # Each gradient keeps its parameter's memory layout (``zeros_like`` preserves it, and the reduced
        # values are copied back in place): fused Adam pairs parameter and gradient by memory order, so a
        # contiguous gradient of a channels-last weight would step the wrong elements.
        grads = [p.grad if ok and p.grad is not None else torch.zeros_like(p) for p in params]
        dist.all_reduce(flags)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, g in enumerate(grads):
            by_dtype.setdefault(g.dtype, []).append(i)
        for idx in by_dtype.values():
            bucket = [grads[i] for i in idx]
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            if reduction == "mean":
                flat /= self.world_size
            for i, g in zip(idx, _unflatten_dense_tensors(flat, bucket)):
                if flags[1 + i] > 0:
                    grads[i].copy_(g)
                    params[i].grad = grads[i]
        return flags[0].item() == 0

    def mean_stats(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Every float of a step's ``stats`` averaged over the ranks (the logged loss: the global mean)."""
        keys = sorted(k for k, v in stats.items() if isinstance(v, float))
        if not keys:
            return stats
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        out = dict(stats)
        for k, v in zip(keys, (values / self.world_size).tolist()):
            out[k] = v if math.isfinite(v) else float("nan")
        return out
