"""Row-invariant inference: a batch whose every row computes exactly what it would compute alone.

A BLAS matrix product picks its kernel (and so its rounding) by shape: row k of `x @ W.T` at batch 16 differs in
the last bits from the same row at batch 1, and an autoregressive sampler turns such a difference into a different
sample within a few steps. A server that batches concurrent requests must still give each seed the bytes it gives
alone (issue "Serve many at once"), so the batched path here computes every row as a batch-1 product: `baddbmm`
over rows, each a (1 x in) by (in x out) product on a row that starts on a 64-byte boundary (as a fresh tensor's
does: the kernels' sums depend on alignment too), which is bit for bit what `F.linear`/`addmm` give at batch 1
on the machines seen so far, except for some shapes on some CPUs: every layout is probed once against the batch-1
call, and where the two differ its rows go through the batch-1 call one by one (exact by construction).
Elementwise work (activations, the LSTM's gates) is the same per row either way. With one generator per row
(`distributions.RowGenerators`) every random draw is the row's own, so `rowwise_copy(model).sample(B, generator=
RowGenerators(...))` returns in row r exactly `model.sample(1, generator=g_r)`: tests/model/test_rowwise.py
checks it for every shipped checkpoint and sampling mode, with a temperature and a bias.

`rowwise_copy(module)` returns a copy of a module tree (sharing the parameters) whose `nn.Linear`, `nn.LSTMCell`
and `networks.MLP` compute row by row; the original module is untouched. At batch 1 the copy takes the original
kernels' own path, so it costs nothing there; at batch B it trades the BLAS's weight reuse for B matrix-vector
products, which is what a sampler of small models is bound by anyway (per-step overhead, not arithmetic).
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import MLP

ALIGN_BYTES = 64  # PyTorch's CPU allocator aligns every tensor to 64 bytes


def aligned_rows(x: Tensor) -> Tensor:
    """x (B, n) with every row starting on an ALIGN_BYTES boundary, as a fresh batch-1 tensor's row does.

    The vector kernels of a matrix-vector product peel elements until their loads are aligned, so the order of
    the dot product's sums (and its last bits) depends on where a row starts in memory: a row at byte 1020 of a
    batch rounds differently from the same values in a tensor of its own."""
    size = x.element_size()
    if x.stride(-1) == 1 and (x.stride(0) * size) % ALIGN_BYTES == 0 and (x.data_ptr() % ALIGN_BYTES) == 0:
        return x
    width = -(-x.shape[1] * size // ALIGN_BYTES) * ALIGN_BYTES // size
    buf = x.new_empty(x.shape[0], width)[:, : x.shape[1]]
    buf.copy_(x)
    return buf


def _batched_linear(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """Every row as a (1 x in) by (in x out) product, in one `baddbmm`/`bmm` (into `out`, accumulated, when given)."""
    B = x.shape[0]
    w = weight.t().expand(B, *weight.t().shape)
    if out is not None:
        acc = aligned_rows(out)
        acc.unsqueeze(1).baddbmm_(aligned_rows(x).unsqueeze(1), w)
        if acc.data_ptr() != out.data_ptr():
            out.copy_(acc)
        return out
    res = aligned_rows(x.new_empty(B, weight.shape[0]))
    if bias is None:
        torch.bmm(aligned_rows(x).unsqueeze(1), w, out=res.unsqueeze(1))
    else:
        res.copy_(bias.expand(B, -1))
        res.unsqueeze(1).baddbmm_(aligned_rows(x).unsqueeze(1), w)
    return res


def _rows_alone(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """Every row through the batch-1 call itself, on a fresh copy of the row (as a solo sampler's tensors are)."""
    if out is not None:
        for r in range(x.shape[0]):
            row = out[r : r + 1].clone()
            out[r : r + 1] = row.addmm_(x[r : r + 1].clone(), weight.t())
        return out
    res = aligned_rows(x.new_empty(x.shape[0], weight.shape[0]))
    for r in range(x.shape[0]):
        res[r : r + 1] = F.linear(x[r : r + 1].clone(), weight, bias)
    return res


# Whether the batched kernel gives the batch-1 bits, per (product, weight layout, bias, batch, dtype, device): a
# BLAS may pick a different kernel for the batched product on some CPUs and shapes (seen: a 3-input layer on an
# AVX-512 machine), so each layout is probed once against the batch-1 call and falls back to row-by-row calls
# where they differ. The kernel is chosen by shapes and strides, not values, so a random probe decides it.
_BATCHED_OK: dict[tuple, bool] = {}


def _batched_ok(x: Tensor, weight: Tensor, bias: Tensor | None, accumulate: bool) -> bool:
    key = (accumulate, tuple(weight.shape), weight.stride(), bias is None, x.shape[0], x.dtype, x.device.type)
    ok = _BATCHED_OK.get(key)
    if ok is None:
        g = torch.Generator(device=x.device).manual_seed(0)
        ok = True
        for _ in range(2):
            probe = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            start = torch.randn(x.shape[0], weight.shape[0], generator=g, device=x.device, dtype=x.dtype)
            if accumulate:
                ok &= torch.equal(
                    _batched_linear(probe, weight, None, start.clone()), _rows_alone(probe, weight, None, start)
                )
            else:
                ok &= torch.equal(_batched_linear(probe, weight, bias), _rows_alone(probe, weight, bias))
        _BATCHED_OK[key] = ok
    return ok


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` for x (B, in), each row computed as a batch of one (on aligned rows); the
    result's rows are aligned too."""
    if x.shape[0] == 1:
        return F.linear(x, weight, bias)
    if _batched_ok(x, weight, bias, accumulate=False):
        return _batched_linear(x, weight, bias)
    return _rows_alone(x, weight, bias)


def addmm_(out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """`out += x @ weight.T` in place (as `networks._addmm_`), each row as a batch of one (on aligned rows)."""
    if out.shape[0] == 1:
        return out.addmm_(x, weight.t())
    if _batched_ok(x, weight, None, accumulate=True):
        return _batched_linear(x, weight, None, out)
    return _rows_alone(x, weight, None, out)


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
        for layer in itertools.islice(self.layers, 1, None):
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
