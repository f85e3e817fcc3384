"""Row-invariant inference: a batch whose every row computes exactly what it would compute alone.

A BLAS matrix product picks its kernel (and so its rounding) by shape: row k of `x @ W.T` at batch 16 differs in
the last bits from the same row at batch 1, and an autoregressive sampler turns such a difference into a different
sample within a few steps. A server that batches concurrent requests must still give each seed the bytes it gives
alone (issue "Serve many at once"), so the batched path here computes every row as a batch-1 product: `baddbmm`
over rows, each a (1 x in) by (in x out) product, which is bit for bit what `F.linear`/`addmm` give at batch 1
(checked on this machine's CPU kernels in tests/model/test_rowwise.py, for every shipped checkpoint's layers).
Elementwise work (activations, the LSTM's gates) is the same per row either way.

`rowwise_copy(module)` returns a copy of a module tree (sharing the parameters) whose `nn.Linear`, `nn.LSTMCell`
and `networks.MLP` compute row by row; the original module is untouched. At batch 1 the copy takes the original
kernels' own path, so it costs nothing there; at batch B it trades the BLAS's weight reuse for B matrix-vector
products, which is what a sampler of small models is bound by anyway (per-step overhead, not arithmetic).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import MLP


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` for x (B, in), each row computed as a batch of one."""
    if x.shape[0] == 1:
        return F.linear(x, weight, bias)
    w = weight.t().expand(x.shape[0], *weight.t().shape)
    if bias is None:
        return torch.bmm(x.unsqueeze(1), w).squeeze(1)
    return torch.baddbmm(bias.expand(x.shape[0], 1, -1), x.unsqueeze(1), w).squeeze(1)


def addmm_(out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """`out += x @ weight.T` in place (as `networks._addmm_`), each row as a batch of one."""
    if out.shape[0] == 1:
        return out.addmm_(x, weight.t())
    out.unsqueeze(1).baddbmm_(x.unsqueeze(1), weight.t().expand(x.shape[0], *weight.t().shape))
    return out


class RowwiseLinear(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        for name, value in vars(layer).items():  # attributes set on the layer (e.g. std_slices)
            if not name.startswith("_") and name not in ("training",):
                setattr(self, name, value)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class RowwiseLSTMCell(nn.Module):
    """`nn.LSTMCell`'s arithmetic (gates = x W_ih^T + b_ih + h W_hh^T + b_hh; c' = f c + i g; h' = o tanh c'),
    row by row: equal to the fused cell at batch 1 (tested)."""

    def __init__(self, cell: nn.LSTMCell):
        super().__init__()
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = (
            cell.weight_ih,
            cell.weight_hh,
            cell.bias_ih,
            cell.bias_hh,
        )
        object.__setattr__(self, "cell", cell)  # for batch 1; not a submodule (its parameters are the ones above)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        if x.shape[0] == 1:
            return self.cell(x, state)
        gates = linear(x, self.weight_ih, self.bias_ih) + linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, 1)
        c2 = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c2.tanh(), c2


class RowwiseMLP(MLP):
    """`networks.MLP.forward` with row-by-row products (the same order of operations, so the same bits)."""

    def forward(self, *inputs: Tensor) -> Tensor:
        first = self.layers[0]
        if len(inputs) == 1:
            x = linear(inputs[0], first.weight, first.bias)
        else:
            blocks = self.first_layer_blocks()
            x = linear(inputs[0], blocks[0], first.bias)
            for inp, w in zip(inputs[1:], blocks[1:], strict=True):
                addmm_(x, inp, w)
        x = F.relu(x, inplace=True)
        for layer in self.layers[1:]:
            x = F.relu(linear(x, layer.weight, layer.bias))
        return x


def rowwise_copy(module: nn.Module) -> nn.Module:
    """A shallow copy of `module`'s tree whose Linear, LSTMCell and MLP submodules compute row by row; the
    parameters are shared with `module` (no copy of the weights), and `module` itself is unchanged."""
    if isinstance(module, nn.Linear):
        return RowwiseLinear(module)
    if isinstance(module, nn.LSTMCell):
        return RowwiseLSTMCell(module)
    clone = copy.copy(module)
    clone._modules = type(module._modules)(
        (name, rowwise_copy(m) if m is not None else None) for name, m in module._modules.items()
    )
    if isinstance(module, MLP) and not isinstance(module, RowwiseMLP):
        clone.__class__ = RowwiseMLP
    return clone
