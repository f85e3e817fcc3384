"""model.engine.SamplingEngine: requests that share steps get, bit for bit, what their seeds give alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from model import load_checkpoint
from model.engine import SamplingEngine

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["handwriting-vrnn-gmm", "speech-vrnn-gauss", "speech-rnn-gmm"]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    m, _ = load_checkpoint(ROOT / "checkpoints" / f"{request.param}.safetensors")
    return m.eval()


def alone(model, steps, seed, temperature=1.0, bias=0.0, mean=False, prime=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.sample(1, steps, temperature, g, prime, bias, mean)[0]


def requests(model):
    hw = model.config.modality == "handwriting"
    prime = torch.randn(12, model.config.x_dim, generator=torch.Generator().manual_seed(9))
    if hw:
        prime[:, 2] = (prime[:, 2] > 1).float()
    return [
        {"steps": 30, "seed": 1},
        {"steps": 7, "seed": 2, "temperature": 0.5},
        {"steps": 19, "seed": 3, "bias": 1.0 if hw else 0.0, "mean": "component-mean"},
        {"steps": 25, "seed": 4, "mean": True},
        {"steps": 12, "seed": 5, "prime": prime},
        {"steps": 30, "seed": 1},  # the same seed twice: the same output twice
    ]


def test_requests_joining_and_leaving_get_their_solo_samples(model):
    engine = SamplingEngine(model, max_batch=3)
    reqs = requests(model)
    futures = [engine.submit(**r) for r in reqs[:4]]
    for _ in range(5):  # the first three run 5 steps; then more arrive and join at a step boundary
        engine.step()
    futures += [engine.submit(**r) for r in reqs[4:]]
    engine.run_until_idle()
    for r, f in zip(reqs, futures, strict=True):
        want = alone(
            model,
            r["steps"],
            r["seed"],
            r.get("temperature", 1.0),
            r.get("bias", 0.0),
            r.get("mean", False),
            r.get("prime"),
        )
        assert torch.equal(f.result(), want), r
    assert max(engine.stats.batch_sizes) == 3  # never above max_batch
    assert engine.stats.requests == 6 and engine.stats.mean_batch() > 1.5


def test_threaded_clients(model):
    engine = SamplingEngine(model, max_batch=8).start()
    try:
        results: dict[int, torch.Tensor] = {}

        def client(seed: int) -> None:
            results[seed] = engine.submit(steps=20, seed=seed).result(timeout=60)

        threads = [threading.Thread(target=client, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.stop(timeout=10)
    for seed, out in results.items():
        assert torch.equal(out, alone(model, 20, seed)), seed
    assert len(results) == 6


def test_bad_requests_are_refused_at_submit(model):
    engine = SamplingEngine(model)
    for kwargs, match in [
        ({"steps": 0}, "steps"),
        ({"steps": 5, "temperature": 0.0}, "temperature"),
        ({"steps": 5, "bias": -1.0}, "bias"),
        ({"steps": 5, "mean": "median"}, "mean"),
        ({"steps": 5, "prime": torch.zeros(3, 7)}, "prime"),
    ]:
        with pytest.raises(ValueError, match=match):
            engine.submit(**kwargs)
    with pytest.raises(ValueError, match="max_batch"):
        SamplingEngine(model, max_batch=0)


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(model, monkeypatch):
    engine = SamplingEngine(model, max_batch=4)
    bad = engine.submit(steps=3, seed=1)
    calls = {"n": 0}
    original = engine._step

    def broken():
        calls["n"] += 1
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "_step", broken)
    engine.step()
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=1)
    monkeypatch.setattr(engine, "_step", original)
    good = engine.submit(steps=4, seed=2)
    engine.run_until_idle()
    assert torch.equal(good.result(), alone(model, 4, 2))


def test_the_batch_loop_runs_at_its_creators_thread_count(monkeypatch):
    """Whether a model samples paired is decided at the thread count of the thread that builds the engine (a kernel's
    choice depends on it), so the batch loop takes that count, whatever the process's count is when it starts."""
    import model.engine as engine_module

    m, _ = load_checkpoint(ROOT / "checkpoints" / "speech-vrnn-gauss.safetensors")
    m.eval()
    seen: list[int | None] = []
    monkeypatch.setattr(engine_module, "apply_threads", lambda threads=None: seen.append(threads))
    built: list[SamplingEngine] = []
    threads = torch.get_num_threads()

    def build() -> None:
        torch.set_num_threads(1)  # this thread's own count (OpenMP keeps it per thread)
        built.append(SamplingEngine(m, max_batch=2))

    torch.set_num_threads(2)
    try:
        t = threading.Thread(target=build)
        t.start()
        t.join()
        engine = built[0].start()
        try:
            engine.submit(3, seed=1).result(timeout=60)
        finally:
            engine.stop()
    finally:
        torch.set_num_threads(threads)
    assert built[0].threads == 1 and seen == [1]
