"""Batches of variable-length sequences: zero-padded x (B, T, D) plus a mask (B, T) of the valid prefix.

loader = make_loader(corpus.train, batch_size=32, shuffle=True, max_len=300, seed=0)
for x, mask in loader:        # x: (B, T, D) float32, mask: (B, T) bool, True on real frames
    out = model(x, mask=mask)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError

CROPS = ("random", "start")


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T, D) float32, zeros after each sequence's end
    mask: torch.Tensor  # (B, T) bool, True on the valid prefix of each row


class SequenceDataset(Dataset):
    """Sequences of shape (T_i, D) (NumPy arrays or tensors, same D) as float32 tensors."""

    def __init__(self, sequences: Sequence[np.ndarray | torch.Tensor]):
        self.sequences = [_as_tensor(s, i) for i, s in enumerate(sequences)]
        dims = {s.shape[1] for s in self.sequences}
        if len(dims) > 1:
            raise DataError(f"all sequences need the same frame size D, got {sorted(dims)}")
        self.dim = dims.pop() if dims else None

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.sequences[i]

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.sequences]


def _as_tensor(s: np.ndarray | torch.Tensor, i: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s)
    if t.ndim != 2 or t.shape[0] == 0:
        raise DataError(f"sequence {i}: expected shape (T, D) with T >= 1, got {tuple(t.shape)}")
    return t.float()


def pad_batch(
    sequences: Sequence[torch.Tensor | np.ndarray],
    max_len: int | None = None,
    crop: str = "start",
    generator: torch.Generator | None = None,
) -> Batch:
    """Stack (T_i, D) sequences into x (B, T, D) with T = the longest (at most max_len), zero-padded,
    and mask (B, T). A sequence longer than max_len is cropped to a window of max_len frames: its first
    ones (crop="start", for evaluation) or a uniformly drawn window (crop="random", for training)."""
    if crop not in CROPS:
        raise DataError(f"crop must be one of {CROPS}, got {crop!r}")
    if max_len is not None and max_len < 1:
        raise DataError(f"max_len must be a positive number of frames, got {max_len}")
    if len(sequences) == 0:
        raise DataError("cannot make a batch of no sequences")
    seqs = [_as_tensor(s, i) for i, s in enumerate(sequences)]
    dims = {s.shape[1] for s in seqs}
    if len(dims) > 1:
        raise DataError(f"all sequences of a batch need the same frame size D, got {sorted(dims)}")
    if max_len is not None:
        seqs = [_crop(s, max_len, crop, generator) for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs])
    T = int(lengths.max())
    x = torch.zeros(len(seqs), T, dims.pop())
    for b, s in enumerate(seqs):
        x[b, : len(s)] = s
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return Batch(x, mask)


def _crop(s: torch.Tensor, max_len: int, crop: str, generator: torch.Generator | None) -> torch.Tensor:
    if len(s) <= max_len:
        return s
    start = 0 if crop == "start" else int(torch.randint(len(s) - max_len + 1, (1,), generator=generator))
    return s[start : start + max_len]


class PadCollate:
    """`collate_fn` for a DataLoader: `pad_batch` with fixed options (a class, so workers can pickle it)."""

    def __init__(self, max_len: int | None = None, crop: str = "random", generator: torch.Generator | None = None):
        if crop not in CROPS:
            raise DataError(f"crop must be one of {CROPS}, got {crop!r}")
        self.max_len, self.crop, self.generator = max_len, crop, generator

    def __call__(self, batch: list[torch.Tensor]) -> Batch:
        return pad_batch(batch, self.max_len, self.crop, self.generator)


def make_loader(
    sequences: Sequence[np.ndarray | torch.Tensor],
    batch_size: int,
    shuffle: bool = True,
    max_len: int | None = None,
    crop: str | None = None,
    seed: int | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of `Batch`es. crop defaults to "random" when shuffling (training), else "start".
    `seed` fixes the shuffle order and the crop windows."""
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    crop = crop or ("random" if shuffle else "start")
    return DataLoader(
        SequenceDataset(sequences),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        collate_fn=PadCollate(max_len, crop, generator),
    )
