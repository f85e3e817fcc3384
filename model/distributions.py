"""Densities, KL divergences and samplers, all in log space.

Pure functions on tensors: the networks in `networks.py` produce the parameters, these functions
turn them into nats. Shapes use N for any number of rows (batch x time, flattened), K for mixture
components and D for the data dimension. Every log-density is in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


class DiagonalMixture(NamedTuple):
    """A mixture of K diagonal Gaussians over R^D (K = 1 and logits None: one Gaussian)."""

    logits: Tensor | None  # (N, K) unnormalised mixture weights
    mu: Tensor  # (N, K, D)
    std: Tensor  # (N, K, D)


class BivariateMixture(NamedTuple):
    """Handwriting: a mixture of K correlated bivariate Gaussians over (dx, dy) times a Bernoulli pen bit."""

    logits: Tensor | None  # (N, K)
    mu: Tensor  # (N, K, 2)
    std: Tensor  # (N, K, 2)
    rho: Tensor  # (N, K) correlation in (-1, 1)
    pen_logit: Tensor  # (N,) logit of P(pen = 1)


def gaussian_log_prob(x: Tensor, mu: Tensor, std: Tensor) -> Tensor:
    """Elementwise log N(x; mu, std^2)."""
    return -0.5 * ((x - mu) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI


def gaussian_kl(mu_q: Tensor, std_q: Tensor, mu_p: Tensor, std_p: Tensor) -> Tensor:
    """Elementwise KL(N(mu_q, std_q^2) || N(mu_p, std_p^2)) in nats."""
    var_ratio = (std_q / std_p) ** 2
    return 0.5 * (var_ratio + ((mu_q - mu_p) / std_p) ** 2 - 1.0 - torch.log(var_ratio))


def standard_normal_kl(mu_q: Tensor, std_q: Tensor) -> Tensor:
    """Elementwise KL(N(mu_q, std_q^2) || N(0, 1)) (the VRNN-I prior)."""
    return 0.5 * (std_q**2 + mu_q**2 - 1.0) - torch.log(std_q)


def _mix(component_log_prob: Tensor, logits: Tensor | None) -> Tensor:
    """log sum_k pi_k p_k(x) from (N, K) component log-densities, in log space."""
    if logits is None:
        return component_log_prob.squeeze(-1)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + component_log_prob, dim=-1)


def diagonal_mixture_log_prob(x: Tensor, p: DiagonalMixture) -> Tensor:
    """log p(x) for x (N, D) -> (N,)."""
    component = gaussian_log_prob(x.unsqueeze(1), p.mu, p.std).sum(-1)  # (N, K)
    return _mix(component, p.logits)


def bivariate_log_prob(xy: Tensor, mu: Tensor, std: Tensor, rho: Tensor) -> Tensor:
    """log N((x1, x2); mu, Sigma) with Sigma from std (.., 2) and correlation rho (..,).

    xy broadcasts against mu. Includes the -0.5 log(1 - rho^2) term that is easy to forget.
    """
    z = (xy - mu) / std
    z1, z2 = z[..., 0], z[..., 1]
    one_minus_rho2 = 1.0 - rho**2
    quad = (z1**2 + z2**2 - 2.0 * rho * z1 * z2) / one_minus_rho2
    return -LOG_2PI - torch.log(std).sum(-1) - 0.5 * torch.log(one_minus_rho2) - 0.5 * quad


def bivariate_mixture_log_prob(x: Tensor, p: BivariateMixture) -> Tensor:
    """log p(dx, dy, pen) for x (N, 3) with pen in {0, 1} -> (N,)."""
    xy_log_prob = _mix(bivariate_log_prob(x[:, None, :2], p.mu, p.std, p.rho), p.logits)
    pen_log_prob = -F.binary_cross_entropy_with_logits(p.pen_logit, x[:, 2], reduction="none")
    return xy_log_prob + pen_log_prob


def sharpen(logits: Tensor | None, std: Tensor, temperature: float, bias: float) -> tuple[Tensor | None, Tensor]:
    """Sampling controls: temperature scales stds and flattens mixture weights (logits / T); Graves'
    bias b >= 0 sharpens (logits * (1 + b), std * exp(-b)).

    Safe for every positive temperature, subnormal ones included: a std scaled below the smallest
    float is 0 (the draw is the component mean), and a row of logits that (1 + b) / T scales out of
    the floating-point range takes its T -> 0 limit instead of inf or NaN (see `_scale_logits`)."""
    factor = temperature * math.exp(-bias)
    if factor != 1.0:  # (x * 1.0 is x: the defaults skip the work, not change a bit)
        std = std * factor
    if logits is not None and (1.0 + bias) / temperature != 1.0:
        logits = _scale_logits(logits, (1.0 + bias) / temperature)
    return logits, std


def _scale_logits(logits: Tensor, scale: float) -> Tensor:
    """logits * scale, in log space without overflow: each row (N, K) whose product is not all finite
    (scale near or past the float range: inf - inf in the softmax would be NaN) becomes the limit of
    softmax(logits * scale) as scale -> inf, log-weights 0 at its largest logit(s) and -inf elsewhere.
    Finite rows are the plain product, so ordinary temperatures draw exactly the same samples."""
    scaled = logits * scale
    if bool(torch.isfinite(scaled).all()):
        return scaled
    finite = torch.isfinite(scaled).all(dim=-1, keepdim=True)
    top = logits == logits.amax(dim=-1, keepdim=True)
    limit = torch.zeros_like(logits).masked_fill(~top, -math.inf)
    return torch.where(finite, scaled, limit)


class RowGenerators:
    """One `torch.Generator` per row of a batch. Every draw of row r comes from generator r, in the shape row r
    would draw alone, so a row of a batch draws exactly what its own sample of one draws: requests batched
    together keep the output their seeds give alone (with `model.rowwise` for the arithmetic)."""

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)
        if not self.generators:
            raise ValueError("RowGenerators needs at least one generator")

    def __len__(self) -> int:
        return len(self.generators)


Generator = torch.Generator | RowGenerators | None


def _per_row(generator: RowGenerators, rows: int) -> list[torch.Generator]:
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} row generators for {rows} rows")
    return generator.generators


def randn(
    shape: Sequence[int], generator: Generator, device: Any = None, dtype: Any = None, row_dim: int = 0
) -> Tensor:
    """Standard normal noise of `shape`; with RowGenerators, each index of `row_dim` from its own generator."""
    if not isinstance(generator, RowGenerators):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    one = list(shape)
    one[row_dim] = 1
    gens = _per_row(generator, shape[row_dim])
    return torch.cat([torch.randn(one, generator=g, device=device, dtype=dtype) for g in gens], dim=row_dim)


def _multinomial(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """`torch.multinomial(probs, 1, generator=generator)` for rows of valid probabilities (finite, >= 0, a positive
    sum: a softmax's), without its input checks (reductions and host syncs that were most of a handwriting step's
    draw): ATen's one-sample path itself (the Gumbel-max trick, exponentiated: q ~ Exp(1), argmax of p / q), the
    same operations on the same generator, so the same index and the same generator state after it
    (tests/model/test_distributions.py). An index has no gradient: `probs` is read detached (as multinomial does).
    Unlike multinomial it does not raise on NaN probabilities: the jobs check their output for non-finite values."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    torch.div(probs.detach(), q, out=q)
    return q.argmax(-1, keepdim=True)


