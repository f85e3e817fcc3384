"""The tests' one kit of inputs: tiny checkpoints with the trainer's metadata, pen strokes, base64 (the WAV tone
and the process helpers are scripts/servicekit.py's, shared with the load test).

Imported as `tinyckpt` (pytest puts tests/ on the path; tests/app/apikit.py and tests/worker/workerkit.py build on
it): a freshly initialised small model saved with `normalisation`, `sample_rate`, `frame_size`, `dataset` and
`metrics`, as `model.train` writes them. Only the standard library at the top: torch is imported when a checkpoint
is written."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model import ModelConfig

SPEECH, SPEECH_RNN, HAND = "speech-vrnn", "speech-rnn", "hand-vrnn"  # the checkpoints of write_checkpoints
CHECKPOINTS = ((SPEECH, "speech", "vrnn"), (SPEECH_RNN, "speech", "rnn"), (HAND, "handwriting", "vrnn"))
# The text model of write_tiny_text_checkpoint writes these characters (enough for "hello world" and a few more).
TEXT, TEXT_ALPHABET = "hand-text", " abcdehlorw"
STROKES = [[[0, 0], [5, 3], [10, 8], [14, 9]], [[20, 0], [25, 5], [27, 9]], [[30, 2], [31, 2]]]


def tiny_config(modality: str, family: str = "vrnn", output: str = "gauss", width: int = 16) -> ModelConfig:
    from model import ModelConfig

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
    from model.data import NormStats

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
    import torch

    from model import build_model, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(build_model(cfg), path, metadata=tiny_metadata(cfg.modality, dataset))


def write_tiny_text_checkpoint(
    path: Path, alphabet: str = TEXT_ALPHABET, family: str = "vrnn", output: str = "gmm", seed: int = 0
) -> Path:
    """A freshly initialised small text-conditioned handwriting model (model.conditional.TextVRNN) writing
    `alphabet`, saved at `path` with the trainer's metadata (as `model.train --condition text` writes it)."""
    import dataclasses

    import torch

    from model import save_checkpoint
    from model.conditional import build_text_model

    cfg = dataclasses.replace(tiny_config("handwriting", family, output), alphabet=alphabet, window_components=2)
    torch.manual_seed(seed)
    return save_checkpoint(build_text_model(cfg), path, metadata=tiny_metadata("handwriting", "text-test"))


def write_checkpoints(directory: Path, output: str = "gauss", dataset: str = "unit-test") -> Path:
    """speech-vrnn, speech-rnn and hand-vrnn (`output` heads) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, modality, family in CHECKPOINTS:
        write_tiny_checkpoint(directory / f"{name}.safetensors", tiny_config(modality, family, output), dataset)
    return directory


def strokes_json() -> bytes:
    return json.dumps(STROKES).encode()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")
