"""Checkpoint metadata read straight from CHECKPOINT_DIR's NAME.json files: GET /models in Redis mode.

Reads JSON only (no torch, no weights), so the API process stays light when workers run the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.contract import MAX_METADATA_BYTES, has_wordlm, looks_like_checkpoint, model_summary, style_names


def read_catalog(directory: Path) -> dict[str, Any]:
    """{"models": [summary, ...], "failed": {name: why}} for the checkpoints in `directory`, sorted by name.

    A NAME.json without NAME.safetensors beside it (or the reverse), or one that is not a checkpoint's
    metadata, is listed under "failed" with the reason."""
    models: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    if not directory.is_dir():
        return {"models": models, "failed": {str(directory): "no such folder (set CHECKPOINT_DIR)"}}
    # The trainer's resume state (NAME.resume.*) and temporaries are not checkpoints.
    stems = {p.stem for p in directory.glob("*.safetensors")} | {p.stem for p in directory.glob("*.json")}
    stems = {s for s in stems if "." not in s}
    for name in sorted(stems):
        weights, meta_path = directory / f"{name}.safetensors", directory / f"{name}.json"
        if not weights.is_file():
            if looks_like_checkpoint(meta_path):  # other JSON files beside the checkpoints are not ours
                failed[name] = f"{weights.name} is missing (the JSON has no weights beside it)"
            continue
        if not meta_path.is_file():
            failed[name] = f"{meta_path.name} is missing"
            continue
        try:
            if meta_path.stat().st_size > MAX_METADATA_BYTES:
                raise ValueError("too large to be checkpoint metadata")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
                raise ValueError("no 'config' object: not a checkpoint's metadata")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            failed[name] = f"{meta_path.name}: {e}"
            continue
        models.append(model_summary(name, meta, style_names(meta_path), has_wordlm(meta_path)))
    return {"models": models, "failed": failed}
