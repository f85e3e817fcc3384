"""The networks of the VRNN, one small module per phi of the paper's Eqs. 5-9.

    phi_x:     x_t -> features                         (feature extractor of x)
    phi_z:     z_t -> features                         (feature extractor of z)
    Prior:     h_{t-1} -> (mu_0,t, sigma_0,t)          Eq. 5, p(z_t | x_<t, z_<t)
    Encoder:   [phi_x(x_t), h_{t-1}] -> (mu_z,t, sigma_z,t)   Eq. 9, q(z_t | x_<=t, z_<t)
    Decoder:   [phi_z(z_t), h_{t-1}] -> output parameters      Eq. 6, p(x_t | z_<=t, x_<t)
               (the RNN family: h_{t-1} only, Eq. 2)
    LSTM:      [phi_x(x_t), phi_z(z_t)], h_{t-1} -> h_t        Eq. 7

Every MLP has `mlp_layers` ReLU layers of width `mlp_width`; prior, encoder and decoder end in
linear heads for their distribution's parameters. Standard deviations are softplus(a) + floor.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import defaults
from .distributions import (
    BivariateMixture,
    DiagonalMixture,
    bivariate_mixture_log_prob,
    bivariate_mixture_mean,
    diagonal_mixture_log_prob,
    diagonal_mixture_mean,
    sample_bivariate_mixture,
    sample_diagonal_mixture,
    sharpen,
)


class MLP(nn.Module):
    """`layers` Linear+ReLU layers of width `width`; the first reads the concatenation of inputs
    of sizes `in_dims` (kept as one Linear so the parameter count is the paper's)."""

    def __init__(self, in_dims: Sequence[int], width: int, layers: int):
        super().__init__()
        self.in_dims = tuple(in_dims)
        sizes = [sum(self.in_dims)] + [width] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, *inputs: Tensor) -> Tensor:
        first = self.layers[0]
        if len(inputs) == 1:
            x = first(inputs[0])
        else:  # W [a; b] = W_a a + W_b b, accumulated in place: no concatenated copy of the inputs
            blocks = self.first_layer_blocks()
            x = F.linear(inputs[0], blocks[0], first.bias)
            for inp, w in zip(inputs[1:], blocks[1:], strict=True):
                _addmm_(x, inp, w)
        return self.forward_after_first(x)

    def first_layer_blocks(self) -> list[Tensor]:
        """The first layer's weight split by input block: W [a, b] = [W_a, W_b], so that
        W [a; b] = W_a a + W_b b can be computed piecewise (used to hoist work out of the loop)."""
        return list(torch.split(self.layers[0].weight, self.in_dims, dim=1))

    def forward_after_first(self, pre_activation: Tensor) -> Tensor:
        """The rest of the MLP, given the first layer's pre-activation (which it overwrites)."""
        x = F.relu(pre_activation, inplace=True)
        for layer in itertools.islice(self.layers, 1, None):  # (slicing a ModuleList builds a new one per call)
            x = F.relu(layer(x))
        return x


def _init_head(linear: nn.Linear, std_slices: Sequence[slice]) -> None:
    """Small weights so a new model predicts its biases; std biases so softplus(b) ~= 1. The std slices
    are remembered on the layer (`std_slices`) for re-initialisations such as `init_cle`."""
    linear.std_slices = tuple(std_slices)  # type: ignore[assignment]
    nn.init.uniform_(linear.weight, -defaults.HEAD_INIT_RANGE, defaults.HEAD_INIT_RANGE)
    nn.init.zeros_(linear.bias)
    with torch.no_grad():
        for s in std_slices:
            linear.bias[s] = defaults.STD_BIAS_INIT


def _positive(a: Tensor, floor: float) -> Tensor:
    return F.softplus(a) + floor


class GaussianLatent(nn.Module):
    """MLP -> (mu, sigma) of a diagonal Gaussian over z. Used for the prior (Eq. 5, input h_{t-1})
    and the encoder (Eq. 9, input [phi_x(x_t), h_{t-1}])."""

    def __init__(self, in_dims: Sequence[int], width: int, layers: int, z_dim: int, std_floor: float):
        super().__init__()
        self.net = MLP(in_dims, width, layers)
        self.hidden_to_params = nn.Linear(width, 2 * z_dim)  # [mu | pre-softplus sigma]
        self.z_dim = z_dim
        self.std_floor = std_floor
        _init_head(self.hidden_to_params, [slice(z_dim, 2 * z_dim)])

    def head(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.hidden_to_params(hidden))

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The head's linear output [mu | a] -> (mu, softplus(a) + floor)."""
        mu, a = params.split(self.z_dim, dim=-1)
        return mu, _positive(a, self.std_floor)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.net(*inputs))


