"""The naive VRNN loop a reader would write from the paper: every network evaluated at every step.

It shares the model's modules and parameters, so it computes the same ELBO with the same noise;
tests check `VRNN.forward` against it, and `model.bench` measures how much the hoisted loop saves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributions import gaussian_kl, standard_normal_kl
from .vrnn import VRNN, VRNNOutput


def reference_forward(
    model: VRNN, x: Tensor, mask: Tensor | None = None, generator: torch.Generator | None = None
) -> VRNNOutput:
    """ELBO of x (B, T, D) step by step (Eqs. 5-9, 11), drawing z_t's noise in the same order as
    `VRNN.forward` so that both give the same numbers for the same generator."""
    cfg = model.config
    B, T, _ = x.shape
    dtype, dev = model.rnn.weight_hh.dtype, model.rnn.weight_hh.device
    x = x.to(device=dev, dtype=dtype)
    m = torch.ones(B, T, dtype=torch.bool, device=dev) if mask is None else mask.to(dev).bool()
    x = x * m.unsqueeze(-1)
    h = c = torch.zeros(B, cfg.h_dim, dtype=dtype, device=dev)
    nlls, kls = [], []
    for t in range(T):
        x_t = x[:, t]
        phi_x = model.phi_x(x_t)
        if model.encoder is None:  # RNN: p(x_t | h_{t-1}), Eq. 2
            params = model.decoder(h)
            kl = torch.zeros(B, dtype=dtype, device=dev)
            rnn_input = phi_x
        else:
            assert model.phi_z is not None
            mu_q, std_q = model.encoder(phi_x, h)  # Eq. 9
            z = mu_q + std_q * torch.randn(B, cfg.z_dim, generator=generator, device=dev, dtype=dtype)
            phi_z = model.phi_z(z)
            if model.prior is None:  # VRNN-I
                kl = standard_normal_kl(mu_q, std_q).sum(-1)
            else:
                mu_p, std_p = model.prior(h)  # Eq. 5
                kl = gaussian_kl(mu_q, std_q, mu_p, std_p).sum(-1)
            params = model.decoder(phi_z, h)  # Eq. 6
            rnn_input = torch.cat([phi_x, phi_z], dim=-1)
        nlls.append(-model.decoder.head.log_prob(x_t, params))
        kls.append(kl)
        h, c = model.rnn(rnn_input, (h, c))  # Eq. 7
    nll = torch.stack(nlls, 1) * m
    kl_bt = torch.stack(kls, 1) * m
    elbo = -(nll + kl_bt).sum(1)
    return VRNNOutput(loss=-elbo.mean(), elbo=elbo, kl=kl_bt, nll=nll)
