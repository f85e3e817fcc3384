"""The sampling step without the module machinery: the same tensor operations, read off the weights once.

A sampling step of the demo models is bound by per-operation overhead, not arithmetic (a 440k-parameter model's
step needs a few microseconds of arithmetic and took ~410 us at batch 1 through the modules). Much of that was
Python: `nn.Module` calls and attribute look-ups, and the first layers' weights split anew at every step.
`Stepper` takes the weights (and the splits, as views) once and runs the operations the modules run, in the same
order on the same operands, so a step gives the same bits: `VRNN.sample` uses it, and
tests/model/test_stepper.py checks it against the module loop (`VRNN.sample(..., reference=True)`) for every
family, output, mode and shipped checkpoint.

It reads plain modules only (`model.rowwise` copies compute row by row and keep their module path), and the
weights as they are when it is built: build a new one after the weights change (`VRNN.sample` builds one per
call, which costs a few microseconds).

`Stepper(model, paired=True)` runs the same steps on `model.paired`'s products (every row as it is in a batch of
two, whatever the batch): what `VRNN.sample(paired=True)` and a paired `model.engine.SamplingEngine` use, so that a
batch's every row is its solo sample at a matrix-matrix product's cost.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import defaults
from .networks import MLP, GaussianLatent
from .paired import RowOp, accumulate_op, head_op, latent_head, latent_head_op, linear_op, lstm_op, pad_row

if TYPE_CHECKING:
    from .native import Product


def _native() -> Any:
    """`model.native`, imported when first needed (so `python -m model.native` runs it once, not twice)."""
    from . import native

    return native


Linear = Callable[[Tensor], Tensor]  # x -> x W^T + b
Accumulate = Callable[[Tensor, Tensor], Tensor]  # (x, out) -> out + x W^T (in place for the plain product)


def _linear(weight: Tensor, bias: Tensor | None, ops: list[RowOp] | None) -> Linear:
    """One layer's product: PyTorch's own, or (given a list `ops` that collects them) `model.paired`'s."""
    if ops is not None:
        ops.append(linear_op(weight, bias))
        return cast(Linear, ops[-1])
    return lambda x: F.linear(x, weight, bias)


def _accumulate(weight: Tensor, ops: list[RowOp] | None) -> Accumulate:
    if ops is not None:
        ops.append(accumulate_op(weight))
        return cast(Accumulate, ops[-1])
    weight_t = weight.t()
    return lambda x, out: out.addmm_(x, weight_t)


class _MLP:
    """`networks.MLP.forward`: the first layer on one input (`F.linear`) or block by block (`F.linear` on the
    first block, `addmm_` for the others), ReLU in place, then Linear + ReLU per further layer."""

    def __init__(self, net: MLP, ops: list[RowOp] | None):
        first = cast(nn.Linear, net.layers[0])
        blocks = net.first_layer_blocks()
        self.whole = _linear(first.weight, first.bias, ops)
        self.first_block = _linear(blocks[0], first.bias, ops)
        self.more_blocks = tuple(_accumulate(w, ops) for w in blocks[1:])
        later = (cast(nn.Linear, m) for m in itertools.islice(net.layers, 1, None))
        self.rest = tuple(_linear(m.weight, m.bias, ops) for m in later)

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) == 1:
            x = self.whole(inputs[0])
        else:
            x = self.first_block(inputs[0])
            flat = x.view(-1, x.shape[-1])
            for inp, more in zip(inputs[1:], self.more_blocks, strict=True):
                flat = more(inp.reshape(-1, inp.shape[-1]), flat)
            x = flat.view(x.shape)
        x = F.relu(x, inplace=True)
        for layer in self.rest:
            x = F.relu(layer(x))
        return x


class _Latent:
    """`networks.GaussianLatent.forward`: MLP, the head's Linear, then (mu, softplus(a) + floor)."""

    def __init__(self, latent: GaussianLatent, ops: list[RowOp] | None):
        self.net = _MLP(latent.net, ops)
        self.head = latent_head(latent)
        if ops is not None:  # the head's Linear and softplus paired together (paired.latent_head_op)
            ops.append(latent_head_op(latent))
            self.head = cast(Callable[[Tensor], tuple[Tensor, Tensor]], ops[-1])

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.net(*inputs))