class _OutputHead(nn.Module):
    """What the two output heads share: sampling with a temperature and Graves' bias, drawn by `_draw`."""

    _draw: Callable[..., Tensor | tuple[Tensor, Tensor]]

    @classmethod
    def sample(
        cls,
        p: DiagonalMixture | BivariateMixture,
        generator: torch.Generator | None,
        temperature: float = 1.0,
        bias: float = 0.0,
        return_mean: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """A draw (N, D); with return_mean, (draw, mean of the component it was drawn from; for handwriting,
        the drawn component's mean dx, dy and the drawn pen bit)."""
        logits, std = sharpen(p.logits, p.std, temperature, bias)
        return cls._draw(p._replace(logits=logits, std=std), generator, return_mean)


class DiagonalGaussianOutput(_OutputHead):
    """Speech output head: hidden -> parameters of p(x_t | .), a diagonal Gaussian over the D
    samples of a frame, or a mixture of K of them."""

    def __init__(self, width: int, x_dim: int, n_components: int, std_floor: float):
        super().__init__()
        self.x_dim, self.k, self.std_floor = x_dim, n_components, std_floor
        kd = n_components * x_dim
        n_logits = n_components if n_components > 1 else 0
        self.hidden_to_params = nn.Linear(width, 2 * kd + n_logits)  # [mu | sigma | logits]
        _init_head(self.hidden_to_params, [slice(kd, 2 * kd)])

    def forward(self, hidden: Tensor) -> DiagonalMixture:
        """hidden (N, width) -> DiagonalMixture with mu, std (N, K, D)."""
        return self.params(self.hidden_to_params(hidden))

    def params(self, a: Tensor) -> DiagonalMixture:
        """The elementwise rest of `forward`, from the head's Linear output a (N, 2KD [+ K])."""
        n, kd = a.shape[0], self.k * self.x_dim
        mu = a[:, :kd].reshape(n, self.k, self.x_dim)
        std = _positive(a[:, kd : 2 * kd], self.std_floor).reshape(n, self.k, self.x_dim)
        logits = a[:, 2 * kd :] if self.k > 1 else None
        return DiagonalMixture(logits, mu, std)

    log_prob = staticmethod(diagonal_mixture_log_prob)
    mean = staticmethod(diagonal_mixture_mean)
    _draw = staticmethod(sample_diagonal_mixture)


class BivariateOutput(_OutputHead):
    """Handwriting output head: hidden -> a bivariate Gaussian (or a mixture of K) with correlation
    over the pen offsets (dx, dy), times a Bernoulli pen bit (Graves 2013, Eqs. 18-25)."""

    def __init__(self, width: int, n_components: int, std_floor: float):
        super().__init__()
        self.k, self.std_floor = n_components, std_floor
        k = n_components
        n_logits = k if k > 1 else 0
        # [mu (2K) | sigma (2K) | rho (K) | pen (1) | logits]
        self.hidden_to_params = nn.Linear(width, 5 * k + 1 + n_logits)
        _init_head(self.hidden_to_params, [slice(2 * k, 4 * k)])

    def forward(self, hidden: Tensor) -> BivariateMixture:
        return self.params(self.hidden_to_params(hidden))

    def params(self, a: Tensor) -> BivariateMixture:
        """The elementwise rest of `forward`, from the head's Linear output a (N, 5K + 1 [+ K])."""
        n, k = a.shape[0], self.k
        mu = a[:, : 2 * k].reshape(n, k, 2)
        std = _positive(a[:, 2 * k : 4 * k], self.std_floor).reshape(n, k, 2)
        rho = torch.tanh(a[:, 4 * k : 5 * k]) * defaults.RHO_LIMIT
        pen_logit = a[:, 5 * k]
        logits = a[:, 5 * k + 1 :] if k > 1 else None
        return BivariateMixture(logits, mu, std, rho, pen_logit)

    log_prob = staticmethod(bivariate_mixture_log_prob)
    mean = staticmethod(bivariate_mixture_mean)
    _draw = staticmethod(sample_bivariate_mixture)


class Decoder(nn.Module):
    """p(x_t | z_<=t, x_<t): MLP over [phi_z(z_t), h_{t-1}] (VRNN) or h_{t-1} (RNN), then the output head."""

    def __init__(self, in_dims: Sequence[int], width: int, layers: int, head: nn.Module):
        super().__init__()
        self.net = MLP(in_dims, width, layers)
        self.head = head

    def forward(self, *inputs: Tensor):
        return self.head(self.net(*inputs))


class _StackedWeightGrad(torch.autograd.Function):
    """Zeros of shape (T, *rows, out) whose backward turns the output gradients dY_t of all T steps
    into the gradients sum_t dY_t^T X_i,t of every weight W_i, each a single large product."""

    @staticmethod
    def forward(ctx, inputs: list[list[Tensor]], shape: tuple[int, ...], *weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.inputs = inputs  # one list per weight, filled by LoopProduct while the loop runs
        return weights[0].new_zeros(()).expand(shape)  # a view: no (T, ..., out) buffer to fill

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        dy = grad.reshape(-1, grad.shape[-1]).t()
        grads = [dy @ torch.stack(xs).reshape(dy.shape[1], -1) for xs in ctx.inputs]
        return (None, None, *grads)


def _addmm_(out: Tensor, x: Tensor, weight: Tensor) -> None:
    """out += x W^T in place, over any leading dimensions (one GEMM, no extra pass over out)."""
    out.view(-1, out.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), weight.t())


class LoopProduct:
    """y_t = x_1,t W_1^T + ... + x_n,t W_n^T (+ b) at step t of the time loop.

    The products accumulate into one output in place (no extra elementwise passes). Plain autograd
    would form each W_i's gradient step by step from products with only B rows (slow on a CPU for
    small batches); here each step computes only input gradients, and every W_i's gradient is one
    product over all T x rows, formed after the loop (as cuDNN does for its LSTM)."""

    def __init__(self, weights: Sequence[Tensor], bias: Tensor | None, steps: int, rows: tuple[int, ...]):
        self.bias = bias
        self.weights = list(weights)
        self.inputs: list[list[Tensor]] | None = None
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            self.inputs = [[] for _ in weights]
            shape = (steps, *rows, self.weights[0].shape[0])
            self.zeros = _StackedWeightGrad.apply(self.inputs, shape, *weights).unbind(0)
            self.weights = [w.detach() for w in weights]

    @classmethod
    def of(cls, layer: nn.Linear, steps: int, rows: tuple[int, ...]) -> LoopProduct:
        return cls([layer.weight], layer.bias, steps, rows)

    def __call__(self, t: int, *xs: Tensor, add: Tensor | None = None) -> Tensor:
        """The step-t output; `add` (broadcast over leading dimensions) is added in place."""
        y = F.linear(xs[0], self.weights[0], self.bias)
        for x, w in zip(xs[1:], self.weights[1:], strict=True):
            _addmm_(y, x, w)
        if self.inputs is not None:
            for kept, x in zip(self.inputs, xs, strict=True):
                kept.append(x.detach())
            y = y + self.zeros[t]  # routes dY_t to the weight gradients
        if add is not None:
            y.add_(add)
        return y


def init_lstm(cell: nn.LSTMCell) -> None:
    """Orthogonal recurrent weights per gate, zero biases but a forget-gate bias of 1."""
    h = cell.hidden_size
    with torch.no_grad():
        for gate in range(4):
            nn.init.orthogonal_(cell.weight_hh[gate * h : (gate + 1) * h])
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
        cell.bias_ih[h : 2 * h] = defaults.FORGET_BIAS_INIT  # PyTorch's gate order is i, f, g, o


def init_cle(model: nn.Module, init_range: float = defaults.CLE_INIT_RANGE) -> None:
    """The authors' initialisation (jych/cle): every weight matrix U(-init_range, init_range), the
    LSTM's recurrent weights orthogonal per gate, every bias zero (the forget gate's too) except the
    std heads', which keep their softplus^-1(~1) value (cle's `InitCell('const', mean=0.6)`)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LSTMCell):
                h = module.hidden_size
                nn.init.uniform_(module.weight_ih, -init_range, init_range)
                for gate in range(4):
                    nn.init.orthogonal_(module.weight_hh[gate * h : (gate + 1) * h])
                module.bias_ih.zero_()
                module.bias_hh.zero_()
            elif isinstance(module, nn.Linear):
                nn.init.uniform_(module.weight, -init_range, init_range)
                if module.bias is not None:
                    module.bias.zero_()
                    for s in getattr(module, "std_slices", ()):  # set by _init_head on the std heads
                        module.bias[s] = defaults.STD_BIAS_INIT


def weight_matrices(model: nn.Module) -> list[Tensor]:
    """The matrices the authors' max-norm constraint applies to (cle's parameters named W): every
    Linear weight and the LSTM's input weights, not its recurrent weights (cle's U) nor any bias."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.LSTMCell):
            out.append(module.weight_ih)
        elif isinstance(module, nn.Linear):
            out.append(module.weight)
    return out


@torch.no_grad()
def max_col_norm_(model: nn.Module, max_norm: float) -> None:
    """Rescale, in place, every unit's incoming weight vector whose L2 norm exceeds `max_norm` to that
    norm (cle's WeightNorm after each update; their matrices are (in, out), so their columns are the
    rows of PyTorch's (out, in) weights). Vectors within the bound are left exactly as they are."""
    for w in weight_matrices(model):
        norms = w.norm(dim=1, keepdim=True)
        w.mul_(torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-12), torch.ones_like(norms)))


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM cell after its matrix products: gates (..., 4H) in PyTorch's order i, f, g, o."""
    h_dim = c.shape[-1]
    i_f = torch.sigmoid(gates[..., : 2 * h_dim])
    g = torch.tanh(gates[..., 2 * h_dim : 3 * h_dim])
    o = torch.sigmoid(gates[..., 3 * h_dim :])
    c = i_f[..., h_dim:] * c + i_f[..., :h_dim] * g
    return o * torch.tanh(c), c
