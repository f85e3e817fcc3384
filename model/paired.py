"""Paired arithmetic: matrix products whose every row is the same whatever batch it is computed in, at a
matrix-matrix product's speed.

A BLAS picks its kernel by shape. At one row it runs a matrix-vector kernel whose sums round differently from its
matrix-matrix kernels, so `model.rowwise` (row-invariant by computing every row as a batch of one) gives up the
weight reuse that makes a batch cheap. Measured on this project's CPUs, the matrix-matrix kernel of a layer gives
each row the same bits for every batch of 2 up to some size (9-15 rows for the speech models' layers at one
thread, only 2 for the 54-wide layers of the handwriting VRNN-GMM), wherever the row sits in the batch and
wherever the batch starts in memory. So here a row's reference value is what it gets inside a batch of two (a
lone row gets a zero row beside it), and a batch is computed over chunks of sizes that give those bits.

Which sizes do is probed once per layout (a kernel is chosen by shapes, strides, dtype, device and thread count,
not values, so random probes decide it): every row of a chunk of each size, at two places in the batch, against
its own pair. A layout whose pair already depends on the row's place computes every row in a pair of its own
(exact by construction, slow). `RowOp` does this for any function of row-batched inputs whose rows do not mix
(`F.linear`, `addmm`, `torch.lstm_cell`: its two products are such kernels and its gate arithmetic is elementwise).

`model.stepper.Stepper(model, paired=True)` runs every product of a sampling step as a `RowOp`: a solo sample and
every row of a batched one then get the same bits (tests/model/test_paired.py). On the CPU its products are
`model.native`'s where that library builds: row-invariant at every size by construction, which the same probe
confirms (size 1 included: a lone row then runs as it is); PyTorch's elsewhere (a GPU, no compiler). With PyTorch's
products a batch of 16 speech rows costs 2.2x one row instead of 5.6x row by row (`model.rowwise`) on the Intel
Xeon. `stepper.paired_pays` says which models sample this way on the machine at hand: with PyTorch's products on the
AMD EPYC, where MKL's small products keep no batch's bits and some layouts not even a pair's, none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import defaults

Output = Any  # a tensor, or a tuple (a NamedTuple too) of tensors and Nones

# Valid chunk sizes per (layout, dtype, device, threads), largest first: ending in 2, or in 1 where a lone row as it
# is gets its paired bits too; empty when even a pair depends on where the row sits.
_SIZES: dict[tuple, tuple[int, ...]] = {}
_LOCK = threading.Lock()


def pad_row(x: Tensor) -> Tensor:
    """x (1, n) with a zero row below it: a lone row's reference batch."""
    return torch.cat([x, x.new_zeros(x.shape)])


def _rows(out: Output, start: int, stop: int) -> Output:
    """Rows start:stop of a tensor, or of each tensor of a tuple (a NamedTuple keeps its type, None stays None)."""
    if isinstance(out, Tensor):
        return out[start:stop]
    return _like(out, [None if o is None else o[start:stop] for o in out])


def _like(out: tuple, values: list) -> tuple:
    return type(out)(*values) if hasattr(out, "_fields") else tuple(values)


def _equal(a: Output, b: Output) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    return all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _cat(parts: list[Any]) -> Output:
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return _like(parts[0], [None if p[0] is None else torch.cat(p) for p in zip(*parts, strict=True)])


def plan(rows: int, sizes: Sequence[int]) -> list[int]:
    """Chunks for `rows` rows: the largest valid size that fits, again and again; 1 for a row that is left (it
    runs beside a zero row unless 1 is valid). Without valid sizes, every row alone."""
    chunks = []
    while rows > 0:
        m = next((s for s in sizes if s <= rows), 1)
        chunks.append(m)
        rows -= m
    return chunks