Wrap = Callable[[Callable[..., Any], Sequence[int], tuple], Callable[..., Any]]  # (fn, widths, layout) -> op


def _raw(fn: Callable[..., Any], widths: Sequence[int], layout: tuple) -> Callable[..., Any]:
    return fn


def _row_op(ops: list[RowOp]) -> Wrap:
    def wrap(fn: Callable[..., Any], widths: Sequence[int], layout: tuple) -> Callable[..., Any]:
        ops.append(RowOp(fn, widths, ("native", *layout, tuple(widths))))
        return ops[-1]

    return wrap


class _NativeMLP:
    """`networks.MLP.forward` on `model.native`'s products: each layer one call (its input blocks side by side,
    then the bias and ReLU). The layers' values differ from PyTorch's by float32 rounding only."""

    def __init__(self, owner: Any, net: MLP, wrap: Wrap):
        layers = [cast(nn.Linear, m) for m in net.layers]
        first, blocks = layers[0], net.first_layer_blocks()
        n = first.out_features

        def op(ws: Sequence[Tensor], b: Tensor | None) -> Callable[..., Any]:
            return wrap(_native().product(owner, ws, b, relu=True), [int(w.shape[1]) for w in ws], ("mlp", n, len(ws)))

        self.whole = op([first.weight], first.bias)
        self.split = op(blocks, first.bias) if 1 < len(blocks) <= _native().MAX_BLOCKS else None
        self.rest = tuple(op([m.weight], m.bias) for m in layers[1:])

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) == 1:
            x = self.whole(inputs[0])
        elif self.split is not None:
            x = self.split(*inputs)
        else:  # (more input blocks than one call takes)
            x = self.whole(torch.cat(inputs, dim=-1))
        for layer in self.rest:
            x = layer(x)
        return x


def _native_linear(owner: Any, linear: nn.Linear) -> Product:
    return _native().product(owner, [linear.weight], linear.bias)


class _NativeLatent:
    def __init__(self, owner: Any, latent: GaussianLatent, wrap: Wrap):
        self.net = _NativeMLP(owner, latent.net, wrap)
        linear = _native_linear(owner, latent.hidden_to_params)
        layout = ("latent", latent.z_dim, latent.std_floor, linear.n)
        self.head = wrap(latent_head(latent, linear), [linear.widths[0]], layout)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        return cast(tuple[Tensor, Tensor], self.head(self.net(*inputs)))


def _native_head(owner: Any, head: Any, wrap: Wrap) -> Callable[[Tensor], Any]:
    linear = _native_linear(owner, head.hidden_to_params)
    shape = (type(head).__name__, getattr(head, "k", None), getattr(head, "x_dim", None), linear.n)
    return wrap(lambda hidden: head.params(linear(hidden)), [linear.widths[0]], ("head", *shape))


LstmStep = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]  # (x, h, c) -> (h, c)


def _native_lstm(owner: Any, cell: nn.LSTMCell, wrap: Wrap) -> LstmStep:
    """`torch.lstm_cell` in one native call: the gates x W_ih^T + h W_hh^T + (b_ih + b_hh), then their
    nonlinearities (`native.Product.lstm`)."""
    gates_of = _native().product(owner, [cell.weight_ih, cell.weight_hh], (cell.bias_ih, cell.bias_hh))
    return wrap(
        lambda x, h, c: gates_of.lstm(x, h, c=c),
        [cell.input_size, cell.hidden_size, cell.hidden_size],
        ("lstm", cell.hidden_size),
    )


