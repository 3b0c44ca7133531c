"""The one-node MLP (issue 36) and the summed weight gradients of an MLP called many times in one pass.

:class:`MLP` runs its linear layers and activations as one autograd node. A network called once per
step of a loop (SPAIR's lateral MLP and glimpse encoder once per wavefront group, the saccade VRNN's
heads once per glimpse) would still compute and accumulate its weight gradients once per call: inside
:func:`summed_weight_gradients` the calls hand their layer inputs and output gradients to one store,
and a single node, run after all of them in the backward pass, computes each weight's gradient with
one matrix product over all calls' rows. The gradients are those of the calls one by one (a sum of
products is one product of the stacked rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "Dense", "GRUCell", "mlp", "summed_weight_gradients"]


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ELU, final_activation: bool = False) -> MLP:
    """A multi-layer perceptron with ``len(sizes) - 1`` linear layers (an :class:`MLP`).

    ELU by default: on SPAIR's glimpse codes it learned markedly faster than ReLU (reconstruction RMSE
    0.092 against 0.127 after 1,500 steps on 5-digit scenes), which is what a short CPU budget needs.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation())
    return MLP(*layers)


class MLP(nn.Sequential):
    """Linear layers with ELU or ReLU between them, run as one autograd node.

    The same layers, parameters, names and values as the ``nn.Sequential`` it is; its forward and
    backward pass each take one call per layer's matrix product, bias and activation, instead of the
    twenty-odd operations per layer of autograd's generic nodes (issue 36: a guide that calls its MLPs
    once per wavefront group spent most of its step in that overhead). The backward pass computes
    autograd's gradients with autograd's own kernels (``mm``, ``elu_backward``, ``threshold_backward``).
    Layers of any other kind, double backward, or a pass under ``torch.compile`` fall back to the
    module-by-module forward.
    """

    _summed: _SummedCalls | None = None
    _transposed: tuple[tuple[int, ...], list[Tensor]] | None = None

    def forward(self, x: Tensor) -> Tensor:
        plan = self._fused_plan(x)
        if plan is None:
            return super().forward(x)
        return self._apply_plan(x, plan, None)

    def heads(
        self, x: Tensor, sizes: tuple[int, ...], order: Tensor | None = None, inverse: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """The output's columns split in ``sizes`` (after permuting them by ``order``, if given), inside
        the one autograd node.

        Equal to ``self(x).index_select(-1, order).split(sizes, -1)`` (``inverse``: the inverse
        permutation of ``order``) without the indexing and slicing nodes: what a network whose output
        holds several distributions' parameters needs.
        """
        if (order is None) != (inverse is None):
            raise ValueError("give both order and its inverse, or neither")
        plan = self._fused_plan(x)
        if plan is None:
            out = super().forward(x)
            return (out if order is None else out.index_select(-1, order)).split(sizes, -1)
        return self._apply_plan(x, plan, (order, inverse, tuple(sizes)))

    def _apply_plan(self, x: Tensor, plan: list[tuple[nn.Linear, str | None]], columns):
        params = [t for layer in plan for t in (layer[0].weight, layer[0].bias)]
        return _run_fused(self, x, params, tuple(kind for _, kind in plan), columns)

    def _fused_plan(self, x: Tensor) -> list[tuple[nn.Linear, str | None]] | None:
        """The layers for the one-node pass of ``x``, or None where the module-by-module forward runs
        (no graph to build, a 0-d input, a pass under ``torch.compile``, layers of another kind)."""
        return self._plan() if _fusable(x) else None

    def _plan(self) -> list[tuple[nn.Linear, str | None]] | None:
        plan: list[tuple[nn.Linear, str | None]] = []
        for module in self:
            if isinstance(module, nn.Linear) and module.bias is not None:
                plan.append((module, None))
            elif isinstance(module, nn.ELU) and plan and plan[-1][1] is None and not module.inplace:
                plan[-1] = (plan[-1][0], f"elu:{module.alpha}")
            elif isinstance(module, nn.ReLU) and plan and plan[-1][1] is None:
                plan[-1] = (plan[-1][0], "relu")
            else:
                return None
        return plan


class Dense(nn.Linear):
    """``nn.Linear`` run as :class:`MLP`'s one autograd node (its parameters and names are Linear's).

    Autograd's ``addmm`` node takes about 17 operations backward and a transpose node 4 more; this one
    takes 4, and inside :func:`summed_weight_gradients` leaves its weight gradients to one product
    over all calls of the pass. Falls back to ``nn.Linear`` where :class:`MLP` does.
    """

    _summed: _SummedCalls | None = None
    _transposed: tuple[tuple[int, ...], list[Tensor]] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None or not _fusable(x):
            return super().forward(x)
        return _run_fused(self, x, [self.weight, self.bias], (None,), None)


class GRUCell(nn.GRUCell):
    """``nn.GRUCell`` (same parameters, names and equations) whose two matrix products run as
    :class:`Dense`'s one-node products, taking part in :func:`summed_weight_gradients`.

    The gates follow torch's GRU cell: ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` alike,
    ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h' = n + z (h - n)`` (that is, ``(1 - z) n + z
    h``). Falls back to ``nn.GRUCell`` where :class:`MLP` does, or for a cell without biases or an
    unbatched input.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self._products = (_WeightOwner(), _WeightOwner())

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if h is None or not self.bias or x.dim() != 2 or not _fusable(x):
            return super().forward(x, h)
        into, within = self._products
        gates_x = _run_fused(into, x, [self.weight_ih, self.bias_ih], (None,), None)
        gates_h = _run_fused(within, h, [self.weight_hh, self.bias_hh], (None,), None)
        r_x, z_x, n_x = gates_x.chunk(3, -1)
        r_h, z_h, n_h = gates_h.chunk(3, -1)
        r = torch.sigmoid(r_x + r_h)
        z = torch.sigmoid(z_x + z_h)
        n = torch.tanh(n_x + r * n_h)
        return n + z * (h - n)


class _WeightOwner:
    """The per-pass state of one fused product that is not a module of its own (:class:`GRUCell`'s)."""

    _summed: _SummedCalls | None = None
    _transposed: tuple[tuple[int, ...], list[Tensor]] | None = None


def _fusable(x: Tensor) -> bool:
    """Whether a pass of ``x`` runs as one node: a graph to build, a batch, not under ``torch.compile``."""
    return torch.is_grad_enabled() and x.dim() >= 1 and not torch.compiler.is_compiling()


def _run_fused(
    owner: MLP | Dense | _WeightOwner, x: Tensor, params: list[Tensor], kinds: tuple[str | None, ...], columns
):
    """:class:`_MLPFunction` of ``owner``'s layers ``params`` (weight, bias in turn) with activations
    ``kinds``; inside :func:`summed_weight_gradients` the first call of a pass makes the node that sums
    the weight gradients."""
    summed = owner._summed
    token = None
    if summed is not None:
        if summed.token is None:
            summed.token = _SumWeightGradients.apply(summed, *params)
        token = summed.token
    return _MLPFunction.apply(x, kinds, columns, summed, token, _weights_transposed(owner, params), *params)


def _weights_transposed(owner: MLP | Dense | _WeightOwner, params: list[Tensor]) -> list[Tensor]:
    """The layers' ``weight.t()``, views made once (three operations each per call otherwise) and made
    again only when a weight's storage moves (an optimiser flattening its parameters, ``.to``)."""
    key = tuple(w.data_ptr() for w in params[::2])
    if owner._transposed is None or owner._transposed[0] != key:
        with torch.no_grad():
            owner._transposed = (key, [w.t() for w in params[::2]])
    return owner._transposed[1]


class _SummedCalls:
    """The layer inputs and output gradients of an MLP's calls in one pass
    (:func:`summed_weight_gradients`)."""

    def __init__(self) -> None:
        self.token: Tensor | None = None
        self.rows: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def add(self, layer: int, inputs: Tensor, grad: Tensor) -> None:
        self.rows.setdefault(layer, []).append((inputs, grad))


@contextmanager
def summed_weight_gradients(*modules: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`MLP`, :class:`Dense` and :class:`GRUCell` in ``modules``
    computes its weight gradients once.

    Each call's backward then computes only its input's gradient; one node per MLP, which the
    backward pass reaches after all of that MLP's calls, multiplies the stacked rows of all calls.
    Use it around a loop that calls the same MLPs many times in one forward pass.
    """
    nets = {id(m): m for module in modules for m in module.modules() if isinstance(m, (MLP, Dense))}
    nets.update(
        (id(o), o)
        for module in modules
        for m in module.modules()
        if isinstance(m, GRUCell)
        for o in m._products
    )
    for net in nets.values():
        net._summed = _SummedCalls()
    try:
        yield
    finally:
        for net in nets.values():
            net._summed = None


class _SumWeightGradients(torch.autograd.Function):
    """Forward: a scalar token every call of the pass takes in. Backward: the weight gradients."""

    @staticmethod
    def forward(ctx, summed: _SummedCalls, *params: Tensor) -> Tensor:
        ctx.summed = summed
        return params[0].new_zeros(())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _grad: Tensor):
        rows, grads = ctx.summed.rows, []
        ctx.summed.rows = {}
        for k in range(len(ctx.needs_input_grad) // 2):
            parts = rows.get(k, [])
            if not parts or not (ctx.needs_input_grad[1 + 2 * k] or ctx.needs_input_grad[2 + 2 * k]):
                grads += [None, None]
                continue
            inputs = _rows([p[0] for p in parts])
            g = _rows([p[1] for p in parts])
            grads += [g.t().mm(inputs), g.sum(0)]
        return (None, *grads)


def _rows(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)``, on the CPU by one thread: torch's multi-threaded concatenation dispatches
    three view operations per input (a wavefront's few hundred rows gain nothing from threads)."""
    if len(parts) == 1:
        return parts[0]
    threads = torch.get_num_threads()
    if parts[0].device.type != "cpu" or threads == 1:
        return torch.cat(parts)
    torch.set_num_threads(1)
    try:
        return torch.cat(parts)
    finally:
        torch.set_num_threads(threads)


class _MLPFunction(torch.autograd.Function):
    """:class:`MLP`'s forward and backward (``params``: each layer's weight and bias in turn).

    ``summed`` (with its ``token``): leave the weight gradients to :class:`_SumWeightGradients`.
    """

    @staticmethod
    def forward(ctx, x: Tensor, kinds: tuple[str | None, ...], columns, summed, token, transposed, *params):
        # columns: None (one output), or (order, inverse, sizes) of :meth:`MLP.heads`
        lead = x.shape[:-1]
        h = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # a reshape of 2 dims costs 2 operations
        saved = [h]
        for k, kind in enumerate(kinds):
            pre = torch.mm(h, transposed[k]).add_(params[2 * k + 1])  # 4 operations, where addmm takes 6
            if kind is None:
                h = pre
            elif kind == "relu":
                h = torch.relu(pre)
            else:
                h = F.elu(pre, alpha=float(kind.split(":")[1]))
            saved += [pre, h]
        ctx.kinds, ctx.lead, ctx.columns, ctx.summed = kinds, lead, columns, summed
        ctx.save_for_backward(*saved, *params)
        if columns is None:
            return h if x.dim() == 2 else h.reshape(*lead, h.shape[-1])
        order, _, sizes = columns
        h = h if order is None else h.index_select(-1, order)
        return h.reshape(*lead, h.shape[-1]).split(sizes, -1)  # split views of a view: fewer operations

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor | None):
        kinds, summed = ctx.kinds, ctx.summed
        tensors = ctx.saved_tensors
        layers = len(kinds)
        params = tensors[1 + 2 * layers :]
        if ctx.columns is None:
            g = grads[0]
        else:
            g = torch.cat(grads, -1)
            g = g if ctx.columns[1] is None else g.index_select(-1, ctx.columns[1])
        g = g if g.dim() == 2 else g.reshape(-1, g.shape[-1])
        param_grads: list[Tensor | None] = [None] * (2 * layers)
        grad_x = None
        for k in reversed(range(layers)):
            pre, out = tensors[1 + 2 * k], tensors[2 + 2 * k]
            kind = kinds[k]
            if kind == "relu":
                g = torch.ops.aten.threshold_backward(g, out, 0)
            elif kind is not None:
                g = torch.ops.aten.elu_backward(g, float(kind.split(":")[1]), 1, 1, False, pre)
            inputs = tensors[2 * k] if k else tensors[0]
            if summed is not None:
                summed.add(k, inputs, g)
            else:
                param_grads[2 * k] = g.t().mm(inputs)
                param_grads[2 * k + 1] = g.sum(0)
            if k or ctx.needs_input_grad[0]:
                g = g.mm(params[2 * k])
                if not k:
                    grad_x = g if len(ctx.lead) == 1 else g.reshape(*ctx.lead, g.shape[-1])
        return (grad_x, None, None, None, None, None, *param_grads)
