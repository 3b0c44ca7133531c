"""Adam over parameters packed in one flat buffer per group: one fused update and one norm per step.

A fused Adam step still dispatches about seven operations per parameter on the CPU, and clipping by
the global norm a dozen more (issue 36: 400 of SPAIR's 7,000 operations per step, a sixth of GMAIR's
and MIST's). :class:`FlatAdam` lays each parameter group's tensors out in one buffer (the module's
parameters become views of it, keeping their shapes and memory layouts), copies the gradients into
one flat tensor per group with a single ``_foreach_copy_``, clips and checks them with one norm, and
steps each group with one call of the fused update. The update is torch's fused Adam, element by element the
same as on separate tensors.

The optimiser keeps ``torch.optim.Adam``'s state-dict format (one entry per parameter), so
checkpoints of either load into the other. A step in which some parameter has no gradient (a module
unused by that batch) takes the per-parameter path, which leaves that parameter, its moments and its
step count alone, as ``torch.optim.Adam`` does. Parameters that need no gradient when the optimiser
is built (a fixed background colour) stay outside the buffers; should one get a gradient later, the
steps take the per-parameter path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as adam_update

__all__ = ["FlatAdam", "clip_flat_gradients", "packable"]

#: Each parameter starts at a multiple of this many elements of its buffer (64 bytes in float32), so
#: its view is aligned as a tensor of its own would be (vector units, compiled kernels).
ALIGN = 16


def packable(params: list[Tensor]) -> bool:
    """Whether ``params`` can share one flat buffer: floating point of one dtype on one device, each
    dense in a plain or channels-last layout, none repeated."""
    if len({id(p) for p in params}) != len(params) or len({(p.dtype, p.device) for p in params}) > 1:
        return False
    return all(p.is_floating_point() and _dims_in_memory_order(p) is not None for p in params)


def _dims_in_memory_order(t: Tensor) -> tuple[int, ...] | None:
    """The permutation of ``t``'s dims that makes it contiguous (None: ``t`` is not dense)."""
    if t.is_contiguous():
        return tuple(range(t.dim()))
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    return None


@torch.no_grad()
def clip_flat_gradients(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale ``grads`` in place to a total 2-norm of at most ``max_norm`` (``inf``: leave them), as
    ``torch.nn.utils.clip_grad_norm_`` does; returns the total norm before clipping.

    A non-finite norm scales by 0, not NaN: the step is refused then anyway, and the zero padding
    between a buffer's parameters, which no later gradient overwrites, must stay zero."""
    norms = [torch.linalg.vector_norm(g) for g in grads]
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
    if math.isfinite(max_norm):
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0).nan_to_num(nan=0.0)
        for g in grads:
            g.mul_(coef)
    return total


class _Slot:
    """Where one parameter lies in its group's buffers."""

    __slots__ = ("param", "offset", "numel")

    def __init__(self, param: Tensor, offset: int):
        self.param, self.offset, self.numel = param, offset, param.numel()

    def view_of(self, buffer: Tensor) -> Tensor:
        """The parameter's shape and strides over its slice of ``buffer``."""
        return buffer.as_strided(self.param.shape, self.param.stride(), buffer.storage_offset() + self.offset)


