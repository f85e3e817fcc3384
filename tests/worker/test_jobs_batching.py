"""worker.cache's sampling engines and worker.jobs' generation through them: concurrent jobs on a batching cache
(batch_max > 1) give byte for byte what the same jobs give on an unbatched cache, primes and RNNs included."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from workerkit import HAND, IAM_XML, SPEECH, SPEECH_RNN, b64, wav

from worker.cache import ModelCache
from worker.contract import JobInputError
from worker.jobs import Jobs

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("speech-vrnn-gauss", "handwriting-vrnn-gmm", "speech-rnn-gmm")


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("shipped")
    for name in SHIPPED:
        for suffix in (".safetensors", ".json"):
            (directory / f"{name}{suffix}").symlink_to(ROOT / "checkpoints" / f"{name}{suffix}")
    return directory


def jobs_for(models: tuple[str, str, str]) -> list[tuple[str, dict]]:
    speech, hand, rnn = models
    prime_wav, prime_xml = b64(wav(0.1, rate=8000)), b64(IAM_XML)
    out: list[tuple[str, dict]] = []
    for seed in range(5):
        out.append(("generate_speech", {"model": speech, "duration_s": 0.3, "seed": seed}))
        out.append(("generate_handwriting", {"model": hand, "steps": 70, "seed": seed, "bias": 0.3 * seed}))
    out += [
        ("generate_speech", {"model": speech, "duration_s": 0.2, "seed": 9, "prime_b64": prime_wav}),
        ("generate_speech", {"model": speech, "duration_s": 0.2, "seed": 9, "mean": True, "temperature": 0.5}),
        ("generate_speech", {"model": rnn, "duration_s": 0.25, "seed": 3}),
        ("generate_handwriting", {"model": hand, "steps": 40, "seed": 4, "prime_b64": prime_xml, "format": "json"}),
        ("generate_handwriting", {"model": hand, "steps": 50, "seed": 5, "temperature": 0.4, "format": "json"}),
    ]
    return out


def run_concurrently(runner: Jobs, work: list[tuple[str, dict]]) -> list[dict]:
    start = threading.Barrier(len(work))

    def one(item: tuple[str, dict]) -> dict:
        start.wait()
        return runner.run(item[0], dict(item[1]))

    with ThreadPoolExecutor(len(work)) as pool:
        return list(pool.map(one, work))


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_batched_jobs_give_the_unbatched_bytes(which, ckpt_dir, shipped_dir):
    directory, models = (ckpt_dir, (SPEECH, HAND, SPEECH_RNN)) if which == "tiny" else (shipped_dir, SHIPPED)
    work = jobs_for(models)
    plain = Jobs(ModelCache(directory, device="cpu"))  # batch_max 1: the unbatched path
    assert plain.cache.engine(models[0]) is None
    want = [plain.run(kind, dict(params)) for kind, params in work]
    cache = ModelCache(directory, device="cpu", batch_max=8, batch_wait_s=0.2)
    try:
        got = run_concurrently(Jobs(cache), work)
        for (kind, params), w, g in zip(work, want, got, strict=True):
            assert g == w, (kind, {k: v for k, v in params.items() if k != "prime_b64"})
        stats = cache.engine_stats()
        assert set(stats) == set(models)
        assert sum(s["requests"] for s in stats.values()) == len(work)
        assert max(max(s["batch_sizes"]) for s in stats.values()) > 1  # rows shared steps
        assert all(max(s["batch_sizes"]) <= 8 for s in stats.values())
    finally:
        cache.close()
    assert all(not e._thread.is_alive() for e in cache._engines.values())
    assert cache.engine(models[0]) is None  # closed: later generation runs unbatched


def test_engines_are_one_per_model_and_bad_input_is_still_refused(ckpt_dir):
    cache = ModelCache(ckpt_dir, device="cpu", batch_max=4)
    try:
        assert cache.engine(SPEECH) is cache.engine(SPEECH) and cache.engine(SPEECH) is not cache.engine(HAND)
        runner = Jobs(cache)
        with pytest.raises(JobInputError, match="temperature"):
            runner.generate_speech({"model": SPEECH, "temperature": 0})
        with pytest.raises(JobInputError, match="prime_b64"):
            runner.generate_speech({"model": SPEECH, "prime_b64": "not base64!!"})
    finally:
        cache.close()


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_bad_batch_settings(ckpt_dir, bad):
    with pytest.raises(ValueError, match="BATCH_MAX"):
        ModelCache(ckpt_dir, device="cpu", batch_max=bad)


def test_a_dead_engine_fails_its_waiters_and_is_replaced(ckpt_dir):
    from model import inference

    cache = ModelCache(ckpt_dir, device="cpu", batch_max=4)
    try:
        model, meta, name = cache.get(SPEECH)
        dead = cache.engine(name)
        dead.stop()
        assert not dead.alive
        with pytest.raises(RuntimeError, match="SamplingEngine stopped"):  # never a wait for ever
            inference.generate(model, meta, seconds=0.1, seed=1, engine=dead)
        fresh = cache.engine(name)
        assert fresh is not dead and fresh.alive
        want = Jobs(ModelCache(ckpt_dir, device="cpu")).generate_speech({"model": SPEECH, "duration_s": 0.1, "seed": 1})
        assert Jobs(cache).generate_speech({"model": SPEECH, "duration_s": 0.1, "seed": 1}) == want
    finally:
        cache.close()


def test_concurrent_score_jobs_share_batches_and_keep_their_solo_scores(shipped_dir):
    """Score jobs with the same K run side by side in the model's scoring batcher (model.scoring): each result is
    the unbatched cache's to float rounding, and the cache's counters show batches of several sequences."""
    import math

    uploads = [wav(0.1 + 0.05 * i, rate=16000) for i in range(6)]
    work = [("score", {"model": "speech-vrnn-gauss", "data_b64": b64(u), "num_samples": 8}) for u in uploads]
    work += [("score", {"model": "speech-vrnn-gauss", "data_b64": b64(uploads[0]), "num_samples": 4})]
    batched_cache = ModelCache(shipped_dir, device="cpu", batch_max=8, batch_wait_s=0.5)
    try:
        batched = run_concurrently(Jobs(batched_cache), work)
        stats = batched_cache.engine_stats()["speech-vrnn-gauss/score"]
    finally:
        batched_cache.close()
    alone = [Jobs(ModelCache(shipped_dir, device="cpu")).run(kind, dict(params)) for kind, params in work]
    for got, want in zip(batched, alone, strict=True):
        g, w = got["json"], want["json"]
        assert g["num_samples"] == w["num_samples"] and g["frames"] == w["frames"]
        for key in ("elbo", "log_likelihood"):
            assert math.isclose(g[key], w[key], rel_tol=1e-5, abs_tol=1e-2), (key, g[key], w[key])
    assert stats["requests"] == 7 and max(stats["batch_sizes"]) > 1  # shared batches (K=4 always apart)
