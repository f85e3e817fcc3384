"""Graves' soft window over the characters of a line (Graves 2013, "Generating Sequences With Recurrent Neural
Networks", Section 5.1, Eqs. 46-51), the attention of text-conditioned handwriting.

From a state h (B, H), one linear layer gives (a_hat, b_hat, k_hat) for K Gaussian components, and

    alpha = exp(a_hat),  beta = exp(b_hat),  kappa_t = kappa_{t-1} + exp(k_hat)          (49-51)
    phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2),  u = 1 .. U                   (46)
    w_t = sum_u phi(t, u) c_u,  c_u the one-hot vector of character u                    (47)

The centres kappa only move forward, so the window reads the line from left to right. phi is computed as
exp(logsumexp_k(a_hat_k - beta_k (kappa_k - u)^2)): the same number, but a large a_hat far from u gives a small
finite phi instead of alpha = inf times exp(...) = 0, a NaN. Padding
characters (a batch of lines of different lengths) get phi = 0. Graves' stopping rule: a line is written once
phi at u = U + 1 (one past the last character) exceeds phi at every character (`Window.finished`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import defaults

# The window starts moving at this many characters per pen point (overridable): about one character per mean
# points-per-character of the training data is what made the alignment form early in trials (issue 10).
DEFAULT_SPEED = 1.0 / 25.0


@dataclass
class Window:
    w: Tensor  # (B, A) the soft character vector fed to the networks
    kappa: Tensor  # (B, K) the components' centres, in characters (1 = the first)
    phi: Tensor  # (B, U) the weight of each character (0 on padding)
    phi_end: Tensor  # (B,) the weight of the position one past each line's last character

    @property
    def finished(self) -> Tensor:
        """(B,) bool: the window has passed the last character (Graves' stopping rule)."""
        return self.phi_end > self.phi.max(dim=1).values


class GravesWindow(nn.Module):
    def __init__(self, in_dim: int, components: int, speed: float = DEFAULT_SPEED):
        super().__init__()
        if components < 1:
            raise ValueError(f"need components >= 1, got {components}")
        self.components = components
        self.params = nn.Linear(in_dim, 3 * components)
        nn.init.uniform_(self.params.weight, -defaults.HEAD_INIT_RANGE, defaults.HEAD_INIT_RANGE)
        with torch.no_grad():
            self.params.bias.zero_()
        self.set_speed(speed)

    def set_speed(self, speed: float) -> None:
        """Start the centres moving at `speed` characters per pen point (exp(k_hat) = speed at the start): an
        initialisation, before training."""
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"the window's speed must be a positive number of characters per point, got {speed}")
        with torch.no_grad():
            self.params.bias[2 * self.components :] = math.log(speed)

    def initial_kappa(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.components)

    def forward(self, h: Tensor, kappa_prev: Tensor, chars: Tensor, char_mask: Tensor) -> Window:
        """h (B, in_dim), kappa_prev (B, K), chars (B, U, A) one-hot, char_mask (B, U) -> Window."""
        a_hat, b_hat, k_hat = self.params(h).chunk(3, dim=-1)
        return window(a_hat, b_hat, kappa_prev + torch.exp(k_hat), chars, char_mask)


def positions(chars: Tensor, char_mask: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(u = 1 .. U + 1, each line's length) of a batch of lines: what `window` needs besides the state (a sampler
    computes them once per line instead of once per step)."""
    return torch.arange(1, chars.shape[1] + 2, device=like.device, dtype=like.dtype), char_mask.sum(dim=1)


def window(
    a_hat: Tensor,
    b_hat: Tensor,
    kappa: Tensor,
    chars: Tensor,
    char_mask: Tensor,
    pos: tuple[Tensor, Tensor] | None = None,
) -> Window:
    """Eqs. 46-47 for given (a_hat, b_hat) (B, K) and centres kappa (B, K); `pos`: `positions(...)` if known."""
    U = chars.shape[1]
    u, lengths = pos if pos is not None else positions(chars, char_mask, kappa)  # u: 1 .. U and one past the longest
    # (B, K, U + 1): a_hat - beta (kappa - u)^2, summed over k in log space.
    logits = a_hat.unsqueeze(-1) - torch.exp(b_hat).unsqueeze(-1) * (kappa.unsqueeze(-1) - u) ** 2
    phi_all = torch.exp(torch.logsumexp(logits, dim=1))  # (B, U + 1)
    phi = torch.where(char_mask, phi_all[:, :U], torch.zeros((), dtype=phi_all.dtype, device=phi_all.device))
    # One past each line's own last character: u = length + 1, index `length` (0-based).
    phi_end = phi_all.gather(1, lengths.long().unsqueeze(1)).squeeze(1)
    w = torch.bmm(phi.unsqueeze(1), chars.to(phi.dtype)).squeeze(1)
    return Window(w, kappa, phi, phi_end)
