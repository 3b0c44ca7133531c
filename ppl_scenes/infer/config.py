"""The settings of a training run: :class:`TrainConfig`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ppl_scenes.checks import check_non_negative, check_positive, check_positive_int

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Settings of a training run (the models' ``default_train`` override these defaults).

    Attributes:
        steps: number of optimisation steps; with ``minutes`` too, training stops at whichever
            limit comes first. 0 = no step limit: the ``minutes`` budget alone ends the run (what
            :func:`ppl_scenes.infer.fit` makes of a minutes budget given without steps: a model's
            default steps never cap it).
        minutes: wall-clock budget of the run (a resumed run counts the time spent before it);
            training stops after the step that crosses it (0 = none). The run records which limit
            ended it (``stop_reason``: ``"steps"`` or ``"minutes"``) in its last ``metrics.jsonl``
            record and in ``eval.json``.
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
            default). The budget's fraction is the larger of ``step / steps`` (none with
            ``steps=0``) and, with ``minutes``, the share of the wall-clock budget spent, so a run
            limited by minutes decays over its last minutes. Late in a run, Adam's constant rate
            keeps the metrics swinging from one evaluation to the next; a decayed rate settles them.
        lr_decay_to: the factor the learning rates reach at the end of the budget (half-cosine from 1).
        keep_freed_memory: fix glibc's malloc thresholds when training starts, so a step's freed
            tensors stay in the process's heap for the next step instead of being handed back to the
            kernel and paged in again (:func:`ppl_scenes.infer.allocator.keep_freed_memory`; for the
            rest of the process, which keeps up to 1 GiB of freed memory). Default True: with it a step
            pages nothing in; without it, how much it pages in depends on the process (thousands of
            pages a step of SPAIR's defaults; BENCHMARKS.md, step profiles). Nothing changes off
            glibc.
        compile: run the model's deterministic networks (its ``compiled_methods``, e.g. SPAIR's guide
            encoder and renderer) through ``torch.compile`` (issue 36). Off by default: on this
            project's 2-core CPU it halves SPAIR's operations per step but hardly changes its time,
            after about a minute of compiling (BENCHMARKS.md, step profiles). The Pyro sites,
            priors and the ELBO stay eager; losses equal the eager ones to float rounding. Where
            compiling fails (e.g. no C++ compiler), the run goes on eagerly, with a warning.
        compile_backend: ``torch.compile``'s backend: ``inductor`` (the default, needs a C++
            compiler on the CPU) or e.g. ``aot_eager`` (no code generation: checks the capture).
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
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self):
        self.steps = check_non_negative(self.steps, "steps", integer=True)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.lr = check_positive(self.lr, "lr")
        self.log_every = check_positive_int(self.log_every, "log_every")
        self.checkpoint_every = check_positive_int(self.checkpoint_every, "checkpoint_every")
        self.max_bad_steps = check_positive_int(self.max_bad_steps, "max_bad_steps")
        self.num_particles = check_positive_int(self.num_particles, "num_particles")
        self.minutes = check_non_negative(self.minutes, "minutes")
        if self.steps == 0 and self.minutes == 0:
            raise ValueError("steps must be a positive integer unless minutes is set (0: no step limit)")
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
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(
                f"compile_backend must name a torch.compile backend, got {self.compile_backend!r}"
            )
        for name in ("tensorboard", "keep_freed_memory", "compile"):
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
