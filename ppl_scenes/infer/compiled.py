"""The opt-in compiled path of a training step (``TrainConfig.compile``, issue 36).

A model names the methods that are deterministic networks (``SceneModel.compiled_methods``: no Pyro
site and no random draw inside, the noise handed in), e.g. SPAIR's guide encoder, which runs the
wavefront of lateral MLP and glimpse encoder, and its renderer. :func:`compile_model` replaces each by
its ``torch.compile`` on that one model instance; the class, its other instances and the saved weights
are untouched, so a checkpoint of a compiled run loads into an eager model. Compiling happens at the
first call; where it fails (e.g. inductor without a C++ compiler), the trainer restores the eager
methods (:func:`uncompile_model`) and trains on, with a warning. Only calls that record gradients run
compiled: evaluation and parsing take the eager methods, which saves a compilation per batch size.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["compile_failure_message", "compile_model", "is_compile_failure", "uncompile_model"]


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
        owner, name = _owner(model, path)
        method = getattr(owner, name, None) if owner is not None else None
        if method is None or not callable(method):
            warnings.warn(
                f"train.compile: {type(model).__name__} has no {path}; it stays eager", stacklevel=2
            )
            continue
        object.__setattr__(owner, name, _TrainingOnly(method, torch.compile(method, backend=backend)))
        done.append(path)
    if not done:
        warnings.warn(
            f"train.compile: {type(model).__name__} names no deterministic network to compile; "
            "training eagerly",
            stacklevel=2,
        )
    return done


class _TrainingOnly:
    """A compiled method that runs compiled only where a gradient is recorded (the training steps).

    Evaluation, parsing and posterior sampling run without gradients: compiled, each such call would
    trigger a compilation of its own (dynamo guards on the grad mode and the batch size; on this
    project's CPU, two and a half minutes for SPAIR's first evaluation) to save milliseconds. They
    get the eager method.
    """

    def __init__(self, eager, compiled):
        self.eager, self.compiled = eager, compiled

    def __call__(self, *args, **kwargs):
        method = self.compiled if torch.is_grad_enabled() else self.eager
        return method(*args, **kwargs)


def uncompile_model(model: nn.Module, paths: list[str]) -> None:
    """Undo :func:`compile_model` for ``paths`` (its return value): the eager methods again."""
    for path in paths:
        owner, name = _owner(model, path)
        if owner is not None and name in vars(owner):
            object.__delattr__(owner, name)


def _owner(model: nn.Module, path: str) -> tuple[object | None, str]:
    """The object a dotted method path (``"encoder.encode"``) names a method of, and the method's
    name; None where ``model`` lacks a part of the path."""
    *parents, name = path.split(".")
    owner = model
    for part in parents:
        owner = getattr(owner, part, None)
    return owner, name


def _dynamo_error(err: BaseException | None) -> BaseException | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, torch._dynamo.exc.TorchDynamoException):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def is_compile_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from ``torch.compile`` itself (capture or code generation), not from
    the model's arithmetic: a dynamo exception, or one raised while handling one (Pyro's trace
    re-raises errors inside a model with a new message, and cannot rebuild dynamo's)."""
    return _dynamo_error(err) is not None


def compile_failure_message(err: BaseException) -> str:
    """The first lines of the compiler's own error inside ``err`` (at most 300 characters)."""
    lines = [line.strip() for line in str(_dynamo_error(err) or err).splitlines() if line.strip()]
    return (" ".join(lines[:2]) or type(err).__name__)[:300]
