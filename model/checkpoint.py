"""Checkpoints: NAME.safetensors (weights only) + NAME.json (config and metadata). Nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import ModelConfig
from .vrnn import VRNN, build_model

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint; the message names the file and what is wrong."""


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    return p, p.with_suffix(".json")


def path_beside(checkpoint: str | Path, suffix: str) -> Path:
    """NAME + `suffix` beside the checkpoint NAME.safetensors (or NAME.json, or NAME): where its named styles
    (".styles.json") and its word model (".wordlm.json") live."""
    p = Path(checkpoint)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + suffix)


def write_beside(path: Path, text: str) -> Path:
    """Write a file beside a checkpoint atomically (a temporary file, then a rename): a reader never sees half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_beside(path: Path, max_bytes: int, kind: str, error: type[ValueError]) -> bytes | None:
    """The bytes of a file that lives beside a checkpoint (its named styles, its word model): None when there is
    none; `error` naming the file when it cannot be read or is larger than `max_bytes` (then not even read)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    if size > max_bytes:
        raise error(f"{path}: {size} bytes is more than the {max_bytes} {kind} may have")
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None


def save_checkpoint(model: VRNN, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `path` (.safetensors, the weights) and the JSON beside it with the same stem.

    `metadata` (JSON-safe) is stored next to the model config; it cannot override "config"."""
    weights_path, meta_path = _paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = dict(metadata or {})
    meta.update(
        format_version=FORMAT_VERSION,
        config=model.config.to_dict(),
        name=model.config.name,
        params=sum(p.numel() for p in model.parameters()),
        code_version=__version__,
    )
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    # Write both under temporary names, then rename: a reader never sees half a checkpoint.
    tmp_w, tmp_m = weights_path.with_suffix(".safetensors.tmp"), meta_path.with_suffix(".json.tmp")
    save_file(state, str(tmp_w), metadata={"format_version": str(FORMAT_VERSION)})
    tmp_m.write_text(text + "\n")
    tmp_w.replace(weights_path)
    tmp_m.replace(meta_path)
    return weights_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, checked to hold a valid model config."""
    _, meta_path = _paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing (a checkpoint is NAME.safetensors + NAME.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not readable JSON ({e})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{meta_path}: no 'config' object; is this a checkpoint's metadata?")
    try:
        ModelConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: {e}") from None
    return meta


def read_text_metadata(path: str | Path) -> dict[str, Any]:
    """`read_metadata` of a text-conditioned checkpoint (its config has an alphabet); CheckpointError for another."""
    meta = read_metadata(path)
    if not meta["config"].get("alphabet"):
        raise CheckpointError(
            f"{path}: not a text checkpoint (its config has no alphabet); this needs a model that writes text "
            "(`python -m model.train --condition text`)"
        )
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[VRNN, dict[str, Any]]:
    """Rebuild the model from its JSON config and load the safetensors weights -> (model in eval mode, metadata).
    A text-conditioned model's checkpoint is refused with a pointer to `model.conditional.load_text_checkpoint`."""
    weights_path, _ = _paths(path)
    meta = read_metadata(weights_path)
    config = ModelConfig.from_dict(meta["config"])
    if config.takes_text:
        raise CheckpointError(
            f"{weights_path}: a text-conditioned model ({config.name}); load it with "
            "model.conditional.load_text_checkpoint"
        )
    model = build_model(config)
    load_weights(model, weights_path)
    return model.to(device).eval(), meta


def load_weights(model: torch.nn.Module, weights_path: Path) -> None:
    """The safetensors weights into `model` (strict), refusing a damaged file or non-finite weights."""
    try:
        state = load_file(str(weights_path), device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{weights_path}: weights do not match the config in the JSON ({first})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{weights_path}: non-finite weights in {bad[:3]}")