class RowOp:
    """`fn` (row-batched tensors in, a tensor or a tuple of them out, rows independent in exact arithmetic) with
    every output row as it is in a batch of two. `widths`: each input's row width (for the probe); `layout`: what
    picks the kernels besides dtype, device and threads (the weights' shapes and strides), the probe cache's key."""

    def __init__(self, fn: Callable[..., Output], widths: Sequence[int], layout: Hashable):
        self.fn, self.widths, self.layout = fn, tuple(widths), layout
        # the last (dtype, device, threads) asked for, with its sizes and their set: one tuple, replaced whole, so a
        # thread never reads one key's sizes with another's set
        self._last: tuple[tuple, tuple[int, ...], frozenset[int]] = ((), (), frozenset())

    def sizes(self, like: Tensor) -> tuple[int, ...]:
        """The chunk sizes that give every row its paired bits (probed once per layout and thread count)."""
        return self._lookup(like)[1]

    def _lookup(self, like: Tensor) -> tuple[tuple, tuple[int, ...], frozenset[int]]:
        key = (like.dtype, like.device, torch.get_num_threads())
        last = self._last
        if key != last[0]:
            full = (self.layout, *key)
            with _LOCK:
                if full not in _SIZES:
                    _SIZES[full] = self._probe(like.dtype, like.device)
            last = self._last = (key, _SIZES[full], frozenset(_SIZES[full]))
        return last

    def _probe(self, dtype: torch.dtype, device: torch.device) -> tuple[int, ...]:
        n = defaults.PAIRED_PROBE_ROWS
        g = torch.Generator(device=device).manual_seed(0)
        xs = [torch.randn(n, w, generator=g, device=device, dtype=dtype) for w in self.widths]
        alone = [_rows(self.fn(*(pad_row(x[r : r + 1]) for x in xs)), 0, 1) for r in range(n)]
        second = self.fn(*(torch.cat([x.new_zeros(1, x.shape[1]), x[:1]]) for x in xs))
        if not _equal(_rows(second, 1, 2), alone[0]):  # the pair itself depends on where the row sits
            return ()
        # 1: a lone row computed as it is gets its paired bits (row-invariant products: model.native)
        sizes = [1] if all(_equal(self.fn(*(x[r : r + 1] for x in xs)), alone[r]) for r in range(n)) else []
        for m in range(2, n + 1):
            if all(
                _equal(_rows(out, i, i + 1), alone[start + i])
                for start in (0, n - m)  # two places in the batch (and so in memory)
                for out in [self.fn(*(x[start : start + m] for x in xs))]
                for i in range(m)
            ):
                sizes.append(m)
        return tuple(sorted(sizes, reverse=True))

    def __call__(self, *xs: Tensor) -> Output:
        rows = xs[0].shape[0]
        xs = tuple(x.contiguous() for x in xs)
        _, sizes, valid = self._lookup(xs[0])
        if rows in valid:  # the common case: one chunk
            return self.fn(*xs)
        parts, i = [], 0
        for m in plan(rows, sizes):
            part = tuple(x[i : i + m] for x in xs)
            parts.append(self.fn(*part) if m in valid else _rows(self.fn(*map(pad_row, part)), 0, 1))
            i += m
        return _cat(parts)


def linear_op(weight: Tensor, bias: Tensor | None = None) -> RowOp:
    """x -> F.linear(x, weight, bias), paired."""
    layout = ("linear", tuple(weight.shape), weight.stride(), bias is None)
    return RowOp(lambda x: F.linear(x, weight, bias), [weight.shape[1]], layout)


def accumulate_op(weight: Tensor) -> RowOp:
    """(x, out) -> out + x W^T (a new tensor; as `out.addmm_(x, weight.t())`), paired."""
    weight_t = weight.t()
    layout = ("addmm", tuple(weight.shape), weight.stride())
    return RowOp(lambda x, out: torch.addmm(out, x, weight_t), [weight.shape[1], weight.shape[0]], layout)


def head_op(head: Any) -> RowOp:
    """hidden -> the output head's parameters (its Linear, then its elementwise arithmetic: `head.params`), paired.

    The elementwise part belongs in the paired op: an elementwise kernel splits a large tensor among threads at a
    fixed element count, wherever that falls in a row, and a split row's two parts round differently at the seam
    (seen: the speech mixture heads' softplus, 8,000 values a row, on two threads at 11 rows). The probe sees that
    too, and keeps only the chunk sizes whose rows come out whole."""
    linear = head.hidden_to_params
    assert isinstance(linear, nn.Linear)
    shape = (getattr(head, "k", None), getattr(head, "x_dim", None))
    layout = ("head", type(head).__name__, shape, tuple(linear.weight.shape), linear.weight.stride())
    return RowOp(lambda hidden: head.params(F.linear(hidden, linear.weight, linear.bias)), [linear.in_features], layout)


def latent_head(
    latent: Any, linear: Callable[[Tensor], Tensor] | None = None
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """hidden -> (mu, softplus(a) + floor) of a `networks.GaussianLatent`'s head (its Linear, then elementwise), as
    `GaussianLatent.forward` computes it after its network; `linear` computes the Linear instead of `F.linear` (the
    stepper's native products)."""
    w, b, z_dim, floor = latent.hidden_to_params.weight, latent.hidden_to_params.bias, latent.z_dim, latent.std_floor

    def fn(hidden: Tensor) -> tuple[Tensor, Tensor]:
        mu, a = (F.linear(hidden, w, b) if linear is None else linear(hidden)).split(z_dim, dim=-1)
        return mu, F.softplus(a) + floor

    return fn


def latent_head_op(latent: Any) -> RowOp:
    """`latent_head`, paired: its softplus is elementwise work that a threaded kernel may split mid-row too (see
    `head_op`)."""
    w = latent.hidden_to_params.weight
    layout = ("latent", latent.z_dim, latent.std_floor, tuple(w.shape), w.stride())
    return RowOp(latent_head(latent), [w.shape[1]], layout)


def lstm_op(cell: nn.LSTMCell) -> RowOp:
    """(x, h, c) -> torch.lstm_cell(x, (h, c), ...) of `cell`'s weights, paired."""
    w = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    layout = ("lstm", tuple(cell.weight_ih.shape), cell.weight_ih.stride(), tuple(cell.weight_hh.shape))
    widths = [cell.input_size, cell.hidden_size, cell.hidden_size]
    return RowOp(lambda x, h, c: torch.lstm_cell(x, (h, c), *w), widths, layout)
