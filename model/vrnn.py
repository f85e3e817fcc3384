"""The model: RNN, VRNN-I and VRNN with Gaussian or GMM outputs, for speech and handwriting.

Shapes: B sequences, T time steps, D = x_dim, Z = z_dim, H = h_dim, W = mlp_width. Internally the
recurrence runs time-major (T, B, ...); the public methods take and return batch-major tensors.
All log-likelihoods are in nats, per sequence unless the name says per frame.

Only z_t's path is truly recurrent (encoder -> z_t -> phi_z -> LSTM): `_posterior_pass` keeps
just that inside the Python loop and runs everything else (phi_x, the x-part of the encoder's first
layer and of the LSTM input projection, then prior, decoder, KL and reconstruction) as one batched
op over all time steps. `model.reference` has the naive loop it is tested and benchmarked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import defaults
from .config import ModelConfig
from .distributions import RowGenerators, gaussian_kl, gaussian_log_prob, randn, standard_normal_kl
from .fused import FusedSampler
from .fused import supports as fused_supports
from .networks import (
    MLP,
    BivariateOutput,
    Decoder,
    DiagonalGaussianOutput,
    GaussianLatent,
    LoopProduct,
    init_cle,
    init_lstm,
    lstm_pointwise,
)
from .stepper import LoneRow, Stepper, first_row, paired_pays
from .stepper import reads as stepper_reads

# Weight initialisations: "default" (PyTorch's Linear init, small output heads, orthogonal recurrent
# weights and a forget-gate bias of 1) and "cle" (the authors': `networks.init_cle`).
INIT_SCHEMES = ("default", "cle")

# What `VRNN.sample` emits and feeds back at each step:
#   "sample":         a draw from p(x_t | .), emitted and fed back;
#   "mean":           the decoder mean (mixture mean), emitted and fed back;
#   "component-mean": a draw is fed back, the mean of the mixture component it was drawn from is emitted
#                     (for one Gaussian: its mean; the pen bit is the drawn one). The authors' sampling
#                     script did this: the trajectory is the model's own, the output noise is left out.
SAMPLE_MODES = ("sample", "mean", "component-mean")


@dataclass
class VRNNOutput:
    """What `forward` returns. elbo, kl and nll are zero on padded steps."""

    loss: Tensor  # () mean negative ELBO per sequence (nats), what training minimises
    elbo: Tensor  # (B,) ELBO per sequence, Eq. 11; the exact log-likelihood for family "rnn"
    kl: Tensor  # (B, T) KL(q(z_t | .) || p(z_t | .)) per step; zeros for "rnn"
    nll: Tensor  # (B, T) -log p(x_t | z_<=t, x_<t) per step
    kl_dims: Tensor | None = None  # (B, T, Z) the KL per latent dimension (zero on padding); None for "rnn"
    state: tuple[Tensor, Tensor] | None = None  # the LSTM's final (h, c), each (B, H), after the last step


@dataclass
class LatentAnalysis:
    """The paper's Figure 2: how the approximate posterior moves while the model reads x."""

    kl: Tensor  # (B, T) KL per step, nats
    kl_per_dim: Tensor  # (B, T, Z) the same, per latent dimension
    delta_mu: Tensor  # (B, T) delta_t = sum_j (mu_z,t^j - mu_z,t-1^j)^2, 0 at t = 0
    mu_z: Tensor  # (B, T, Z) posterior means
    mask: Tensor  # (B, T) 1 on valid steps


@dataclass
class _Pass:
    """Everything one posterior pass over a batch produces, time-major."""

    h_prev: Tensor  # (T, B, H) h_{t-1} for every t
    z: Tensor | None  # (T, B, Z)
    mu_q: Tensor | None
    std_q: Tensor | None
    phi_z: Tensor | None  # (T, B, W)
    state: tuple[Tensor, Tensor]  # final (h_T, c_T)


