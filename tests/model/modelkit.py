"""Small models of every kind, and data that fits them (imported by the model tests)."""

from __future__ import annotations

import itertools
import math
import os
import pickle
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from model import ModelConfig, build_model
from model import train as train_mod

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


def write_tones(root: Path, n: int = 12, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Speech-like files (glides with harmonics and noise), different per file."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n):
        f0 = 120 + 80 * rng.random() + 40 * np.sin(2 * np.pi * (0.5 + rng.random()) * t)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        wave = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"u{i:02d}.wav", wave.astype(np.float32), rate)
    return root


def tiny_training(data: Path, out: Path, *extra: str, family="vrnn", steps=2, every=1, batch=4, width=8):
    """model.train's options for a few steps of a tiny `family` model on a speech-demo corpus, then `extra`."""
    return train_mod.parse_args([
        "--data", str(data), "--preset", "speech-demo", "--family", family, "--out", str(out),
        "--max-steps", str(steps), "--eval-every", str(every), "--batch-size", str(batch), "--h-dim", "8",
        "--mlp-width", str(width), "--z-dim", "4", "--test-samples", "2", "--no-progress", *extra,
    ])  # fmt: skip


class _Exploit:
    """Unpickling this would create a directory: a pickle-based loader would run attacker code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def exploit_pickle(marker: Path) -> bytes:
    """A pickle whose loading creates the directory `marker`."""
    return pickle.dumps({"w": _Exploit(str(marker))})


def reference_draw(model, params, nx, uniforms, mode, temperature, bias):
    """The fused kernel's draw (`model/kernels/rowgemm.c`), written with PyTorch from the head's parameters and the
    kernel's random numbers (nx: each row's normals after z's, uniforms: its uniforms) -> (frames fed back, frames
    written), each (B, D)."""
    head = model.decoder.head
    speech, k_all = model.config.modality == "speech", head.k
    factor, scale = temperature * math.exp(-bias), (1.0 + bias) / temperature
    fed, written = [], []
    for b in range(nx.shape[0]):
        if mode == "mean":
            row = type(params)(*(None if f is None else f[b : b + 1] for f in params))
            x = head.mean(row)[0]
            fed.append(x), written.append(x)
            continue
        k = 0
        if k_all > 1:
            probs = F.softmax(params.logits[b].double() * scale, -1)
            k = int(torch.argmax(probs / -torch.log1p(-uniforms[b, :k_all].double())))
        mu, std = params.mu[b, k], params.std[b, k] * factor
        if speech:
            x = mu + std * nx[b]
            out = mu if mode == "component-mean" else x
        else:
            rho = params.rho[b, k]
            e1 = nx[b, 0]
            e2 = rho * e1 + torch.sqrt(1 - rho**2) * nx[b, 1]
            pen = (uniforms[b, k_all if k_all > 1 else 0] < torch.sigmoid(params.pen_logit[b])).float()[None]
            x = torch.cat([mu + std * torch.stack([e1, e2]), pen])
            out = torch.cat([mu, pen]) if mode == "component-mean" else x
        fed.append(x), written.append(out)
    return torch.stack(fed), torch.stack(written)
