"""NormStats: round trips, JSON, the log-Jacobian against densities computed in raw space, fitting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from model.data import DataError, NormStats, fit_handwriting_stats, fit_speech_stats

SPEECH = NormStats("speech", mean=0.01, std=0.07, frame_size=200)
HAND = NormStats("handwriting", mean=0.0, std=12.5, frame_size=3, clip=100.0)


def _hand(rng, T=50):
    x = rng.normal(0, 10, size=(T, 3)).astype(np.float32)
    x[:, 2] = rng.random(T) < 0.1
    return x


def test_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.1, size=(7, 200)).astype(np.float32)
    np.testing.assert_allclose(SPEECH.denormalise(SPEECH.normalise(x)), x, atol=1e-6)
    t = torch.from_numpy(x)
    back = SPEECH.denormalise(SPEECH.normalise(t))
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, t)
    h = _hand(rng)
    y = HAND.normalise(h)
    np.testing.assert_array_equal(y[:, 2], h[:, 2])  # pen bit untouched
    np.testing.assert_allclose(y[:, :2], h[:, :2] / 12.5, rtol=1e-6)
    np.testing.assert_allclose(HAND.denormalise(y), h, rtol=1e-6)
    np.testing.assert_allclose(HAND.denormalise(HAND.normalise(torch.from_numpy(h))).numpy(), h, rtol=1e-6)


def test_inputs_are_not_modified_and_ints_become_float():
    h = np.array([[3, 4, 0], [5, -6, 1]])
    before = h.copy()
    y = HAND.normalise(h)
    np.testing.assert_array_equal(h, before)
    assert y.dtype.kind == "f" and y[0, 0] == pytest.approx(3 / 12.5)
    clipped = HAND.clip_offsets(np.array([[500.0, -500.0, 1.0]]))
    np.testing.assert_array_equal(clipped, [[100.0, -100.0, 1.0]])
    np.testing.assert_allclose(HAND.preprocess(np.array([[500.0, 0.0, 0.0]])), [[8.0, 0.0, 0.0]])


def test_wrong_frame_size_is_an_error():
    with pytest.raises(DataError, match="frames of size 200"):
        SPEECH.normalise(np.zeros((4, 3)))
    with pytest.raises(DataError, match="frames of size 3"):
        HAND.denormalise(torch.zeros(2, 5, 200))


def test_json_round_trip_and_validation():
    for stats in (SPEECH, HAND):
        assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    with pytest.raises(DataError, match="std must be a positive"):
        NormStats("speech", 0.0, 0.0, 200)
    with pytest.raises(DataError, match="mean must be 0"):
        NormStats("handwriting", 1.0, 1.0, 3)
    with pytest.raises(DataError, match="frame_size must be 3"):
        NormStats("handwriting", 0.0, 1.0, 200)
    with pytest.raises(DataError, match="modality"):
        NormStats("video", 0.0, 1.0, 3)
    with pytest.raises(DataError, match="unknown keys"):
        NormStats.from_dict({"modality": "speech", "mean": 0, "std": 1, "frame_size": 200, "extra": 1})


@pytest.mark.parametrize("stats", [SPEECH, HAND], ids=["speech", "handwriting"])
def test_log_jacobian_turns_normalised_likelihood_into_raw(stats):
    # A density on normalised frames, mapped back, is a density on raw frames: the two log-densities
    # must differ by exactly the log-Jacobian per frame.
    rng = np.random.default_rng(1)
    T, D = 6, stats.frame_size
    raw = torch.from_numpy(rng.normal(stats.mean, stats.std, size=(T, D))).double()
    if stats.modality == "handwriting":
        raw[:, 2] = 0.0
    y = stats.normalise(raw)
    k = stats.scaled_dims
    f64 = torch.float64
    ll_norm = Normal(torch.tensor(0.0, dtype=f64), torch.tensor(1.0, dtype=f64)).log_prob(y[:, :k]).sum()
    # The same density in raw units: N(mean, std) per scaled coordinate.
    ll_raw = Normal(torch.tensor(stats.mean, dtype=f64), torch.tensor(stats.std, dtype=f64)).log_prob(raw[:, :k]).sum()
    converted = stats.to_raw_log_likelihood(ll_norm, T)
    assert float(converted) == pytest.approx(float(ll_raw), rel=1e-12, abs=1e-9)
    assert stats.log_jacobian_per_frame == pytest.approx(-k * math.log(stats.std))
    # The sign matters: adding the opposite would be off by 2 * T * D * log(std).
    assert float(ll_norm - T * stats.log_jacobian_per_frame) != pytest.approx(float(ll_raw))


def test_fit_speech_stats_matches_numpy():
    rng = np.random.default_rng(2)
    frames = [rng.normal(0.3, 2.0, size=(n, 200)).astype(np.float32) for n in (3, 10, 7)]
    stats = fit_speech_stats(frames)
    allv = np.concatenate(frames).astype(np.float64)
    assert stats.mean == pytest.approx(allv.mean(), rel=1e-9) and stats.std == pytest.approx(allv.std(), rel=1e-9)
    with pytest.raises(DataError, match="same value"):
        fit_speech_stats([np.zeros((4, 200), np.float32)])
    with pytest.raises(DataError, match="training split is empty"):
        fit_speech_stats([])


def test_fit_handwriting_clip_rule():
    rng = np.random.default_rng(3)
    seqs = [_hand(rng, 200) for _ in range(10)]
    d = np.concatenate([s[:, :2].ravel() for s in seqs]).astype(np.float64)
    mad_std = 1.4826 * np.median(np.abs(d - np.median(d)))
    stats = fit_handwriting_stats(seqs, clip_mads=10.0)
    assert stats.clip == pytest.approx(10.0 * mad_std)
    assert stats.std == pytest.approx(np.clip(d, -stats.clip, stats.clip).std())
    assert fit_handwriting_stats(seqs, clip_mads=None).clip is None


def _strokes_of(x: np.ndarray) -> list[np.ndarray]:
    from model.data.handwriting import offsets_to_strokes

    return offsets_to_strokes(x)


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_subsample_points_keeps_every_nth_point_and_each_strokes_ends(stride):
    from model.data.normalise import subsample_points

    rng = np.random.default_rng(stride)
    x = _hand(rng, 300)
    x[[17, 18, 40, 41, 42, 120, 299], 2] = 1.0  # strokes of 1, 2 and many points, the last one closed
    y = subsample_points(x, stride)
    before, after = _strokes_of(x), _strokes_of(y)
    assert len(after) == len(before)  # every stroke survives, pen lifts where they were
    for a, b in zip(before, after, strict=True):
        keep = sorted(set(range(0, len(a), stride)) | {len(a) - 1})
        np.testing.assert_allclose(b, a[keep], atol=1e-3)  # the kept points, at their own places
    assert y.dtype == x.dtype and y[:, 2].sum() == x[:, 2].sum()
    assert len(y) <= len(x) / stride + 2 * len(before)
    t = subsample_points(torch.as_tensor(x, dtype=torch.float64), stride)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), y, atol=1e-4)
    assert subsample_points(x, 1) is x


def test_point_stride_is_stored_applied_and_validated():
    rng = np.random.default_rng(9)
    seqs = [_hand(rng, 120) for _ in range(6)]
    stats = fit_handwriting_stats(seqs, point_stride=2)
    assert stats.point_stride == 2 and stats.to_dict()["point_stride"] == 2
    assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    plain = fit_handwriting_stats(seqs)
    assert "point_stride" not in plain.to_dict() and NormStats.from_dict(plain.to_dict()).point_stride == 1
    assert stats.std != plain.std  # fitted on the thinned offsets (larger steps)
    y = stats.preprocess(seqs[0])
    assert 60 <= len(y) < 120 and len(plain.preprocess(seqs[0])) == 120
    for bad in (0, 1.5, True):
        with pytest.raises(DataError, match="point_stride"):
            NormStats("handwriting", 0.0, 1.0, 3, None, bad)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="handwriting only"):
        NormStats("speech", 0.0, 1.0, 200, None, 2)
