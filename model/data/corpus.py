"""What both loaders share: finding files, deterministic splits, skipping bad files, the `Corpus` result."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import defaults
from .errors import DataError
from .normalise import NormStats

T = TypeVar("T")
SPLITS = ("train", "valid", "test")


def find_files(root: str | Path, extensions: Sequence[str], exclude: Sequence[str] = ()) -> list[Path]:
    """Files under `root` (recursively; or `root` itself) whose suffix is one of `extensions`
    (case-insensitive), sorted by path so that the result does not depend on the file system.
    Hidden files and folders, and files named in `exclude`, are left out."""
    root = Path(root)
    exts = tuple(e.lower() for e in extensions)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() not in exts:
            raise DataError(f"{root}: unsupported file type {root.suffix!r} (expected one of {', '.join(exts)})")
        return [root]
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in exts and p.name not in exclude and p.is_file() and not _hidden(p, root)
    )
    if not files:
        raise DataError(f"{root}: no {', '.join(exts)} files found in this folder or its subfolders")
    return files


def _hidden(path: Path, root: Path) -> bool:
    # Skip dot-files and dot-folders (macOS "._x.wav" resource forks, .git): they are never data.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def split_items(
    items: Sequence[T],
    fractions: tuple[float, float, float] = defaults.SPLIT_FRACTIONS,
    seed: int = defaults.SPLIT_SEED,
) -> tuple[list[T], list[T], list[T]]:
    """Shuffle `items` with `seed` and cut them into (train, valid, test) by `fractions`.

    Deterministic for the same items in the same order (pass sorted items). With 3 items or more the
    validation and test splits get at least one item each, so a small corpus still validates."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must be three non-negative numbers that sum to 1, got {fractions}")
    n = len(items)
    order = np.random.default_rng(seed).permutation(n)
    n_valid = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_valid = max(n_valid, 1) if fractions[1] > 0 else 0
        n_test = max(n_test, 1) if fractions[2] > 0 else 0
    n_valid = min(n_valid, n)
    n_test = min(n_test, n - n_valid)
    n_train = n - n_valid - n_test
    shuffled = [items[i] for i in order]
    return shuffled[:n_train], shuffled[n_train : n_train + n_valid], shuffled[n_train + n_valid :]


def report_skipped(skipped: list[tuple[str, str]], total: int, root: str | Path) -> None:
    """One warning that names how many files were skipped and why (the first few in full)."""
    if not skipped:
        return
    shown = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    warnings.warn(
        f"{root}: skipped {len(skipped)} of {total} files that could not be used ({shown}{more})", stacklevel=3
    )


@dataclass
class Corpus:
    """A loaded data set, split and normalised, ready for training.

    train / valid / test: lists of float32 arrays (T_i, D), already normalised with `stats`
        (handwriting: clipped first, see `NormStats.preprocess`); `stats.denormalise` gives raw values.
    names: for each split, where each sequence came from ("path" or "path#chunk").
    skipped: (file, reason) of each file that could not be read.
    predefined_split: True when the corpus defined its own split (TIMIT's TRAIN/ and TEST/, IAM-OnDB's lists).
    split_by: how the split was made: "line"/"file" (shuffled items), "writer" (no writer in two splits),
        "iam" (IAM-OnDB's form lists) or "predefined".
    """

    modality: str
    root: str
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    names: dict[str, list[str]]
    stats: NormStats
    skipped: list[tuple[str, str]] = field(default_factory=list)
    predefined_split: bool = False
    split_by: str = "file"

    def split(self, name: str) -> list[np.ndarray]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def summary(self) -> dict[str, Any]:
        """JSON-safe description for checkpoint metadata: name, split sizes, frames and stats."""
        return {
            "dataset": Path(self.root).name or str(self.root),
            "modality": self.modality,
            "predefined_split": self.predefined_split,
            "split_by": self.split_by,
            "split_sizes": {s: len(self.split(s)) for s in SPLITS},
            "split_frames": {s: int(sum(len(x) for x in self.split(s))) for s in SPLITS},
            "skipped_files": len(self.skipped),
            "normalisation": self.stats.to_dict(),
        }