def multinomial_one(probs: Tensor, generator: Generator) -> Tensor:
    """One index per row of probs (N, K) -> (N, 1)."""
    if not isinstance(generator, RowGenerators):
        return _multinomial(probs, generator)
    gens = _per_row(generator, probs.shape[0])
    return torch.cat([_multinomial(probs[r : r + 1], g) for r, g in enumerate(gens)])


def bernoulli(p: Tensor, generator: Generator) -> Tensor:
    """A 0/1 draw per element of p (N, ...), row r from generator r with RowGenerators."""
    if not isinstance(generator, RowGenerators):
        return torch.bernoulli(p, generator=generator)
    gens = _per_row(generator, p.shape[0])
    return torch.cat([torch.bernoulli(p[r : r + 1], generator=g) for r, g in enumerate(gens)])


def _pick_component(logits: Tensor | None, generator: Generator) -> Tensor | int | None:
    """Index (N,) of one mixture component per row, drawn with its weight; for one row, the index as an int (read
    once: `_take` then slices each parameter at it without building a row index)."""
    if logits is None:
        return None
    k = multinomial_one(F.softmax(logits, dim=-1), generator).squeeze(-1)
    return int(k) if k.shape[0] == 1 else k


def _take(values: Tensor, index: Tensor | int | None) -> Tensor:
    """values (N, K, ...) -> (N, ...) at component index (N,) (the only one when index is None; for one row an int,
    the same elements as the general case)."""
    if index is None:
        return values[:, 0]
    if isinstance(index, int):
        return values[:, index]
    return values[torch.arange(values.shape[0], device=values.device), index]


def sample_diagonal_mixture(
    p: DiagonalMixture, generator: Generator = None, return_mean: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """One draw per row -> (N, D); with return_mean, also the mean of the component each row drew
    (the same random draws either way)."""
    k = _pick_component(p.logits, generator)
    mu, std = _take(p.mu, k), _take(p.std, k)
    eps = randn(mu.shape, generator, device=mu.device, dtype=mu.dtype)
    return (mu + std * eps, mu) if return_mean else mu + std * eps


def diagonal_mixture_mean(p: DiagonalMixture) -> Tensor:
    """E[x] -> (N, D)."""
    if p.logits is None:
        return p.mu[:, 0]
    return (F.softmax(p.logits, dim=-1).unsqueeze(-1) * p.mu).sum(1)


def sample_bivariate_mixture(
    p: BivariateMixture, generator: Generator = None, return_mean: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """One draw of (dx, dy, pen) per row -> (N, 3); with return_mean, also (mean of the drawn
    component's (dx, dy), the drawn pen bit) (the same random draws either way)."""
    k = _pick_component(p.logits, generator)
    mu, std, rho = _take(p.mu, k), _take(p.std, k), _take(p.rho, k)
    eps = randn(mu.shape, generator, device=mu.device, dtype=mu.dtype)
    # Correlate two standard normals: x2 = rho * e1 + sqrt(1 - rho^2) * e2.
    e1 = eps[:, 0]
    e2 = rho * e1 + torch.sqrt(1.0 - rho**2) * eps[:, 1]
    xy = mu + std * torch.stack([e1, e2], dim=-1)
    pen = bernoulli(torch.sigmoid(p.pen_logit), generator).unsqueeze(-1)
    draw = torch.cat([xy, pen], dim=-1)
    return (draw, torch.cat([mu, pen], dim=-1)) if return_mean else draw


def bivariate_mixture_mean(p: BivariateMixture) -> Tensor:
    """E[dx, dy] and the more likely pen state (a pen bit must stay 0 or 1) -> (N, 3)."""
    xy = p.mu[:, 0] if p.logits is None else (F.softmax(p.logits, dim=-1).unsqueeze(-1) * p.mu).sum(1)
    pen = (p.pen_logit > 0).to(xy.dtype)
    return torch.cat([xy, pen.unsqueeze(-1)], dim=-1)