class Recurrence(nn.Module):
    """What VRNN and `conditional.TextVRNN` share: phi_z, encoder, prior, decoder and LSTM over inputs widened by
    `extra` features (the text window's, for TextVRNN), built in this order, and the parameters' device and dtype."""

    config: ModelConfig

    def _build(self, cfg: ModelConfig, head: nn.Module, extra: int = 0) -> None:
        W, L, H, Z = cfg.mlp_width, cfg.mlp_layers, cfg.h_dim, cfg.z_dim
        more = [extra] if extra else []
        if cfg.has_latent:
            self.phi_z: MLP | None = MLP([Z], W, L)
            self.encoder: GaussianLatent | None = GaussianLatent([W, H, *more], W, L, Z, cfg.std_floor)
            # VRNN-I drops operation (a): its prior is a fixed N(0, I) with no network.
            self.prior = GaussianLatent([H, *more], W, L, Z, cfg.std_floor) if cfg.family == "vrnn" else None
            self.decoder = Decoder([W, H, *more], W, L, head)
            rnn_in = 2 * W + extra
        else:
            self.phi_z = self.encoder = self.prior = None
            self.decoder = Decoder([H, *more], W, L, head)
            rnn_in = W + extra
        self.rnn = nn.LSTMCell(rnn_in, H)
        init_lstm(self.rnn)

    @property
    def device(self) -> torch.device:
        return self.rnn.weight_hh.device

    @property
    def samples_paired(self) -> bool:
        """Whether sampling computes its products as `model.paired` does: where this machine's kernels, at this
        thread's thread count, give a batch of defaults.PAIRED_MIN_ROWS rows or more its paired bits in one product
        in every layer (`stepper.paired_pays`; probed once per layout)."""
        return paired_pays(self)

    def _dtype(self) -> torch.dtype:
        return self.rnn.weight_hh.dtype

    def _prior(self, h_prev: Tensor, *extra: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_t | h_{t-1}) parameters (Eq. 5; TextVRNN's also take the window); N(0, I) for VRNN-I."""
        if self.prior is None:
            shape = (*h_prev.shape[:-1], self.config.z_dim)
            return h_prev.new_zeros(shape), h_prev.new_ones(shape)
        return self.prior(h_prev, *extra)


class VRNN(Recurrence):
    """All six models of the paper's Table 1, chosen by `ModelConfig.family` and `.output`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        k = cfg.n_components if cfg.output == "gmm" else 1
        if cfg.modality == "speech":
            head: nn.Module = DiagonalGaussianOutput(cfg.mlp_width, cfg.x_dim, k, cfg.std_floor)
        else:
            head = BivariateOutput(cfg.mlp_width, k, cfg.std_floor)
        self.phi_x = MLP([cfg.x_dim], cfg.mlp_width, cfg.mlp_layers)
        self._build(cfg, head)

    # ------------------------------------------------------------------ helpers

    def _prepare(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Check shapes; return time-major x (T, B, D) with padding zeroed and mask (T, B)."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.config.x_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (batch, time, {self.config.x_dim}) tensor, got {shape}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps")
        x = x.to(device=self.device, dtype=self._dtype())
        if mask is None:
            m = torch.ones(x.shape[:2], device=x.device, dtype=torch.bool)
        else:
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f"mask must have shape {tuple(x.shape[:2])} (batch, time), got {tuple(mask.shape)}")
            m = mask.to(device=x.device).bool()
        # Padding may hold anything (NaN included): zero it so it cannot reach a gradient.
        x = torch.where(m.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x.transpose(0, 1), m.t()

    def _zero_state(self, batch: int) -> tuple[Tensor, Tensor]:
        z = torch.zeros(batch, self.config.h_dim, device=self.device, dtype=self._dtype())
        return z, z

    def _log_px(self, p: _Pass, x_tm: Tensor) -> Tensor:
        """log p(x_t | z_<=t, x_<t) -> (T, B). Without gradients, decoded a chunk of `_chunk_rows()` rows at
        a time (the output head's parameters and temporaries are the largest tensors of a pass)."""
        T, B = x_tm.shape[:2]
        steps = T if torch.is_grad_enabled() else max(1, self._chunk_rows() // B)
        parts = []
        for i in range(0, T, steps):
            h = p.h_prev[i : i + steps].flatten(0, 1)  # rows flattened to (steps * B)
            params = self.decoder(h) if p.phi_z is None else self.decoder(p.phi_z[i : i + steps].flatten(0, 1), h)
            parts.append(self.decoder.head.log_prob(x_tm[i : i + steps].flatten(0, 1), params).view(-1, B))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _chunk_rows(self) -> int:
        """How many (time step x sequence) rows one no-grad chunk may hold: defaults.NO_GRAD_CHUNK_BYTES over an
        estimate of the floats one row needs at once (posterior pass, prior, the output head's parameters and
        its per-component temporaries, which dominate: 6 x components x dims)."""
        cfg = self.config
        H, Z, W, D = cfg.h_dim, cfg.z_dim, cfg.mlp_width, cfg.x_dim
        k = cfg.n_components if cfg.output == "gmm" else 1
        head_params = self.decoder.head.hidden_to_params
        assert isinstance(head_params, nn.Linear)
        head = head_params.out_features
        mixture = 6 * k * (D if cfg.modality == "speech" else 5)
        per_row = 2 * (H + 3 * Z + W) + W * (cfg.mlp_layers + 1) + 4 * Z + 2 * D + head + mixture
        size = torch.finfo(self._dtype()).bits // 8
        return max(1, defaults.NO_GRAD_CHUNK_BYTES // (size * per_row))

    # ------------------------------------------------------------------ the recurrence

    def _posterior_pass(
        self,
        x_tm: Tensor,
        noise: Callable[[int, tuple[int, int]], Tensor | None],
        k: int = 1,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> _Pass:
        """Run the RNN over x (T, B, D) for k copies of each sequence at once (rows k * B, copy-major),
        drawing z_t ~ q(z_t | x_<=t, z_<t) as mu + std * noise(t, (k, B)) (noise None: z_t = mu).

        Only z_t's path stays inside the loop; everything that depends on x alone is computed once
        for all steps, and once for all k copies."""
        T, B = x_tm.shape[:2]
        W, H = self.config.mlp_width, self.config.h_dim
        rows = (k, B)
        h, c = state if state is not None else self._zero_state(k * B)
        h, c = h.view(k, B, H), c.view(k, B, H)
        cell = self.rnn
        px = self.phi_x(x_tm)  # (T, B, W)
        bias = cell.bias_ih + cell.bias_hh
        hs = []
        if self.encoder is None:  # RNN: the loop is the LSTM alone
            gates = LoopProduct([cell.weight_hh], None, T, rows)
            # unbind, not [t]: indexing's backward would write a whole (T, B, 4H) tensor per step.
            for t, pre_t in enumerate(F.linear(px, cell.weight_ih, bias).unbind(0)):  # (B, 4H)
                hs.append(h)
                h, c = lstm_pointwise(gates(t, h, add=pre_t), c)
            return _Pass(torch.stack(hs).flatten(1, 2), None, None, None, None, (h.flatten(0, 1), c.flatten(0, 1)))

        assert self.phi_z is not None
        enc = self.encoder
        enc_wx, enc_wh = enc.net.first_layer_blocks()
        pre_enc = F.linear(px, enc_wx, enc.net.layers[0].bias).unbind(0)  # T x (B, W)
        gate_wx, gate_wz = cell.weight_ih.split([W, W], dim=1)
        pre_gates = F.linear(px, gate_wx, bias).unbind(0)  # T x (B, 4H)
        enc_first = LoopProduct([enc_wh], None, T, rows)
        enc_rest = [LoopProduct.of(layer, T, rows) for layer in enc.net.layers[1:]]
        enc_head = LoopProduct.of(enc.hidden_to_params, T, rows)
        phi_z = [LoopProduct.of(layer, T, rows) for layer in self.phi_z.layers]
        gates = LoopProduct([cell.weight_hh, gate_wz], None, T, rows)
        zs, mus, stds, pzs = [], [], [], []
        for t in range(T):
            hs.append(h)
            e = F.relu(enc_first(t, h, add=pre_enc[t]), inplace=True)  # pre_enc broadcasts over the k copies
            for layer in enc_rest:
                e = F.relu(layer(t, e), inplace=True)
            mu, std = enc.split(enc_head(t, e))  # Eq. 9
            eps = noise(t, rows)
            z = mu if eps is None else mu + std * eps
            pz = z
            for layer in phi_z:
                pz = F.relu(layer(t, pz), inplace=True)
            h, c = lstm_pointwise(gates(t, h, pz, add=pre_gates[t]), c)  # Eq. 7
            zs.append(z)
            mus.append(mu)
            stds.append(std)
            pzs.append(pz)

        def st(xs: list[Tensor]) -> Tensor:
            return torch.stack(xs).flatten(1, 2)  # (T, k * B, .)

        return _Pass(st(hs), st(zs), st(mus), st(stds), st(pzs), (h.flatten(0, 1), c.flatten(0, 1)))

    def _noise(self, generator: torch.Generator | None) -> Callable[[int, tuple[int, int]], Tensor]:
        """Standard normal noise for z, drawn step by step: a sequence's first steps get the same
        draws whatever its padded length, so padding changes nothing even for a sampled ELBO."""
        Z, dev, dt = self.config.z_dim, self.device, self._dtype()
        # rows = (k copies, B sequences): with RowGenerators (one per sequence, for batched sampling), each
        # sequence's noise comes from its own generator.
        return lambda t, rows: randn((*rows, Z), generator, device=dev, dtype=dt, row_dim=1)

    # ------------------------------------------------------------------ public API

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> VRNNOutput:
        """ELBO (Eq. 11) with one reparameterised sample of z per step; exact for family "rnn".

        x (B, T, D), mask (B, T) with 1 on valid steps (a prefix of each row). `state` (h, c), each
        (B, H), starts the LSTM where an earlier chunk of the same streams left it (truncated backprop
        through time: pass the previous output's `state`, detached); the output's `state` is the LSTM's
        after the last step (meaningful for rows without padding)."""
        x_tm, m = self._prepare(x, mask)
        if state is not None:
            h_dim = self.config.h_dim
            if len(state) != 2 or any(tuple(s.shape) != (x_tm.shape[1], h_dim) for s in state):
                raise ValueError(f"state must be (h, c), each of shape ({x_tm.shape[1]}, {h_dim})")
            state = (state[0].to(x_tm), state[1].to(x_tm))
        p = self._posterior_pass(x_tm, self._noise(generator), state=state)
        zero = torch.zeros((), dtype=x_tm.dtype, device=x_tm.device)
        nll = torch.where(m, -self._log_px(p, x_tm), zero)  # (T, B)
        if p.mu_q is None:
            kl = torch.zeros_like(nll)
        else:
            assert p.std_q is not None
            if self.prior is None:
                kl_dims = standard_normal_kl(p.mu_q, p.std_q)
            else:
                mu_p, std_p = self._prior(p.h_prev)
                kl_dims = gaussian_kl(p.mu_q, p.std_q, mu_p, std_p)
            kl_dims = torch.where(m.unsqueeze(-1), kl_dims, zero)
            kl = kl_dims.sum(-1)
        elbo = -(nll + kl).sum(0)  # (B,)
        dims = None if p.mu_q is None else kl_dims.transpose(0, 1)
        return VRNNOutput(loss=-elbo.mean(), elbo=elbo, kl=kl.t(), nll=nll.t(), kl_dims=dims, state=p.state)

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        num_samples: int = defaults.NUM_IS_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """log p(x) per sequence (B,) in nats: exact for "rnn", else the importance-sampled estimate
        log (1/K) sum_k p(x, z^k) / q(z^k | x), z^k ~ q, with the K samples run as one batch."""
        if not self.config.has_latent:
            _check_samples(num_samples)
            return self.forward(x, mask).elbo
        log_w = self.log_weights(x, mask, num_samples, generator)
        return torch.logsumexp(log_w, dim=0) - math.log(num_samples)

    @torch.no_grad()
    def log_weights(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        num_samples: int = defaults.NUM_IS_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Importance log-weights log p(x, z^k) - log q(z^k | x), z^k ~ q -> (K, B) nats (VRNNs only).

        Their log-mean-exp is the IS estimate; their mean is a K-sample ELBO estimate that, on the same
        draws, can never exceed it (Jensen). Sequences are split into chunks of at most
        MAX_IS_BATCH rows; the K samples of one sequence always run together. Time is split into chunks of
        `_chunk_rows()` // (K x sequences) steps, each decoded and summed before the next one runs, so memory
        stays bounded whatever T and K; the noise is drawn in the same order, so the chunks change nothing
        but the order of a float sum."""
        _check_samples(num_samples)
        if not self.config.has_latent:
            raise ValueError(f"{self.config.name} has no latent variables: its likelihood is exact")
        x_tm, m = self._prepare(x, mask)
        B = x_tm.shape[1]
        chunk = max(1, defaults.MAX_IS_BATCH // num_samples)

        def streams(i: int) -> Any:  # one generator per sequence: the chunk's own
            return (
                RowGenerators(generator.generators[i : i + chunk])
                if isinstance(generator, RowGenerators)
                else generator
            )

        out = [
            self._log_weights(x_tm[:, i : i + chunk], m[:, i : i + chunk], num_samples, streams(i))
            for i in range(0, B, chunk)
        ]
        return torch.cat(out, dim=1)

    def _log_weights(self, x_tm: Tensor, m: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        T, B = x_tm.shape[:2]
        noise = self._noise(generator)  # one draw of (K, B, Z) per step, whatever the chunks: the same draws
        steps = max(1, self._chunk_rows() // (k * B))
        total = x_tm.new_zeros(k * B)
        state = None
        for i in range(0, T, steps):
            xs, ms = x_tm[i : i + steps], m[i : i + steps]
            p = self._posterior_pass(xs, noise, k=k, state=state)  # row j * B + b: sample j of sequence b
            state = p.state
            assert p.z is not None and p.mu_q is not None and p.std_q is not None
            mu_p, std_p = self._prior(p.h_prev)
            log_pz = gaussian_log_prob(p.z, mu_p, std_p).sum(-1)
            log_qz = gaussian_log_prob(p.z, p.mu_q, p.std_q).sum(-1)
            log_w = self._log_px(p, xs.repeat(1, k, 1)) + log_pz - log_qz  # (steps, K * B): log p(x, z) - log q(z | x)
            total += torch.where(ms.repeat(1, k), log_w, torch.zeros((), dtype=log_w.dtype, device=log_w.device)).sum(0)
            del p, mu_p, std_p, log_pz, log_qz, log_w
        return total.view(k, B)

    @torch.inference_mode()  # no autograd bookkeeping at all: 700 handwriting steps 355 -> 304 ms, the same values
    def sample(
        self,
        num_samples: int = 4,
        steps: int = 80,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        prime: Tensor | None = None,
        bias: float = 0.0,
        mean: bool | str = False,
        reference: bool = False,
        paired: bool | None = None,
    ) -> Tensor:
        """Generate (num_samples, steps, D) from the model, in the model's (normalised) space.

        z_t is drawn from the prior; x_t from p(x_t | .) with stds scaled by `temperature` and
        Graves' `bias` (mixture logits * (1 + bias) / temperature, stds * exp(-bias)). `mean` picks
        what is emitted and fed back (`SAMPLE_MODES`): False or "sample" a draw; True or "mean" the
        decoder mean; "component-mean" feeds back the draw and emits the mean of the component it came
        from (what the authors' sampling script saved). With the same generator, "sample" and
        "component-mean" follow the same trajectory.
        `prime` (T0, D) or (num_samples, T0, D) is read first through the posterior; the result
        holds only the continuation. A fixed `generator` reproduces the samples exactly. The steps run through
        `model.stepper` (the same bits as the modules give); `reference` runs them through the modules instead.
        `paired` (default: `samples_paired`) computes the steps' products as `model.paired` does: every row then
        gets the bits it gets alone (with `distributions.RowGenerators`, row r is the solo sample of generator r).
        Where `model.native`'s library runs, a paired sample is the whole step in one native call (`model.fused`,
        the same property; its random numbers are drawn 64 steps at a time, so a seed gives other bytes than the
        stepper's)."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        mode = sampling_mode(steps, temperature, bias, mean)
        paired = self.samples_paired if paired is None else paired
        N, cfg = num_samples, self.config
        state = self._zero_state(N)
        if prime is not None:
            if prime.dim() == 2:
                prime = prime.unsqueeze(0)
            if prime.dim() != 3 or prime.shape[0] not in (1, N):
                raise ValueError(f"prime must be (T0, {cfg.x_dim}) or ({N}, T0, {cfg.x_dim}), got {tuple(prime.shape)}")
            x_tm, _ = self._prepare(prime.expand(N, -1, -1), None)
            if paired and not reference and N > 1 and isinstance(generator, RowGenerators) and len(generator) == N:
                # each row reads its prime alone, with its own generator, as its solo sample (and the engine) does
                states = [
                    self._posterior_pass(x_tm[:, r : r + 1], self._noise(g)).state
                    for r, g in enumerate(generator.generators)
                ]
                state = (torch.cat([s[0] for s in states]), torch.cat([s[1] for s in states]))
            else:
                state = self._posterior_pass(x_tm, self._noise(generator)).state
        h, c = state
        if not reference and paired and fused_supports(self):  # the whole step in one native call (model.fused)
            own = torch.contiguous_format  # (h and c are updated in place: copies, one tensor each)
            return FusedSampler(self).sample(
                h.clone(memory_format=own), c.clone(memory_format=own), steps, generator, mode, temperature, bias
            )
        head = self.decoder.head
        noise = self._noise(generator)
        out = []
        if not reference and stepper_reads(self):
            # the same operations without the module machinery (model.stepper)
            stepper = Stepper(self, paired=paired)
            if N == 1 and stepper.pads_lone_row(h):  # the state keeps a second row: every product runs on a pair as is
                return self._sample_lone(stepper, h, c, steps, noise, generator, mode, temperature, bias)
            for t in range(steps):
                params, pz_t = stepper.emit(h, None if self.phi_z is None else noise(t, (1, N))[0])
                x, emitted = draw(head, params, mode, generator, temperature, bias)
                out.append(emitted)
                h, c = stepper.advance(x, pz_t, h, c)
            return torch.stack(out, dim=1)
        for t in range(steps):  # the module loop the stepper is tested against
            if self.phi_z is None:
                params = self.decoder(h)
            else:
                mu_p, std_p = self._prior(h)
                pz = self.phi_z(mu_p + std_p * noise(t, (1, N))[0])
                params = self.decoder(pz, h)
            x, emitted = draw(head, params, mode, generator, temperature, bias)
            out.append(emitted)
            px = self.phi_x(x)
            h, c = self.rnn(px if self.phi_z is None else torch.cat([px, pz], dim=-1), (h, c))
        return torch.stack(out, dim=1)

    def _sample_lone(
        self, stepper: Stepper, h: Tensor, c: Tensor, steps: int, noise: Any, generator: Any, *draw_args: Any
    ) -> Tensor:
        """`sample`'s loop for one paired row (`stepper.LoneRow`: a zero row beside it), the draw on its own
        parameters."""
        lone = LoneRow(self)
        h, c = lone.state(h, c)
        head, out = self.decoder.head, []
        for t in range(steps):
            params, pz_t = stepper.emit(h, None if self.phi_z is None else lone.noise(noise(t, (1, 1))[0]))
            x, emitted = draw(head, first_row(params), draw_args[0], generator, *draw_args[1:])
            out.append(emitted)
            h, c = stepper.advance(lone.input(x), pz_t, h, c)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def analyze(
        self, x: Tensor, mask: Tensor | None = None, use_mean: bool = True, generator: torch.Generator | None = None
    ) -> LatentAnalysis:
        """Read x and report the latent dynamics of the paper's Figure 2. With use_mean (default)
        z_t is the posterior mean, so the analysis is deterministic; else z_t ~ q."""
        if not self.config.has_latent:
            raise ValueError(f"{self.config.name} has no latent variables to analyse; use a VRNN model")
        x_tm, m = self._prepare(x, mask)
        p = self._posterior_pass(x_tm, (lambda t, b: None) if use_mean else self._noise(generator))
        assert p.mu_q is not None and p.std_q is not None
        mu_p, std_p = self._prior(p.h_prev)
        mf = m.unsqueeze(-1).to(p.mu_q.dtype)
        kl_dims = gaussian_kl(p.mu_q, p.std_q, mu_p, std_p) * mf  # (T, B, Z)
        mu = p.mu_q * mf
        delta = torch.zeros(m.shape, dtype=mu.dtype, device=mu.device)
        delta[1:] = ((mu[1:] - mu[:-1]) ** 2).sum(-1) * m[1:]
        return LatentAnalysis(
            kl=kl_dims.sum(-1).t(),
            kl_per_dim=kl_dims.transpose(0, 1),
            delta_mu=delta.t(),
            mu_z=mu.transpose(0, 1),
            mask=m.t().to(mu.dtype),
        )


def sampling_mode(steps: int | None, temperature: float, bias: float, mean: bool | str) -> str:
    """Check the sampling controls every sampler takes (`steps` None: the caller checks its own) and return the
    mode `mean` names (`SAMPLE_MODES`); a ValueError says what to change."""
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not (bias >= 0 and math.isfinite(bias)):
        raise ValueError(f"bias must be >= 0, got {bias!r}")
    mode = {False: "sample", True: "mean"}.get(mean, mean) if isinstance(mean, bool) else mean
    if mode not in SAMPLE_MODES:
        raise ValueError(f"mean must be True, False or one of {SAMPLE_MODES}, got {mean!r}")
    return mode


def draw(head: Any, params: Any, mode: str, generator: Any, temperature: float, bias: float) -> tuple[Tensor, Tensor]:
    """One step of the sampling `mode` (`SAMPLE_MODES`): (the x fed back, the x written)."""
    if mode == "mean":
        x = head.mean(params)
        return x, x
    if mode == "component-mean":
        return head.sample(params, generator, temperature, bias, return_mean=True)
    x = head.sample(params, generator, temperature, bias)
    return x, x


def _check_samples(num_samples: int) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


def build_model(config: ModelConfig, init: str = "default") -> VRNN:
    """A freshly initialised model for `config`; `init` is one of `INIT_SCHEMES`."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model takes a ModelConfig, got {type(config).__name__}")
    if init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
    model = VRNN(config)
    if init == "cle":
        init_cle(model)
    return model
