"""Small models of every kind, and data that fits them (imported by the model tests)."""

from __future__ import annotations

import itertools

import torch

from model import ModelConfig, build_model

FAMILIES = ("rnn", "vrnn-i", "vrnn")
OUTPUTS = ("gauss", "gmm")
MODALITIES = ("speech", "handwriting")
ALL_KINDS = list(itertools.product(FAMILIES, OUTPUTS, MODALITIES))
LATENT_KINDS = [k for k in ALL_KINDS if k[0] != "rnn"]


def small_config(family: str, output: str, modality: str, **over) -> ModelConfig:
    base = dict(
        family=family,
        output=output,
        modality=modality,
        x_dim=6 if modality == "speech" else 3,
        z_dim=4,
        h_dim=12,
        mlp_layers=2,
        mlp_width=10,
        n_components=3,
    )
    base.update(over)
    return ModelConfig(**base)


def make_x(cfg: ModelConfig, batch: int, steps: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Data of the right kind: Gaussian frames, or pen offsets with 0/1 pen bits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, cfg.x_dim, generator=g, dtype=dtype)
    if cfg.modality == "handwriting":
        x[..., 2] = (torch.rand(batch, steps, generator=g) < 0.25).to(dtype)
    return x


def perturb(model: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """Move every weight far from its initial value (a fresh model's heads barely use their inputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def build(kind: tuple[str, str, str], seed: int = 0, **over):
    torch.manual_seed(seed)
    cfg = small_config(*kind, **over)
    return build_model(cfg), cfg
