"""The opt-in compiled path of a training step (``TrainConfig.compile``, issue 36).

A model names the methods that are deterministic networks (``SceneModel.compiled_methods``: no Pyro
site and no random draw inside, the noise handed in), e.g. SPAIR's guide encoder, which runs the
wavefront of lateral MLP and glimpse encoder, and its renderer. :func:`compile_model` replaces each by
its ``torch.compile`` on that one model instance; the class, its other instances and the saved weights
are untouched, so a checkpoint of a compiled run loads into an eager model.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["compile_model"]


def compile_model(model: nn.Module, backend: str = "inductor") -> list[str]:
    """Compile ``model``'s ``compiled_methods`` in place (instance attributes); returns their names.

    A model with none is trained eagerly, with a warning. A dotted name (``"encoder.encode"``)
    reaches into a submodule; one that ``model`` lacks (e.g. a user's own guide) is skipped, with a
    warning.
    """
    # The package's cached constants (ppl_scenes.ops.constants) are pure functions of shapes and
    # devices: dynamo tracing through their cache and baking the values in is what is wanted.
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    done = []
    for path in getattr(model, "compiled_methods", ()):
        *parents, name = path.split(".")
        owner = model
        for part in parents:
            owner = getattr(owner, part, None)
        method = getattr(owner, name, None) if owner is not None else None
        if method is None or not callable(method):
            warnings.warn(
                f"train.compile: {type(model).__name__} has no {path}; it stays eager", stacklevel=2
            )
            continue
        object.__setattr__(owner, name, torch.compile(method, backend=backend))
        done.append(path)
    if not done:
        warnings.warn(
            f"train.compile: {type(model).__name__} names no deterministic network to compile; "
            "training eagerly",
            stacklevel=2,
        )
    return done
