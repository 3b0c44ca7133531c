"""Learning rates: Adam with per-module rates, and the half-cosine decay of a run's last part."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ppl_scenes.infer.flat_adam import FlatAdam, packable

#: Devices whose parameters :func:`adam_by_module` steps with fused Adam (one kernel for all of a
#: group's parameters instead of a dozen operations per parameter; issue 36).
FUSED_DEVICES = ("cpu", "cuda")

__all__ = ["FUSED_DEVICES", "adam_by_module", "decay_factor", "module_prefix_matches", "scale_learning_rates"]


def module_prefix_matches(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` lies in module ``prefix`` (``.`` or Pyro's ``$$$`` separate levels)."""
    if name == prefix or prefix.endswith((".", "$")):
        return name.startswith(prefix)
    return name.startswith(prefix + ".") or name.startswith(prefix + "$$$")


def adam_by_module(
    params: list[torch.nn.Parameter],
    names: dict[int, str],
    lr: float,
    lr_per_module: dict[str, float],
    factors: dict[str, float],
) -> tuple[torch.optim.Adam, set[str]]:
    """Adam over ``params`` with one parameter group per learning rate, and the prefixes that matched.

    A parameter (named by ``names[id(param)]``) in a module of ``lr_per_module`` takes that rate (the
    longest matching prefix wins); any other takes ``lr`` times the factor of the longest matching
    prefix of ``factors`` (1 where none matches). The optimiser is fused Adam where every parameter
    lives on one of :data:`FUSED_DEVICES` (the same update as the plain one, to rounding): a
    :class:`~ppl_scenes.infer.flat_adam.FlatAdam`, whose groups' parameters share one flat buffer
    each, where they are :func:`~ppl_scenes.infer.flat_adam.packable` (the parameters' data become
    views of the buffers). A fused step pairs each parameter with its gradient by memory order, so a
    gradient set by hand must keep its parameter's layout (channels-last weights have channels-last
    gradients).
    """
    groups: dict[float, list] = {}
    matched: set[str] = set()
    for p in params:
        name = names.get(id(p), "")
        matches = [k for k in lr_per_module if module_prefix_matches(name, k)]
        relative = [k for k in factors if module_prefix_matches(name, k)]
        if matches:
            key = max(matches, key=len)
            matched.add(key)
            group_lr = lr_per_module[key]
        elif relative:
            group_lr = lr * factors[max(relative, key=len)]
        else:
            group_lr = lr
        groups.setdefault(group_lr, []).append(p)
    fused = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    param_groups = [{"params": ps, "lr": g} for g, ps in groups.items()]
    if fused and params and all(packable(ps) for ps in groups.values()):
        return FlatAdam(param_groups), matched
    return torch.optim.Adam(param_groups, fused=fused), matched


def decay_factor(done: float, decay_from: float, decay_to: float) -> float:
    """The learning-rate factor once a fraction ``done`` of the budget is spent: 1 up to
    ``decay_from``, then a half-cosine down to ``decay_to`` at the end (``decay_from >= 1``: never)."""
    if decay_from >= 1 or done <= decay_from:
        return 1.0
    t = min(1.0, (done - decay_from) / (1 - decay_from))
    return decay_to + (1 - decay_to) * 0.5 * (1 + math.cos(math.pi * t))


def scale_learning_rates(optimizers: Iterable[torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's rate to its configured one times ``factor``.

    Each group keeps its configured rate as ``initial_lr`` (saved with the optimiser, so a resumed
    run scales the same base), as torch's schedulers do.
    """
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
