"""What a checkpoint of a training holds besides the loop's counters, and how it is put back.

:func:`training_state` gathers the model's weights, the optimisers' states, the ``pyro.param`` values
that are not the model's own weights, and the RNG states of torch (CPU and CUDA), numpy and Python;
:func:`restore_training_state` puts them back in place, so a resumed CPU run goes on exactly as the
uninterrupted one would. :class:`ppl_scenes.rundir.RunDir` stores them.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyro
import torch

__all__ = ["fork_rng", "restore_training_state", "training_state"]


def fork_rng(device: torch.device):
    """Fork the RNGs a computation on ``device`` may draw from (CPU always; the CUDA device if used)."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.random.fork_rng(devices=[index], device_type="cuda")


def training_state(model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], **counters) -> dict:
    """A training's state: ``model`` (weights), ``optimizers``, ``param_store``, ``rng`` and ``counters``.

    The param store's entries that are the model's own parameters are left out (they are saved once,
    with the weights).
    """
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    store = pyro.get_param_store().get_state()
    own = {id(p) for p in model.parameters()}
    params = {k: v for k, v in store["params"].items() if id(v) not in own}
    constraints = {k: c for k, c in store["constraints"].items() if k in params}
    return {
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "param_store": {"params": params, "constraints": constraints},
        **counters,
        "rng": rng,
    }


def restore_training_state(
    state: dict[str, Any], model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]
) -> None:
    """Put :func:`training_state`'s weights, ``pyro.param`` values, optimiser and RNG states back.

    Raises:
        RuntimeError, ValueError, KeyError, TypeError: when the state does not fit the model or the
            optimisers.
    """
    model.load_state_dict(state["model"])
    _restore_param_store(state.get("param_store"))
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
        _match_parameter_layouts(opt)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in rng["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@torch.no_grad()
def _match_parameter_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each per-element optimiser state (Adam's moments) its parameter's memory layout.

    Checkpoints store contiguous tensors, but a channels-last weight's moments must be channels-last
    too: fused Adam pairs parameter, gradient and moments by memory order, so a contiguous moment of
    a channels-last weight would be applied to the wrong elements after a resume.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


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
            new[name] = value.requires_grad_()  # as pyro.param makes them
    if new:
        constraints = {k: v for k, v in saved.get("constraints", {}).items() if k in new}
        store.set_state({"params": new, "constraints": constraints})
