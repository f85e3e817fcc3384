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
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import MLP, GaussianLatent

Layer = tuple[Tensor, Tensor]


class _MLP:
    """`networks.MLP.forward`: the first layer on one input (`F.linear`) or block by block (`F.linear` on the
    first block, `addmm_` for the others), ReLU in place, then Linear + ReLU per further layer."""

    def __init__(self, net: MLP):
        first = cast(nn.Linear, net.layers[0])
        self.weight, self.bias = first.weight, first.bias
        blocks = net.first_layer_blocks()
        self.first_block = blocks[0]
        self.more_blocks_t = tuple(w.t() for w in blocks[1:])
        later = (cast(nn.Linear, m) for m in itertools.islice(net.layers, 1, None))
        self.rest: tuple[Layer, ...] = tuple((m.weight, m.bias) for m in later)

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) == 1:
            x = F.linear(inputs[0], self.weight, self.bias)
        else:
            x = F.linear(inputs[0], self.first_block, self.bias)
            for inp, w_t in zip(inputs[1:], self.more_blocks_t, strict=True):
                x.view(-1, x.shape[-1]).addmm_(inp.reshape(-1, inp.shape[-1]), w_t)
        x = F.relu(x, inplace=True)
        for w, b in self.rest:
            x = F.relu(F.linear(x, w, b))
        return x


class _Latent:
    """`networks.GaussianLatent.forward`: MLP, the head's Linear, then (mu, softplus(a) + floor)."""

    def __init__(self, latent: GaussianLatent):
        self.net = _MLP(latent.net)
        self.weight, self.bias = latent.hidden_to_params.weight, latent.hidden_to_params.bias
        self.z_dim, self.std_floor = latent.z_dim, latent.std_floor

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        mu, a = F.linear(self.net(*inputs), self.weight, self.bias).split(self.z_dim, dim=-1)
        return mu, F.softplus(a) + self.std_floor


class Stepper:
    """One sampling step of a plain (not row-wise) `VRNN` or `conditional.TextVRNN`, split where the caller draws x_t:

    params, pz = stepper.emit(h, z_noise)      # p(z_t | h) -> z_t -> phi_z -> p(x_t | z_t, h); pz None for RNNs
    h, c = stepper.advance(x, pz, h, c)        # phi_x(x_t) -> LSTM
    """

    def __init__(self, model: Any):
        self.has_latent = model.phi_z is not None
        self.phi_x = _MLP(model.phi_x)
        self.phi_z = _MLP(model.phi_z) if self.has_latent else None
        self.prior = _Latent(model.prior) if model.prior is not None else None
        self.decoder = _MLP(model.decoder.net)
        self.head = model.decoder.head.forward  # the head's own arithmetic (one Linear, then elementwise)
        rnn = model.rnn
        self.lstm = (rnn.weight_ih, rnn.weight_hh, rnn.bias_ih, rnn.bias_hh)

    def emit(self, h: Tensor, z_noise: Tensor | None, *extra: Tensor) -> tuple[Any, Tensor | None]:
        """The output distribution's parameters for x_t (the head's tuple) and phi_z(z_t) (None without a latent);
        z_t = mu_p + std_p * z_noise (N(0, I) for VRNN-I: mu 0, std 1, as `Recurrence._prior` gives). `extra`: what
        every network also reads (a text model's window vector w_t)."""
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
        px = self.phi_x(x)
        parts = [px, *([] if pz is None else [pz]), *extra]
        rnn_in = torch.cat(parts, dim=-1) if len(parts) > 1 else px
        h2, c2 = torch.lstm_cell(rnn_in, (h, c), *self.lstm)
        return h2, c2
