"""Text-conditioned handwriting: the paper's VRNN (and, as baseline, the RNN) whose recurrence also reads a soft
window over the characters of the line (Graves 2013, Section 5; Aksan et al. 2018 put a VRNN under it).

At step t, from h_{t-1} and the window's previous centres, Graves' window (model.attention) gives w_t, a soft
one-hot vector of the characters being written. w_t joins every network's input:

    prior      p(z_t | h_{t-1}, w_t)                 (VRNN; N(0, I) for VRNN-I)
    encoder    q(z_t | x_t, h_{t-1}, w_t)
    decoder    p(x_t | z_t, h_{t-1}, w_t)            (p(x_t | h_{t-1}, w_t) for the RNN)
    recurrence h_t = LSTM([phi_x(x_t), phi_z(z_t), w_t], h_{t-1})

so every likelihood (ELBO, IS estimate, the RNN's exact one) is conditional on the text. The loop runs one step at
a time in Python (the window depends on h_{t-1}, so nothing of it hoists like `vrnn.VRNN`'s x-only work).

Sampling writes until Graves' stopping rule fires (the window has passed the last character) or `max_steps`;
style priming reads a line and its text through the posterior first, then writes the new text in that style:
the window runs over "prime text" + " " + "new text", so it is already past the primed characters when the new
ones begin (Graves' priming). The alphabet is in the checkpoint's config; characters outside it are refused with
an error naming them (model.text).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import defaults
from .attention import GravesWindow, Window, positions, window
from .checkpoint import CheckpointError, _paths, load_weights, read_metadata
from .config import ModelConfig
from .distributions import gaussian_kl, gaussian_log_prob, standard_normal_kl
from .fused import FusedTextSampler
from .fused import supports_text as fused_supports_text
from .networks import MLP, BivariateOutput, LoopProduct, lstm_pointwise
from .stepper import Stepper
from .text import encode, one_hot_batch
from .vrnn import Recurrence, VRNNOutput, draw, sampling_mode

# The step cap of a line when none is given: pen points per character, well above the ~25-35 of handwriting.
MAX_STEPS_PER_CHAR = 40


@dataclass
class TextSample:
    offsets: list[Tensor]  # per line: (T_i, 3) in the model's normalised space, as written
    finished: list[bool]  # the stopping rule fired (False: max_steps cut the line)
    phi: list[Tensor]  # per line: (T_i, U_i) the window's weight on each character at each step


@dataclass
class TextAnalysis:
    kl: Tensor  # (B, T) KL per step (zeros for the RNN)
    mu_z: Tensor | None  # (B, T, Z) posterior means
    phi: Tensor  # (B, T, U) attention weights on the characters
    mask: Tensor  # (B, T)
    kl_per_dim: Tensor | None = None  # (B, T, Z) the KL per step and latent dimension (None for the RNN)
    delta_mu: Tensor | None = None  # (B, T) sum_j (mu_z,t^j - mu_z,t-1^j)^2, 0 at t = 0 (None for the RNN)


class TextVRNN(Recurrence):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.takes_text:
            raise ValueError("TextVRNN needs a config with an alphabet (ModelConfig.alphabet)")
        self.config = cfg = config
        k = cfg.n_components if cfg.output == "gmm" else 1
        self.window = GravesWindow(cfg.h_dim, cfg.window_components)
        self.phi_x = MLP([cfg.x_dim], cfg.mlp_width, cfg.mlp_layers)
        self._build(cfg, BivariateOutput(cfg.mlp_width, k, cfg.std_floor), extra=len(cfg.alphabet))

    # ------------------------------------------------------------------ helpers

    def encode_texts(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Lines of text -> one-hot characters (B, U, A) and their mask (B, U); unknown characters: an error
        naming them (model.text.UnsupportedCharactersError, a ValueError)."""
        chars, mask = one_hot_batch([encode(t, self.config.alphabet) for t in texts], len(self.config.alphabet))
        return chars.to(self.device, self._dtype()), mask.to(self.device)

    def _prepare(self, x: Tensor, mask: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.config.x_dim or x.shape[1] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (batch, time, {self.config.x_dim}) tensor with time steps, got {shape}")
        if x.shape[0] != batch:
            raise ValueError(f"{x.shape[0]} sequences but {batch} texts: give one text per sequence")
        x = x.to(device=self.device, dtype=self._dtype())
        m = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device).bool()
        if tuple(m.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(m.shape)}")
        x = torch.where(m.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x, m

    def _start(self, rows: int) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.zeros(rows, self.config.h_dim, device=self.device, dtype=self._dtype())
        return h, h, self.window.initial_kappa(rows, h)

    def _step(
        self,
        x_t: Tensor,
        state: tuple[Tensor, Tensor, Tensor],
        chars: Tensor,
        char_mask: Tensor,
        eps: Tensor | None,
    ) -> tuple[dict[str, Tensor | None], tuple[Tensor, Tensor, Tensor], Window]:
        """One step of the posterior pass: log p(x_t | .), the KL terms, the new state and the window."""
        h, c, kappa = state
        win = self.window(h, kappa, chars, char_mask)
        w = win.w
        px = self.phi_x(x_t)
        out: dict[str, Tensor | None] = {"z": None, "mu_q": None, "std_q": None, "mu_p": None, "std_p": None}
        if self.encoder is None:
            params = self.decoder(h, w)
            rnn_in = torch.cat([px, w], dim=-1)
        else:
            assert self.phi_z is not None
            mu_q, std_q = self.encoder(px, h, w)
            z = mu_q if eps is None else mu_q + std_q * eps
            mu_p, std_p = self._prior(h, w)
            pz = self.phi_z(z)
            params = self.decoder(pz, h, w)
            rnn_in = torch.cat([px, pz, w], dim=-1)
            out.update(z=z, mu_q=mu_q, std_q=std_q, mu_p=mu_p, std_p=std_p)
        out["log_px"] = self.decoder.head.log_prob(x_t, params)
        h, c = self.rnn(rnn_in, (h, c))
        return out, (h, c, win.kappa), win

    def _pass(self, x: Tensor, chars: Tensor, char_mask: Tensor, generator: torch.Generator | None, sample: bool):
        """The posterior pass over x (B, T, 3) with only z's path in the loop (window, encoder, phi_z, LSTM);
        phi_x and the x-parts of the encoder's first layer and of the LSTM's input product before it, prior,
        decoder and log p(x_t | .) after it, over all T x B rows at once (as `vrnn.VRNN._posterior_pass`). The
        loop's products are `networks.LoopProduct`s: each weight's gradient is one product over all steps after
        the loop instead of T small ones. Returns time-major stacks and log_px (T, B). `_step` is the same
        computation one step at a time (the sampler uses it; the tests compare the two, values and gradients)."""
        B, T = x.shape[:2]
        W, A = self.config.mlp_width, len(self.config.alphabet)
        loop_rows = (B,)
        h, c, kappa = self._start(B)
        x_tm = x.transpose(0, 1)
        px_all = self.phi_x(x_tm)  # (T, B, W)
        cell = self.rnn
        bias = cell.bias_ih + cell.bias_hh
        win_params = LoopProduct.of(self.window.params, T, loop_rows)
        enc = self.encoder
        latent = enc is not None
        gate_w = cell.weight_ih.split([W, W, A] if latent else [W, A], dim=1)  # [phi_x | phi_z | w] or [phi_x | w]
        pre_gates = F.linear(px_all, gate_w[0], bias).unbind(0)  # T x (B, 4H)
        gates = LoopProduct([cell.weight_hh, *gate_w[1:]], None, T, loop_rows)
        if latent:
            net = self.phi_z
            assert enc is not None and net is not None
            enc_wx, enc_wh, enc_ww = enc.net.first_layer_blocks()  # [phi_x | h | w]
            pre_enc = F.linear(px_all, enc_wx, enc.net.layers[0].bias).unbind(0)
            enc_first = LoopProduct([enc_wh, enc_ww], None, T, loop_rows)
            enc_rest = [LoopProduct.of(layer, T, loop_rows) for layer in itertools.islice(enc.net.layers, 1, None)]
            enc_head = LoopProduct.of(enc.hidden_to_params, T, loop_rows)
            phi_z = [LoopProduct.of(layer, T, loop_rows) for layer in net.layers]
        hs, ws, phis, zs, mus, stds, pzs = [], [], [], [], [], [], []
        for t in range(T):
            a_hat, b_hat, k_hat = win_params(t, h).chunk(3, dim=-1)
            kappa = kappa + torch.exp(k_hat)
            win = window(a_hat, b_hat, kappa, chars, char_mask)
            hs.append(h)
            ws.append(win.w)
            phis.append(win.phi)
            if not latent:
                g = gates(t, h, win.w, add=pre_gates[t])
            else:
                e = F.relu(enc_first(t, h, win.w, add=pre_enc[t]), inplace=True)
                for layer in enc_rest:
                    e = F.relu(layer(t, e), inplace=True)
                assert enc is not None
                mu_q, std_q = enc.split(enc_head(t, e))
                eps = self._noise(generator, B) if sample else None
                z = mu_q if eps is None else mu_q + std_q * eps
                pz = z
                for layer in phi_z:
                    pz = F.relu(layer(t, pz), inplace=True)
                zs.append(z)
                mus.append(mu_q)
                stds.append(std_q)
                pzs.append(pz)
                g = gates(t, h, pz, win.w, add=pre_gates[t])
            h, c = lstm_pointwise(g, c)
        h_all, w_all = torch.stack(hs), torch.stack(ws)  # (T, B, .)
        rows = T * B
        flat_h, flat_w = h_all.reshape(rows, -1), w_all.reshape(rows, -1)
        out: dict[str, Tensor | None] = {"phi": torch.stack(phis), "z": None, "mu_q": None, "std_q": None}
        if self.encoder is None:
            params = self.decoder(flat_h, flat_w)
        else:
            z_all, pz_all = torch.stack(zs), torch.stack(pzs)
            params = self.decoder(pz_all.reshape(rows, -1), flat_h, flat_w)
            mu_p, std_p = self._prior(flat_h, flat_w)
            out.update(
                z=z_all,
                mu_q=torch.stack(mus),
                std_q=torch.stack(stds),
                mu_p=mu_p.view(T, B, -1),
                std_p=std_p.view(T, B, -1),
            )
        out["log_px"] = self.decoder.head.log_prob(x_tm.reshape(rows, -1), params).view(T, B)
        return out

    # ------------------------------------------------------------------ likelihoods

    def forward(
        self,
        x: Tensor,
        texts: list[str],
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> VRNNOutput:
        """The ELBO of x (B, T, 3) given its texts (exact log-likelihood for the RNN), one z draw per step."""
        chars, char_mask = self.encode_texts(texts)
        x, m = self._prepare(x, mask, len(texts))
        out = self._pass(x, chars, char_mask, generator, sample=True)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        assert out["log_px"] is not None
        nll = torch.where(m.t(), -out["log_px"], zero).t()  # (B, T)
        kl = torch.zeros_like(nll) if out["mu_q"] is None else torch.where(m.t(), self._kl(out).sum(-1), zero).t()
        elbo = -(nll + kl).sum(1)
        return VRNNOutput(loss=-elbo.mean(), elbo=elbo, kl=kl, nll=nll)

    def _kl(self, out: dict[str, Tensor | None]) -> Tensor:
        mu_q, std_q, mu_p, std_p = out["mu_q"], out["std_q"], out["mu_p"], out["std_p"]
        assert mu_q is not None and std_q is not None and mu_p is not None and std_p is not None
        return standard_normal_kl(mu_q, std_q) if self.prior is None else gaussian_kl(mu_q, std_q, mu_p, std_p)

    def _noise(self, generator: torch.Generator | None, rows: int) -> Tensor | None:
        if not self.config.has_latent:
            return None
        return torch.randn(rows, self.config.z_dim, generator=generator, device=self.device, dtype=self._dtype())

    @torch.no_grad()
    def log_weights(
        self,
        x: Tensor,
        texts: list[str],
        mask: Tensor | None = None,
        num_samples: int = defaults.NUM_IS_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Importance log-weights log p(x, z^k | text) - log q(z^k | x, text) -> (K, B) (VRNNs only)."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if not self.config.has_latent:
            raise ValueError(f"{self.config.name} has no latent variables: its likelihood is exact")
        chars, char_mask = self.encode_texts(texts)
        x, m = self._prepare(x, mask, len(texts))
        B, K = x.shape[0], num_samples
        chars, char_mask = chars.repeat(K, 1, 1), char_mask.repeat(K, 1)  # row j * B + b: sample j of line b
        xk, mk = x.repeat(K, 1, 1), m.repeat(K, 1)
        out = self._pass(xk, chars, char_mask, generator, sample=True)
        z, mu_q, std_q, mu_p, std_p = (out[k] for k in ("z", "mu_q", "std_q", "mu_p", "std_p"))
        assert z is not None and mu_q is not None and std_q is not None and mu_p is not None and std_p is not None
        assert out["log_px"] is not None
        log_w = out["log_px"] + (gaussian_log_prob(z, mu_p, std_p) - gaussian_log_prob(z, mu_q, std_q)).sum(-1)
        return torch.where(mk.t(), log_w, torch.zeros_like(log_w)).sum(0).view(K, B)

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        texts: list[str],
        mask: Tensor | None = None,
        num_samples: int = defaults.NUM_IS_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """log p(x | text) (B,): exact for the RNN, else the K-sample importance-sampled estimate."""
        if not self.config.has_latent:
            return self.forward(x, texts, mask).elbo
        log_w = self.log_weights(x, texts, mask, num_samples, generator)
        return torch.logsumexp(log_w, 0) - math.log(num_samples)

    @torch.no_grad()
    def analyze(self, x: Tensor, texts: list[str], mask: Tensor | None = None) -> TextAnalysis:
        """Posterior means of z (no sampling), the KL per step (and per latent dimension), the paper's delta_t
        (as `VRNN.analyze`) and the attention weights per step."""
        chars, char_mask = self.encode_texts(texts)
        x, m = self._prepare(x, mask, len(texts))
        B, T = x.shape[:2]
        out = self._pass(x, chars, char_mask, None, sample=False)
        mf = m.to(x.dtype)
        phi = out["phi"]
        assert phi is not None
        kl_dims = delta = None
        if out["mu_q"] is None:
            kl, mu = torch.zeros(B, T, dtype=x.dtype, device=x.device), None
        else:
            kl_tm = self._kl(out)  # (T, B, Z)
            kl, mu = kl_tm.sum(-1).t() * mf, out["mu_q"].transpose(0, 1) * mf.unsqueeze(-1)
            kl_dims = kl_tm.transpose(0, 1) * mf.unsqueeze(-1)
            delta = torch.zeros_like(kl)
            delta[:, 1:] = ((mu[:, 1:] - mu[:, :-1]) ** 2).sum(-1) * mf[:, 1:]
        return TextAnalysis(
            kl=kl, mu_z=mu, phi=phi.transpose(0, 1) * mf.unsqueeze(-1), mask=m, kl_per_dim=kl_dims, delta_mu=delta
        )

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        texts: list[str],
        max_steps: int | None = None,
        temperature: float = 1.0,
        bias: float = 0.0,
        generator: torch.Generator | None = None,
        mean: bool | str = False,
        prime: tuple[Tensor, str] | None = None,
        steps_per_char: float = MAX_STEPS_PER_CHAR,
        reference: bool = False,
        fused: bool | None = None,
    ) -> TextSample:
        """Write each text (one line each) until the stopping rule fires, or `max_steps` (default
        `steps_per_char` x characters). `prime` = (offsets (T0, 3) in normalised space, its text): read first
        through the posterior; each line then continues in its style. Modes and bias as `VRNN.sample`.

        Where `model.native`'s library runs, the steps are one native call per 64 steps (`model.fused`'s
        `FusedTextSampler`: every row the same alone or in any batch, as `model.engine.TextEngine` batches requests;
        `fused=None` picks it there); else (`fused=False`) they run through `model.stepper` (the modules' bits), and
        with `reference` through the modules themselves. A seed's lines differ between the two (other products,
        other uses of the random stream); both are exact samples of the model."""
        mode = sampling_mode(None, temperature, bias, mean)
        if fused is None:
            fused = not reference and fused_supports_text(self)
        sampler = FusedTextSampler(self) if fused else None
        lines = self.begin_lines(texts, max_steps, generator, prime, steps_per_char, sampler=sampler)
        if sampler is not None:
            xs, phis, ended, done = sampler.lines(
                lines.state, lines.codes, lines.cap, generator, mode, temperature, bias
            )
            return self.finish_lines(lines, xs, phis, ended, done)
        B, cap, state = len(texts), lines.cap, lines.state
        chars, char_mask = lines.chars, lines.char_mask
        head = self.decoder.head
        outs: list[Tensor] = []
        phis_t: list[Tensor] = []
        done_t = torch.zeros(B, dtype=torch.bool, device=self.device)
        ended_at = torch.full((B,), cap, dtype=torch.long)
        lean = None if reference else Stepper(self)  # the modules' operations off the weights (model.stepper)
        win_w, win_b = self.window.params.weight, self.window.params.bias
        pos = positions(chars, char_mask, state[0])
        for t in range(cap):
            h, c, kappa = state
            if lean is None:
                win = self.window(h, kappa, chars, char_mask)
                if self.phi_z is None:
                    params = self.decoder(h, win.w)
                    pz = None
                else:
                    mu_p, std_p = self._prior(h, win.w)
                    noise = self._noise(generator, B)
                    assert noise is not None
                    pz = self.phi_z(mu_p + std_p * noise)
                    params = self.decoder(pz, h, win.w)
            else:  # GravesWindow.forward's operations, then the stepper's
                a_hat, b_hat, k_hat = F.linear(h, win_w, win_b).chunk(3, dim=-1)
                win = window(a_hat, b_hat, kappa + torch.exp(k_hat), chars, char_mask, pos)
                params, pz = lean.emit(h, self._noise(generator, B), win.w)
            x, emitted = draw(head, params, mode, generator, temperature, bias)
            outs.append(emitted)
            phis_t.append(win.phi)
            finished = win.finished
            newly = finished & ~done_t
            ended_at[newly.cpu()] = t + 1
            done_t |= finished
            if bool(done_t.all()):
                break
            if lean is None:
                px = self.phi_x(x)
                rnn_in = torch.cat([px, win.w] if pz is None else [px, pz, win.w], dim=-1)
                h, c = self.rnn(rnn_in, (h, c))
            else:
                h, c = lean.advance(x, pz, h, c, win.w)
            state = (h, c, win.kappa)
        xs, ph = torch.stack(outs, 1), torch.stack(phis_t, 1)
        return self.finish_lines(lines, xs, list(ph), ended_at.tolist(), done_t.tolist())

    def begin_lines(
        self,
        texts: list[str],
        max_steps: int | None,
        generator: torch.Generator | None,
        prime: tuple[Tensor, str] | None,
        steps_per_char: float = MAX_STEPS_PER_CHAR,
        sampler: FusedTextSampler | None = None,
    ) -> Lines:
        """What `sample` does before its steps: the lines' characters (after the prime's text, if any), the state
        after reading the prime through the posterior (its noise from `generator`), and the step cap. With the fused
        `sampler` (this model's), the prime is read by its `prime` (its noise for all its steps drawn at once,
        (B, T0, Z)) and the state is as the sampler takes it (contiguous, h and c separate); else by `_step`, one
        step's noise at a time."""
        if not texts:
            raise ValueError("give at least one text")
        full = [f"{prime[1]} {t}" for t in texts] if prime is not None else list(texts)
        codes = [encode(t, self.config.alphabet) for t in full]
        chars, char_mask = one_hot_batch(codes, len(self.config.alphabet))
        chars, char_mask = chars.to(self.device, self._dtype()), char_mask.to(self.device)
        B = len(texts)
        state = self._start(B)
        if sampler is not None:
            h, c, kappa = (t.clone().contiguous() for t in state)
            state = (h, c, kappa)
        if prime is not None:
            x0 = prime[0].to(self.device, self._dtype())
            if x0.dim() != 2 or x0.shape[1] != self.config.x_dim or len(x0) == 0:
                raise ValueError(f"a prime must be (T0, {self.config.x_dim}) offsets, got {tuple(x0.shape)}")
            if sampler is not None:
                eps = None
                if self.config.has_latent:
                    eps = torch.randn((B, len(x0), self.config.z_dim), generator=generator, dtype=self._dtype())
                sampler.prime(state, codes, x0.contiguous(), eps)
            else:
                for t in range(len(x0)):
                    _, state, _ = self._step(x0[t].expand(B, -1), state, chars, char_mask, self._noise(generator, B))
        own = [len(encode(t, self.config.alphabet)) for t in texts]
        cap = max_steps if max_steps is not None else math.ceil(steps_per_char * max(own))
        if cap < 1:
            raise ValueError(f"max_steps must be positive, got {cap}")
        return Lines(codes, chars, char_mask, state, cap, [len(cd) - n for cd, n in zip(codes, own, strict=True)])

    def finish_lines(
        self, lines: Lines, xs: Tensor, phis: list[Tensor], ended_at: list[int], done: list[bool]
    ) -> TextSample:
        """The TextSample of `sample`'s steps: frames xs (B, T, 3), each row's window weights (T, >= U_b), the
        steps each row wrote and whether its rule fired; a primed line's new text cut from its prime's tail."""
        B = len(lines.codes)
        ends = [int(e) for e in ended_at]
        first = [_new_text_start(xs[b, : ends[b]], phis[b], lines.start[b]) for b in range(B)]
        return TextSample(
            offsets=[xs[b, first[b] : ends[b]] for b in range(B)],
            finished=[bool(d) for d in done],
            phi=[phis[b][first[b] : ends[b], lines.start[b] : len(lines.codes[b])] for b in range(B)],
        )


@dataclass
class Lines:
    """Lines about to be written (`TextVRNN.begin_lines`): each row's characters (prime text first), their one-hot
    batch, the state (h, c, kappa) after the prime, the step cap, and where each row's own text starts."""

    codes: list[Tensor]
    chars: Tensor
    char_mask: Tensor
    state: tuple[Tensor, Tensor, Tensor]
    cap: int
    start: list[int]


def _new_text_start(offsets: Tensor, phi: Tensor, start: int) -> int:
    """Where a primed line's own text begins: a primed model first finishes the primed line's last stroke (the window
    still on the primed characters and the space), then lifts the pen and moves to the new text. The points before the
    last stroke start (a point after a pen lift) at or before the first step whose window is on the new text are
    that tail, a stray mark before the first letter; they are dropped. 0 for an unprimed line (start 0), or when no
    pen lift comes first."""
    if start == 0 or len(offsets) == 0:
        return 0
    on_new = (phi[: len(offsets)].argmax(dim=-1) >= start).nonzero()
    if len(on_new) == 0:
        return 0
    reached = int(on_new[0, 0])
    lifts = (offsets[:reached, 2] > 0.5).nonzero()  # a point with pen = 1 ends a stroke; the next one starts one
    return int(lifts[-1, 0]) + 1 if len(lifts) else 0


def load_text_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[TextVRNN, dict[str, Any]]:
    """A text-conditioned model's checkpoint (NAME.safetensors + NAME.json) -> (model in eval mode, metadata)."""
    weights_path, _ = _paths(path)
    meta = read_metadata(weights_path)
    config = ModelConfig.from_dict(meta["config"])
    if not config.takes_text:
        raise CheckpointError(f"{weights_path}: not a text-conditioned model ({config.name}); use load_checkpoint")
    model = TextVRNN(config)
    load_weights(model, weights_path)
    return model.to(device).eval(), meta


def build_text_model(config: ModelConfig, init: str = "default") -> TextVRNN:
    if init != "default":
        raise ValueError(f"text models support init 'default' only, got {init!r}")
    return TextVRNN(config)


__all__ = ["TextAnalysis", "TextSample", "TextVRNN", "build_text_model", "load_text_checkpoint"]
