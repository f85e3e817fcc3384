"""Padding, masks, cropping and the DataLoader helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import Batch, DataError, PadCollate, SequenceDataset, make_loader, pad_batch


def _seqs(lengths, D=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(np.float32) for n in lengths]


def test_pad_batch_shapes_mask_and_zero_padding():
    seqs = _seqs([5, 2, 7])
    x, mask = pad_batch(seqs)
    assert x.shape == (3, 7, 3) and x.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.shape == (3, 7)
    assert mask.sum(1).tolist() == [5, 2, 7]
    for b, s in enumerate(seqs):
        torch.testing.assert_close(x[b, : len(s)], torch.from_numpy(s))
        assert not x[b, len(s) :].any()
        assert mask[b, : len(s)].all() and not mask[b, len(s) :].any()  # a valid prefix


def test_crop_start_and_random():
    s = np.arange(20, dtype=np.float32).reshape(10, 2)
    x, mask = pad_batch([s, s[:3]], max_len=4, crop="start")
    assert x.shape == (2, 4, 2) and mask.sum(1).tolist() == [4, 3]
    torch.testing.assert_close(x[0], torch.from_numpy(s[:4]))
    starts = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        x, _ = pad_batch([s], max_len=4, crop="random", generator=g)
        start = int(x[0, 0, 0]) // 2
        torch.testing.assert_close(x[0], torch.from_numpy(s[start : start + 4]))  # a contiguous window
        starts.add(start)
    assert len(starts) > 3 and max(starts) <= 6
    a = pad_batch([s], 4, "random", torch.Generator().manual_seed(5)).x
    b = pad_batch([s], 4, "random", torch.Generator().manual_seed(5)).x
    torch.testing.assert_close(a, b)


def test_errors():
    with pytest.raises(DataError, match="same frame size"):
        pad_batch([np.zeros((3, 2)), np.zeros((3, 4))])
    with pytest.raises(DataError, match="no sequences"):
        pad_batch([])
    with pytest.raises(DataError, match="crop must be"):
        PadCollate(crop="middle")
    with pytest.raises(DataError, match=r"shape \(T, D\)"):
        SequenceDataset([np.zeros(5)])
    with pytest.raises(DataError, match="max_len"):
        pad_batch([np.zeros((3, 2))], max_len=0)


def test_loader_batches_and_reproducible_order():
    seqs = [np.full((n, 2), n, dtype=np.float32) for n in range(1, 11)]
    loader = make_loader(seqs, batch_size=4, shuffle=True, max_len=6, seed=3)
    batches = list(loader)
    assert [b.x.shape[0] for b in batches] == [4, 4, 2]
    assert all(isinstance(b, Batch) and b.x.shape[1] <= 6 for b in batches)
    seen = sorted(int(b.x[i, 0, 0]) for b in batches for i in range(b.x.shape[0]))
    assert seen == list(range(1, 11))  # every sequence once per epoch
    order = [b.x[:, 0, 0].tolist() for b in make_loader(seqs, 4, shuffle=True, max_len=6, seed=3)]
    assert order == [b.x[:, 0, 0].tolist() for b in batches]
    ordered = list(make_loader(seqs, 4, shuffle=False))
    assert ordered[0].x[:, 0, 0].tolist() == [1, 2, 3, 4] and ordered[0].mask.sum(1).tolist() == [1, 2, 3, 4]
