"""Tiny checkpoints with the trainer's metadata, for the tests of sampling, the worker and the API.

Imported as `tinyckpt` (pytest puts tests/ on the path): a freshly initialised small model saved with
`normalisation`, `sample_rate`, `frame_size`, `dataset` and `metrics`, as `model.train` writes them."""

from __future__ import annotations

from pathlib import Path

import torch

from model import ModelConfig, build_model, save_checkpoint
from model.data import NormStats


def tiny_config(modality: str, family: str = "vrnn", output: str = "gauss", width: int = 16) -> ModelConfig:
    return ModelConfig(
        family=family,
        output=output,
        modality=modality,
        x_dim=200 if modality == "speech" else 3,
        z_dim=4,
        h_dim=width,
        mlp_layers=1,
        mlp_width=width,
        n_components=2,
    )


def tiny_metadata(modality: str, dataset: str = "unit-test") -> dict:
    if modality == "speech":
        stats, extra = NormStats("speech", mean=0.0, std=0.1, frame_size=200), {"sample_rate": 16000}
    else:
        stats, extra = NormStats("handwriting", mean=0.0, std=4.0, frame_size=3, clip=60.0), {}
    return {
        "normalisation": stats.to_dict(),
        "frame_size": stats.frame_size,
        "dataset": {"name": dataset, "train": 1, "valid": 1, "test": 1},
        "metrics": {"test_elbo": -1.0},
        **extra,
    }


def write_tiny_checkpoint(path: Path, cfg: ModelConfig, dataset: str = "unit-test", seed: int = 0) -> Path:
    """Build `cfg` with a fixed seed and save it at `path` with the trainer's metadata."""
    torch.manual_seed(seed)
    return save_checkpoint(build_model(cfg), path, metadata=tiny_metadata(cfg.modality, dataset))


def tone_wav(seconds: float = 0.25, rate: int = 16000) -> bytes:
    """A WAV file's bytes: a 220 Hz tone with a faint overtone, `seconds` long."""
    import numpy as np

    from model.render import wav_bytes

    t = np.arange(round(seconds * rate)) / rate
    return wav_bytes(0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.cos(2 * np.pi * 1234 * t), rate)
