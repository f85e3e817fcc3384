"""Embedded mode with batching (BATCH_MAX > 1): concurrent generation requests share one step-level batch per model
(model.engine.SamplingEngine) and each still gets, byte for byte, what its seed gives alone without batching.

The shipped speech-vrnn-gauss and handwriting-vrnn-gmm checkpoints, not tiny ones: at their widths a batch-16
matrix product rounds differently from a batch-1 one, so a batch that were not row-invariant would change samples
(a tiny model may round the same either way and prove nothing)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from apikit import jobs_held, make_settings
from fastapi.testclient import TestClient
from servicekit import ROOT

from app.main import create_app

SPEECH, HAND = "speech-vrnn-gauss", "handwriting-vrnn-gmm"

# (route, JSON body): different seeds, and a few other settings, all for two models
REQUESTS = [("/generate/speech", {"model": SPEECH, "duration_s": 0.4, "seed": s}) for s in range(6)]
REQUESTS += [
    ("/generate/speech", {"model": SPEECH, "duration_s": 0.25, "seed": 6, "temperature": 0.7}),
    ("/generate/speech", {"model": SPEECH, "duration_s": 0.3, "seed": 7, "mean": True}),
    ("/generate/speech", {"model": SPEECH, "duration_s": 0.4, "seed": 0}),  # a seed twice: the same bytes twice
]
REQUESTS += [("/generate/handwriting", {"model": HAND, "steps": 120, "seed": s, "bias": 0.5}) for s in range(5)]
REQUESTS += [
    ("/generate/handwriting?format=json", {"model": HAND, "steps": 80, "seed": 11, "temperature": 0.6}),
    ("/generate/handwriting", {"model": HAND, "steps": 60, "seed": 12, "stroke_width": 3, "color": "navy"}),
]


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("shipped")
    for name in (SPEECH, HAND):
        for suffix in (".safetensors", ".json"):
            (directory / f"{name}{suffix}").symlink_to(ROOT / "checkpoints" / f"{name}{suffix}")
    return directory


@pytest.fixture(scope="module")
def alone(shipped_dir) -> list[tuple[int, bytes, str]]:
    """Each request sent alone, batching off (today's path: model.sample under the model's lock)."""
    with TestClient(create_app(make_settings(shipped_dir, batch_max=1))) as c:
        assert c.app.state.backend.batching() == {}
        out = []
        for url, body in REQUESTS:
            r = c.post(url, json=body)
            out.append((r.status_code, r.content, r.headers.get("x-seed", "")))
        assert c.app.state.backend.batching() == {}  # nothing went through an engine
    assert all(status == 200 for status, _, _ in out)
    return out


def concurrently(c: TestClient, requests: list[tuple[str, dict]]) -> list[tuple[int, bytes, str]]:
    results: list[tuple[int, bytes, str] | None] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(i: int) -> None:
        url, body = requests[i]
        start.wait()
        r = c.post(url, json=body)
        results[i] = (r.status_code, r.content, r.headers.get("x-seed", ""))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_concurrent_requests_share_batches_and_get_their_solo_bytes(shipped_dir, alone):
    settings = make_settings(shipped_dir, batch_max=16, batch_wait_ms=300, max_jobs_per_client=0)
    with TestClient(create_app(settings)) as c:
        backend = c.app.state.backend
        got = concurrently(c, REQUESTS)
        for (url, body), want, have in zip(REQUESTS, alone, got, strict=True):
            assert have[0] == 200, (url, body, have[1][:300])
            assert have[2] == want[2] == str(body["seed"])
            assert have[1] == want[1], f"{url} {body}: batched bytes differ from the unbatched ones"
        stats = backend.batching()
        assert set(stats) == {SPEECH, HAND}
        n_speech = sum(1 for url, _ in REQUESTS if "speech" in url)
        assert stats[SPEECH]["requests"] == n_speech and stats[HAND]["requests"] == len(REQUESTS) - n_speech
        for name in (SPEECH, HAND):  # batching happened: steps with several rows
            assert max(stats[name]["batch_sizes"]) > 1, (name, stats[name]["batch_sizes"])
            assert sum(stats[name]["wait_counts"]) == stats[name]["requests"]
        assert max(stats[SPEECH]["batch_sizes"]) >= 3  # the speech requests started together, after the wait

        text = c.get("/metrics").text
        assert f'vrnn_batch_rows_bucket{{le="1.0",model="{SPEECH}"}}' in text
        assert f'vrnn_batch_rows_count{{model="{HAND}"}} {float(stats[HAND]["steps"])}' in text
        assert f'vrnn_batch_queue_wait_seconds_count{{model="{SPEECH}"}} {float(n_speech)}' in text
        assert f'vrnn_batch_steps_total{{model="{SPEECH}"}}' in text

        # bad input is still refused before any job, and a job's own checks still answer 4xx
        assert c.post("/generate/speech", json={"model": SPEECH, "temperature": 0}).status_code == 422
        assert c.post("/generate/handwriting", json={"model": HAND, "steps": 0}).status_code == 422
        assert c.post("/generate/speech", json={"model": "no-such-model"}).status_code == 404
        assert c.post("/generate/speech", json={"model": HAND}).status_code == 422  # a handwriting model
        assert c.post("/generate/speech", json={"model": SPEECH, "prime": "aGVsbG8gd29ybGQ="}).status_code in (
            415,
            422,
        )
        engines = list(backend._runner.cache._engines.values())
    assert engines and not any(e._thread.is_alive() for e in engines)  # closing the app stopped the engines


def test_a_second_round_joins_running_batches(shipped_dir, alone):
    """No wait: requests join an engine that is already stepping, at a step boundary; still the solo bytes."""
    settings = make_settings(shipped_dir, batch_max=4, batch_wait_ms=0, max_jobs_per_client=0)
    with TestClient(create_app(settings)) as c:
        got = concurrently(c, REQUESTS)
        assert [g[1] for g in got] == [a[1] for a in alone]
        assert max(max(s["batch_sizes"]) for s in c.app.state.backend.batching().values()) <= 4


def test_batching_keeps_the_queue_bound(shipped_dir, monkeypatch):
    settings = make_settings(shipped_dir, batch_max=2, max_queued_jobs=1, max_jobs_per_client=0)
    with TestClient(create_app(settings)) as c:
        async_ = {"Prefer": "respond-async"}
        body = {"model": SPEECH, "duration_s": 20.0, "seed": 1}
        with jobs_held(monkeypatch):  # (no job finishes while the requests come in)
            answers = [c.post("/generate/speech", json=body, headers=async_).status_code for _ in range(6)]
        # two running in the engine, one waiting, then refused
        assert answers[0] == 202 and answers.count(202) <= 3 and 503 in answers