class Stepper:
    """One sampling step of a plain (not row-wise) `VRNN` or `conditional.TextVRNN`, split where the caller draws x_t:

    params, pz = stepper.emit(h, z_noise)      # p(z_t | h) -> z_t -> phi_z -> p(x_t | z_t, h); pz None for RNNs
    h, c = stepper.advance(x, pz, h, c)        # phi_x(x_t) -> LSTM
    """

    def __init__(self, model: Any, paired: bool = False, kernel: str | None = None):
        """`kernel`: whose products, "torch" (PyTorch's) or "native" (`model.native`'s, row-invariant by
        construction); by default native for a paired stepper where they run (float32 on the CPU, the library
        built), else torch."""
        if kernel is None:
            like = torch.empty(0, dtype=model._dtype(), device=model.device)
            kernel = "native" if paired and _native().usable(like) else "torch"
        if kernel not in ("torch", "native"):
            raise ValueError(f"kernel must be 'torch' or 'native', got {kernel!r}")
        self.paired, self.kernel = paired, kernel
        ops: list[RowOp] | None = [] if paired else None  # the paired products, for the sizes they share
        self.has_latent = model.phi_z is not None
        rnn = model.rnn
        self.lstm = (rnn.weight_ih, rnn.weight_hh, rnn.bias_ih, rnn.bias_hh)
        # the LSTM step as a function of (x, h, c), or None for torch.lstm_cell on `self.lstm`
        self.lstm_fn: LstmStep | None = None
        if kernel == "native":
            wrap = _raw if ops is None else _row_op(ops)
            self.phi_x: Any = _NativeMLP(model, model.phi_x, wrap)
            self.phi_z: Any = _NativeMLP(model, model.phi_z, wrap) if self.has_latent else None
            self.prior: Any = _NativeLatent(model, model.prior, wrap) if model.prior is not None else None
            self.decoder: Any = _NativeMLP(model, model.decoder.net, wrap)
            self.head: Any = _native_head(model, model.decoder.head, wrap)
            self.lstm_fn = _native_lstm(model, rnn, wrap)
        else:
            self.phi_x = _MLP(model.phi_x, ops)
            self.phi_z = _MLP(model.phi_z, ops) if self.has_latent else None
            self.prior = _Latent(model.prior, ops) if model.prior is not None else None
            self.decoder = _MLP(model.decoder.net, ops)
            head = model.decoder.head
            if ops is None:
                self.head = head.forward  # the head's own arithmetic (one Linear, then elementwise)
            else:  # the head's Linear and its elementwise arithmetic, paired together (paired.head_op); the LSTM
                ops += [head_op(head), lstm_op(rnn)]
                self.head, self.lstm_fn = ops[-2], ops[-1]
        self.ops = ops or []
        # A batch size that every paired product computes in one chunk runs the unwrapped step: the same calls (the
        # paired products call these on such a batch), without their Python overhead.
        self._plain = Stepper(model, kernel=kernel) if paired else None
        self._key: tuple | None = None  # (threads, dtype) of `_sizes`: the stepper's weights fix the device
        self._sizes: frozenset[int] = frozenset()

    def pads_lone_row(self, like: Tensor) -> bool:
        """Whether a paired row alone must run beside a zero row (`LoneRow`) to get its paired bits: where some
        product gives a lone row other bits than a pair (PyTorch's one-row kernels), not where every product is
        row-invariant (`model.native`)."""
        return self.paired and 1 not in self._one_chunk(like)

    def _one_chunk(self, like: Tensor) -> frozenset[int]:
        """The batch sizes every paired product computes in one chunk (at this dtype and thread count)."""
        key = (torch.get_num_threads(), like.dtype)
        if key != self._key:
            sets = [frozenset(op.sizes(like)) for op in self.ops]
            self._sizes, self._key = frozenset.intersection(*sets) if sets else frozenset(), key
        return self._sizes

    def emit(self, h: Tensor, z_noise: Tensor | None, *extra: Tensor) -> tuple[Any, Tensor | None]:
        """The output distribution's parameters for x_t (the head's tuple) and phi_z(z_t) (None without a latent);
        z_t = mu_p + std_p * z_noise (N(0, I) for VRNN-I: mu 0, std 1, as `Recurrence._prior` gives). `extra`: what
        every network also reads (a text model's window vector w_t)."""
        if self._plain is not None and h.shape[0] in self._one_chunk(h):
            return self._plain._emit(h, z_noise, *extra)
        return self._emit(h, z_noise, *extra)

    def _emit(self, h: Tensor, z_noise: Tensor | None, *extra: Tensor) -> tuple[Any, Tensor | None]:
        if self.phi_z is None:
            return self.head(self.decoder(h, *extra)), None
        assert z_noise is not None
        if self.prior is None:
            mu_p, std_p = h.new_zeros(z_noise.shape), h.new_ones(z_noise.shape)
        else:
            mu_p, std_p = self.prior(h, *extra)
        pz = self.phi_z(mu_p + std_p * z_noise)
        return self.head(self.decoder(pz, h, *extra)), pz

    def advance(self, x: Tensor, pz: Tensor | None, h: Tensor, c: Tensor, *extra: Tensor) -> tuple[Tensor, Tensor]:
        if self._plain is not None and h.shape[0] in self._one_chunk(h):
            return self._plain._advance(x, pz, h, c, *extra)
        return self._advance(x, pz, h, c, *extra)

    def _advance(self, x: Tensor, pz: Tensor | None, h: Tensor, c: Tensor, *extra: Tensor) -> tuple[Tensor, Tensor]:
        px = self.phi_x(x)
        parts = [px, *([] if pz is None else [pz]), *extra]
        rnn_in = torch.cat(parts, dim=-1) if len(parts) > 1 else px
        if self.lstm_fn is not None:
            return self.lstm_fn(rnn_in, h, c)
        h2, c2 = torch.lstm_cell(rnn_in, (h, c), *self.lstm)
        return h2, c2