class _Pack:
    """One parameter group's buffers: parameters, gathered gradients and moments."""

    def __init__(self, params: list[Tensor]):
        self.slots: list[_Slot] = []
        #: Parameters that needed no gradient when the optimiser was built: outside the buffer.
        self.outside = [p for p in params if not p.requires_grad]
        params = [p for p in params if p.requires_grad]
        offset = 0
        for p in params:
            self.slots.append(_Slot(p, offset))
            offset += -(-p.numel() // ALIGN) * ALIGN
        self.size = offset
        first = (params or self.outside)[0]
        self.buffer = torch.zeros(self.size, dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for slot in self.slots:
                view = slot.view_of(self.buffer)
                view.copy_(slot.param)
                slot.param.data = view
        # the gathered gradients, in the parameters' layout (the padding between them stays zero)
        self.grad = torch.zeros_like(self.buffer)
        self.grad_views = [slot.view_of(self.grad) for slot in self.slots]
        self.exp_avg: Tensor | None = None
        self.exp_avg_sq: Tensor | None = None
        self.step: Tensor | None = None  # shared by every parameter's state while their counts agree

    def gather(self) -> Tensor | None:
        """The group's gradients copied into one flat tensor (None when some parameter of the buffer
        has no gradient, or one outside it has one)."""
        if any(p.grad is not None for p in self.outside) or any(s.param.grad is None for s in self.slots):
            return None
        grads = [s.param.grad for s in self.slots]
        if grads:
            torch._foreach_copy_(self.grad_views, grads)  # one copy each, into the slices of `grad`
        return self.grad


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (fused) whose groups' parameters share one flat buffer each (see the module).

    Each parameter's ``.data`` becomes a view of its group's buffer when the optimiser is built, so
    build it after the model is on its device, and do not move the model afterwards. Call
    :meth:`gather_gradients` after the backward pass to clip or check the gradients as flat tensors
    (:meth:`step` gathers them itself otherwise).

    Args:
        params: parameters or parameter groups, as for ``torch.optim.Adam``; each must be
            :func:`packable`, and a group's parameters share one dtype and device.
        **defaults: Adam's hyper-parameters (``lr``, ``betas``, ``eps``); ``amsgrad``,
            ``weight_decay`` and ``maximize`` are not supported.
    """

    def __init__(self, params, **defaults: Any):
        for key in ("amsgrad", "maximize", "weight_decay", "foreach", "capturable", "differentiable"):
            if defaults.get(key):
                raise ValueError(f"FlatAdam does not support {key}")
        super().__init__(params, fused=True, **defaults)
        self._packs: list[_Pack] = []
        for group in self.param_groups:
            params = group["params"]
            if not params or not packable(params):
                raise ValueError(
                    "FlatAdam needs dense floating-point parameters of one dtype and device per group"
                )
            self._packs.append(_Pack(params))
        self._gathered: list[Tensor] | None = None

    @torch.no_grad()
    def gather_gradients(self) -> list[Tensor] | None:
        """The gradients of each group as one flat tensor, the parameters' ``.grad`` becoming views of
        it (clip or scale these in place before :meth:`step`, which then uses them); None when some
        parameter has no gradient (then clip the parameters' own gradients: :meth:`step` takes the
        per-parameter path)."""
        flats = []
        for pack in self._packs:
            flat = pack.gather()
            if flat is None:
                self._gathered = None
                return None
            flats.append(flat)
        for pack in self._packs:  # the parameters' gradients: views of the flat ones
            for slot, view in zip(pack.slots, pack.grad_views):
                slot.param.grad = view
        self._gathered = flats
        return flats

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As ``torch.optim.Optimizer.zero_grad``; also forgets gradients gathered since the last step."""
        self._gathered = None
        super().zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        """One Adam step: one fused update per group while every parameter has a gradient and their
        step counts agree, else ``torch.optim.Adam``'s step over the parameters that have one."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flats = self._gathered if self._gathered is not None else self.gather_gradients()
        self._gathered = None
        if flats is None or any(pack.step is None and pack.exp_avg is not None for pack in self._packs):
            for pack in self._packs:  # moments in the flat layout first, so a later flat step keeps them
                if pack.exp_avg is None:
                    self._init_state(pack)
            self._separate_steps()
            super().step()
            return loss
        for group, pack, grad in zip(self.param_groups, self._packs, flats):
            if not pack.slots:
                continue
            if pack.exp_avg is None:
                self._init_state(pack)
            beta1, beta2 = group["betas"]
            adam_update(
                [pack.buffer],
                [grad],
                [pack.exp_avg],
                [pack.exp_avg_sq],
                [],
                [pack.step],
                fused=True,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
            )
        return loss

    def _init_state(self, pack: _Pack, step: Tensor | None = None) -> None:
        """Moments of zero in the flat layout, one step counter shared by the group's parameters."""
        pack.exp_avg = torch.zeros_like(pack.buffer)
        pack.exp_avg_sq = torch.zeros_like(pack.buffer)
        if step is None:
            step = torch.zeros((), dtype=torch.float32, device=pack.buffer.device)
        pack.step = step
        for slot in pack.slots:
            self.state[slot.param] = {
                "step": pack.step,
                "exp_avg": slot.view_of(pack.exp_avg),
                "exp_avg_sq": slot.view_of(pack.exp_avg_sq),
            }

    def _separate_steps(self) -> None:
        """Give every parameter a step counter of its own (before a step that may skip some)."""
        for pack in self._packs:
            if pack.step is not None:
                for slot in pack.slots:
                    self.state[slot.param]["step"] = pack.step.clone()
                pack.step = None

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s state dict (per-parameter state; the step counters not shared)."""
        state = super().state_dict()
        state["state"] = {k: {n: v.clone() for n, v in s.items()} for k, s in state["state"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``torch.optim.Adam`` or :class:`FlatAdam` state dict, then pack its moments flat."""
        super().load_state_dict(state_dict)
        for pack in self._packs:
            states = [self.state.get(slot.param) for slot in pack.slots]
            if not any(states):
                pack.exp_avg = pack.exp_avg_sq = pack.step = None
                continue
            if not all(states):
                raise ValueError("an Adam state with moments for only some of a group's parameters")
            steps = [float(s["step"]) for s in states]  # read once, at load
            device = pack.buffer.device
            self._init_state(pack, states[0]["step"].detach().to(device, torch.float32, copy=True))
            with torch.no_grad():
                for slot, s in zip(pack.slots, states):
                    self.state[slot.param]["exp_avg"].copy_(s["exp_avg"])
                    self.state[slot.param]["exp_avg_sq"].copy_(s["exp_avg_sq"])
            if any(not math.isclose(v, steps[0]) for v in steps):
                pack.step = None
                for slot, v in zip(pack.slots, steps):
                    self.state[slot.param]["step"] = torch.tensor(v, dtype=torch.float32, device=device)
