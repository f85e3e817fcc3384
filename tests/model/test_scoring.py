"""model.scoring: scoring requests batched across callers give each sequence its solo score (exactly alone, to float
rounding in a batch), keep requests with different K apart and stay within the memory budget."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from model import load_checkpoint
from model.inference import elbo_and_likelihood
from model.scoring import ScoringBatcher, score_batch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["speech-vrnn-gauss", "handwriting-vrnn-gmm", "speech-rnn-gmm"])
def model(request):
    m, _ = load_checkpoint(ROOT / "checkpoints" / f"{request.param}.safetensors")
    return m.eval()


def data(model, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, model.config.x_dim, generator=g) for n in lengths]
    if model.config.modality == "handwriting":
        for x in xs:
            x[:, 2] = (x[:, 2] > 1).float()
    return xs


def solo(model, x, k, seed):
    """What worker.jobs computed for one upload before batching."""
    with torch.no_grad():
        out = model(x[None], generator=torch.Generator().manual_seed(seed))
        per_frame = (-(out.nll + out.kl))[0].double()
        elbo, ll = elbo_and_likelihood(model, x[None], None, k, torch.Generator().manual_seed(seed))
    return per_frame, float(elbo[0]), float(ll[0])


def test_one_request_alone_gets_exactly_its_solo_score(model):
    x = data(model, [23])[0]
    (got,) = score_batch(model, [x], 8, [5])
    per_frame, elbo, ll = solo(model, x, 8, 5)
    assert torch.equal(got.per_frame, per_frame) and got.elbo == elbo and got.log_likelihood == ll


def test_a_batch_gives_each_sequence_its_solo_score_to_rounding(model):
    lengths, seeds = [31, 7, 19, 31], [1, 2, 3, 1]
    xs = data(model, lengths, seed=1)
    xs[3] = xs[0].clone()  # the same upload with the same seed twice: the same score twice
    got = score_batch(model, xs, 8, seeds)
    for x, s, r in zip(xs, seeds, got, strict=True):
        per_frame, elbo, ll = solo(model, x, 8, s)
        assert r.per_frame.shape == (len(x),)
        torch.testing.assert_close(r.per_frame, per_frame, rtol=1e-5, atol=1e-3)
        assert math.isclose(r.elbo, elbo, rel_tol=1e-5, abs_tol=1e-2) and math.isclose(
            r.log_likelihood, ll, rel_tol=1e-5, abs_tol=1e-2
        )
    # the seed matters (the same draws for the same seed, other draws for another), unless the model is exact
    if model.config.has_latent:
        other = score_batch(model, [xs[0]], 8, [99])[0]
        assert other.log_likelihood != got[0].log_likelihood
    assert math.isclose(got[0].log_likelihood, got[3].log_likelihood, rel_tol=1e-6)


def test_the_batcher_groups_by_k_and_within_the_budget(model):
    xs = data(model, [10, 12, 14, 16, 18], seed=2)
    b = ScoringBatcher(model, max_batch=3)
    futures = [b.submit(x, k, s) for x, k, s in zip(xs, [4, 4, 8, 4, 4], range(5), strict=True)]
    b.run_until_idle()
    # first batch: the K=4 requests 0, 1, 3 (max_batch 3); then 2 (K=8); then 4
    assert dict(b.stats.batch_sizes) == {3: 1, 1: 2} and b.stats.requests == 5
    for f, x, k, s in zip(futures, xs, [4, 4, 8, 4, 4], range(5), strict=True):
        assert math.isclose(f.result().log_likelihood, solo(model, x, k, s)[2], rel_tol=1e-5, abs_tol=1e-2)
    tight = ScoringBatcher(model, max_batch=8, budget=4 * 20)  # one sequence of K 4 x 20 frames at most
    futures = [tight.submit(x, 4, 0) for x in xs[:3]]
    tight.run_until_idle()
    assert dict(tight.stats.batch_sizes) == {1: 3} and all(f.done() for f in futures)


def test_threaded_callers_and_bad_requests(model):
    b = ScoringBatcher(model, max_batch=4).start()
    try:
        xs = data(model, [9, 13, 17, 21, 25, 29], seed=3)
        results: dict[int, float] = {}

        def call(i):
            results[i] = b.submit(xs[i], 4, i).result(timeout=60).log_likelihood

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == list(range(6))
        for i, x in enumerate(xs):
            assert math.isclose(results[i], solo(model, x, 4, i)[2], rel_tol=1e-5, abs_tol=1e-2)
        with pytest.raises(ValueError, match="x must be"):
            b.submit(torch.zeros(0, model.config.x_dim), 4, 0)
        with pytest.raises(ValueError, match="num_samples"):
            b.submit(xs[0], 0, 0)
    finally:
        b.stop(10)
    assert not b.alive