def reads(model: Any) -> bool:
    """Whether the stepper can read `model`'s weights: plain modules (not `model.rowwise` copies, whose products
    compute row by row)."""
    return type(model.rnn) is nn.LSTMCell and type(model.phi_x) is MLP


_PAYS: weakref.WeakKeyDictionary[Any, dict[tuple, bool]] = weakref.WeakKeyDictionary()
_PAYS_LOCK = threading.Lock()


def paired_pays(model: Any) -> bool:
    """Whether `model` should sample paired on this machine, at this thread's thread count: whether the products of
    its sampling step share a batch size of defaults.PAIRED_MIN_ROWS rows or more that each computes in one call with
    every row's paired bits (`model.paired`'s probe, which reads bits, not times: every process of a machine decides
    alike). Where they do not, a paired batch would run in small chunks (or a pair per row) and a lone row would pay
    for its zero row for nothing. Models the stepper does not read (other module types) sample plain."""
    if not reads(model):
        return False
    like = torch.empty(0, device=model.device, dtype=model._dtype())
    key = (torch.get_num_threads(), like.dtype, like.device)
    known = _PAYS.get(model)
    if known is not None and key in known:  # (the common case, without the lock)
        return known[key]
    sizes = Stepper(model, paired=True)._one_chunk(like)  # (model.paired's probes: each layout once, under its lock)
    pays = max(sizes, default=0) >= defaults.PAIRED_MIN_ROWS
    with _PAYS_LOCK:
        _PAYS.setdefault(model, {})[key] = pays
    return pays


class LoneRow:
    """One row sampled paired on its own (`VRNN.sample`, the engine): it runs as the first row of a batch of two whose
    second row starts as zeros (`state`) and gets zeros as every step's inputs (`noise`, `input`), so that each
    product runs on a pair as it is, with no padding per product. The input buffers are written in place: a step
    copies what it reads."""

    def __init__(self, model: Any):
        cfg, dev, dtype = model.config, model.device, model._dtype()
        self._eps = torch.zeros(2, cfg.z_dim, device=dev, dtype=dtype)
        self._x = torch.zeros(2, cfg.x_dim, device=dev, dtype=dtype)

    @staticmethod
    def state(h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """A lone row's (h, c), each (1, H), with the zero row below it."""
        return pad_row(h), pad_row(c)

    def noise(self, eps: Tensor) -> Tensor:
        """The row's z noise (1, Z) above a zero row."""
        self._eps[0].copy_(eps[0])
        return self._eps

    def input(self, x: Tensor) -> Tensor:
        """The row's drawn x_t (1, D) above a zero row."""
        self._x[0].copy_(x[0])
        return self._x


def first_row(params: Any) -> Any:
    """Row 0 of an output head's parameter tuple (a NamedTuple of (B, ...) tensors, some None)."""
    return type(params)(*(None if f is None else f[:1] for f in params))
