"""Bounded memory of no-grad work: the IS estimate runs its K x T rows a few time steps at a time and
no-grad decoding takes a chunk of rows at a time (defaults.NO_GRAD_CHUNK_BYTES). The chunks draw the
same noise in the same order, so they change nothing but the order of float sums."""

from __future__ import annotations

import math

import pytest
import torch
from modelkit import build, make_x, perturb

import model.defaults as defaults

K, B, T = 5, 3, 23


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(kind):
    model, cfg = build(kind, seed=1)
    return perturb(model, 0.3, seed=1).double().eval(), cfg


def _spy_rows(model, monkeypatch) -> list[int]:
    """The row counts the output head decodes, call by call."""
    seen: list[int] = []
    head = model.decoder.head
    original = head.forward
    monkeypatch.setattr(head, "forward", lambda hidden: seen.append(hidden.shape[0]) or original(hidden))
    return seen


def _inputs(cfg):
    x = make_x(cfg, B, T, seed=2, dtype=torch.float64)
    mask = torch.arange(T)[None, :] < torch.tensor([T, 11, 1])[:, None]
    return x, mask


@pytest.mark.parametrize("chunk", ["one step", "three steps"])
def test_chunked_log_weights_equal_the_unchunked_ones(latent_kind, chunk, monkeypatch):
    model, cfg = _model(latent_kind)
    x, mask = _inputs(cfg)
    seen = _spy_rows(model, monkeypatch)
    monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", 2**50)  # one chunk: the whole K x T batch at once
    whole = model.log_weights(x, mask, num_samples=K, generator=gen(3))
    assert seen == [T * K * B]
    seen.clear()
    if chunk == "one step":
        monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", 1)
        rows, calls = K * B, T
    else:
        monkeypatch.setattr(model, "_chunk_rows", lambda: 3 * K * B + 2)
        rows, calls = 3 * K * B, math.ceil(T / 3)
    chunked = model.log_weights(x, mask, num_samples=K, generator=gen(3))
    assert max(seen) == rows and len(seen) == calls and sum(seen) == T * K * B
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-9)
    # What the score reports: the IS estimate (log-mean-exp) and the K-sample ELBO (mean), chunk for chunk.
    ll = model.log_likelihood(x, mask, num_samples=K, generator=gen(3))
    torch.testing.assert_close(ll, torch.logsumexp(whole, 0) - math.log(K), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(chunked.mean(0), whole.mean(0), rtol=1e-12, atol=1e-9)
    # The comparison is sensitive: other draws give other weights.
    assert not torch.allclose(model.log_weights(x, mask, num_samples=K, generator=gen(4)), whole)


def test_chunked_float32_weights_match_to_float_tolerance(monkeypatch):
    """The service runs float32: chunked sums differ from one sum only by rounding."""
    model, cfg = build(("vrnn", "gmm", "speech"), seed=1)
    model = perturb(model, 0.3, seed=1).eval()
    x = make_x(cfg, 1, 200, seed=5)
    monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", 2**50)
    whole = model.log_weights(x, num_samples=40, generator=gen(0))
    monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", 1)
    seen = _spy_rows(model, monkeypatch)
    chunked = model.log_weights(x, num_samples=40, generator=gen(0))
    assert seen == [40] * 200  # one step of the 40 samples at a time
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-3)


def test_no_grad_forward_decodes_in_chunks_with_the_same_elbo(kind, monkeypatch):
    """The per-frame ELBO of a score (forward without gradients) decodes a chunk of rows at a time;
    with gradients (training) nothing changes."""
    model, cfg = _model(kind)
    x, mask = _inputs(cfg)
    seen = _spy_rows(model, monkeypatch)
    monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", 1)
    with_grad = model(x, mask, generator=gen(3))
    assert seen == [T * B]
    seen.clear()
    with torch.no_grad():
        chunked = model(x, mask, generator=gen(3))
    assert seen == [B] * T
    for name in ("elbo", "kl", "nll"):
        torch.testing.assert_close(getattr(chunked, name), getattr(with_grad, name).detach(), rtol=1e-12, atol=1e-9)


def test_chunk_rows_follow_the_budget_and_the_model_size(monkeypatch):
    small, _ = build(("vrnn", "gauss", "handwriting"))
    big, _ = build(("vrnn", "gmm", "speech"), n_components=20, x_dim=200)
    assert small._chunk_rows() > big._chunk_rows() > 1
    rows = big._chunk_rows()
    monkeypatch.setattr(defaults, "NO_GRAD_CHUNK_BYTES", defaults.NO_GRAD_CHUNK_BYTES // 4)
    assert big._chunk_rows() == pytest.approx(rows / 4, abs=1)
    assert big.double()._chunk_rows() == pytest.approx(rows / 8, abs=1)  # float64 rows take twice the bytes
