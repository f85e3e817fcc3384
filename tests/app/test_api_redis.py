"""The HTTP API in Redis mode (REDIS_URL set) against a real Redis, database 13, emptied before and after.

Jobs are run here by an in-process RQ SimpleWorker (burst mode) so that these tests stay fast; test_e2e.py
runs the real `python -m worker` process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from apikit import HAND, REDIS_URL, SPEECH, child_env, redis_db, wav
from fastapi.testclient import TestClient
from servicekit import ROOT

from app.main import create_app

redis = pytest.importorskip("redis")


@pytest.fixture()
def db():
    with redis_db() as conn:
        yield conn


def redis_settings(checkpoint_dir, **overrides):
    from apikit import make_settings

    values = {"redis_url": REDIS_URL, "queue_name": "vrnn-api-test", **overrides}
    return make_settings(checkpoint_dir, **values)


def test_the_api_never_imports_torch_in_redis_mode(checkpoint_dir, db):
    """A fresh process serves every read-only route and refuses jobs (no worker) without loading torch."""
    code = """
import json, sys
from fastapi.testclient import TestClient
import app.main
with TestClient(app.main.app) as c:
    codes = {p: c.get(p).status_code for p in ("/healthz", "/readyz", "/models", "/metrics", "/jobs/x", "/docs")}
    codes["submit"] = c.post("/generate/speech", json={"seed": 1}).status_code
    codes["score"] = c.post("/score", files={"file": ("a.json", b"[[[1, 2], [3, 4]]]")}).status_code
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "model": "model" in sys.modules}))
"""
    env = child_env(REDIS_URL=REDIS_URL, CHECKPOINT_DIR=str(checkpoint_dir), QUEUE_NAME="vrnn-api-test")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and report["model"] is False
    assert report["codes"] == {
        "/healthz": 200,
        "/readyz": 503,
        "/models": 200,
        "/metrics": 200,
        "/jobs/x": 404,
        "/docs": 200,
        "submit": 503,
        "score": 503,
    }


def test_without_a_worker_jobs_are_refused_and_not_ready(checkpoint_dir, db):
    with TestClient(create_app(redis_settings(checkpoint_dir, retry_after_s=3))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["mode"] == "redis"
        assert any("no worker" in reason for reason in r.json()["reasons"])
        r = c.post("/generate/speech", json={})
        assert r.status_code == 503 and r.headers["retry-after"] == "3" and "python -m worker" in r.json()["detail"]
        models = c.get("/models").json()
        assert {m["name"] for m in models["models"]} == {SPEECH, "speech-rnn", HAND} and models["failed"] == {}
        assert c.get("/jobs/nothing").status_code == 404
    # Redis down: 503 with the reason, never a 500.
    down = redis_settings(checkpoint_dir, redis_url="redis://127.0.0.1:1/13")
    with TestClient(create_app(down)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and "unreachable" in r.json()["reasons"][0]
        assert c.post("/generate/speech", json={}).status_code == 503
        assert c.get("/jobs/x").status_code == 503


@pytest.fixture()
def rq_worker(checkpoint_dir, db):
    """A worker registered on the test queue (so the API sees one alive) that runs jobs when told to."""
    from rq import SimpleWorker

    from worker import queueing
    from worker.cache import ModelCache, set_cache

    set_cache(ModelCache(checkpoint_dir, device="cpu"))
    queue = queueing.make_queue(db, "vrnn-api-test")
    w = SimpleWorker([queue], connection=db, serializer=queueing.SERIALIZER)
    # What `python -m worker` publishes for /readyz: its loaded models, refreshed by its heartbeat.
    queueing.publish_models(db, w.name, json.dumps({"models": [SPEECH], "queue": "vrnn-api-test"}), 60)
    w.register_birth()
    w.register_death_on_exit = False

    def run_jobs() -> None:
        w.register_death()  # work() registers the worker again
        w.work(burst=True)
        w.register_birth()

    yield run_jobs
    set_cache(None)


def test_jobs_through_redis(checkpoint_dir, rq_worker):
    app = create_app(redis_settings(checkpoint_dir, sync_wait_s=0.2, max_queued_jobs=2))
    async_ = {"Prefer": "respond-async"}
    with TestClient(app) as c:
        assert c.get("/readyz").json() == {"ready": True, "mode": "redis", "reasons": [], "failed": {}}
        ok = c.post("/generate/speech", json={"model": SPEECH, "duration_s": 0.25, "seed": 3}, headers=async_)
        assert ok.status_code == 202 and ok.headers["location"] == f"/jobs/{ok.json()['id']}"
        assert ok.json()["status"] == "queued" and ok.json()["kind"] == "generate_speech"
        # Not finished: 202 from the result URL; a sync call that outlasts SYNC_WAIT_S: 202 too.
        assert c.get(f"/jobs/{ok.json()['id']}/result").status_code == 202
        bad = c.post("/generate/speech", json={"model": "missing"})
        assert bad.status_code == 202
        full = c.post("/generate/speech", json={"seed": 4})  # MAX_QUEUED_JOBS=2 are waiting
        assert full.status_code == 503 and "full" in full.json()["detail"]
        assert "vrnn_queue_depth 2.0" in c.get("/metrics").text

        rq_worker()

        state = c.get(f"/jobs/{ok.json()['id']}").json()
        assert state["status"] == "finished" and state["started_at"] and state["ended_at"].endswith("Z")
        result = c.get(f"/jobs/{ok.json()['id']}/result")
        assert result.status_code == 200 and result.headers["x-seed"] == "3" and result.headers["x-model"] == SPEECH
        assert result.content[:4] == b"RIFF"
        failed = c.get(f"/jobs/{bad.json()['id']}").json()
        assert failed["status"] == "failed" and failed["error_status"] == 404 and "missing" in failed["error"]
        r = c.get(f"/jobs/{bad.json()['id']}/result")
        assert r.status_code == 404 and "missing" in r.json()["detail"]

        data = {"data_b64": base64.b64encode(b"<not closed").decode(), "model": HAND}
        job = c.post("/score", json=data, headers=async_).json()
        rq_worker()
        r = c.get(f"/jobs/{job['id']}/result")
        assert r.status_code == 422 and r.json()["detail"]
        text = c.get("/metrics").text
        assert 'vrnn_job_duration_seconds_count{kind="generate_speech",status="finished"} 1.0' in text

        # The same bytes as embedded mode for the same seed.
        with TestClient(create_app(redis_settings(checkpoint_dir, redis_url=None))) as embedded:
            same = embedded.post("/generate/speech", json={"model": SPEECH, "duration_s": 0.25, "seed": 3})
        assert same.content == result.content
        upload = c.post("/score", files={"file": ("a.wav", wav(0.1))}, headers=async_)
        assert upload.status_code == 202


def test_wait_blocks_on_the_result_stream_for_finished_and_failed_jobs(checkpoint_dir, rq_worker, monkeypatch):
    """A sync call's wait reads RQ's result stream of the job (XREAD), which the worker writes on success and on
    failure: waits that block while the worker runs wake on a result (a read that returns an entry), not at a
    timeout; without a result a wait comes back at its timeout with the job still queued."""
    import threading
    import time

    from app.backends.redis import RedisBackend

    backend = RedisBackend(redis_settings(checkpoint_dir))
    reads: list[tuple[str, bool]] = []
    entered: set[str] = set()
    xread = backend.connection.xread

    def spy(streams, **kw):
        entered.add(next(iter(streams)).rsplit(":", 1)[1])
        found = xread(streams, **kw)
        reads.append((next(iter(streams)).rsplit(":", 1)[1], bool(found)))
        return found

    monkeypatch.setattr(backend.connection, "xread", spy)
    ok = backend.submit("generate_speech", {"model": SPEECH, "duration_s": 0.1, "seed": 1})
    bad = backend.submit("generate_speech", {"model": "missing"})
    assert backend.wait(ok, timeout=0.3)["status"] == "queued" and reads == [(ok, False)]
    reads.clear()
    ends: dict[str, str] = {}
    waits = [threading.Thread(target=lambda j=j: ends.update({j: backend.wait(j, 60)["status"]})) for j in (ok, bad)]
    entered.clear()
    for t in waits:
        t.start()
    deadline = time.monotonic() + 30
    while entered != {ok, bad} and time.monotonic() < deadline:  # both blocked on their streams: then run the jobs
        time.sleep(0.01)
    rq_worker()
    for t in waits:
        t.join(60)
    assert ends == {ok: "finished", bad: "failed"}
    assert (ok, True) in reads and (bad, True) in reads  # each woken by its result
    backend.close()


def test_wait_result_takes_the_result_from_the_stream_and_reads_the_job_once(checkpoint_dir, rq_worker, monkeypatch):
    """The synchronous path (`wait_result`): a finished job's result comes from the XREAD entry that woke the wait,
    the job's hash read once (for its state and the metrics), and equals what GET /jobs/{id}/result reads; a failed
    job raises JobFailedError with its status; a job nobody runs comes back pending, without a result."""
    import threading

    from app.backends import JobFailedError
    from app.backends.redis import RedisBackend

    observed: list[tuple] = []
    backend = RedisBackend(redis_settings(checkpoint_dir), observer=lambda *a: observed.append(a))
    ok = backend.submit("generate_speech", {"model": SPEECH, "duration_s": 0.1, "seed": 3})
    bad = backend.submit("generate_speech", {"model": "missing"})
    info, result = backend.wait_result(ok, timeout=0.3)
    assert info["status"] == "queued" and result is None
    fetched: list[str] = []
    hgetall = backend.connection.hgetall
    monkeypatch.setattr(backend.connection, "hgetall", lambda key: fetched.append(key) or hgetall(key))
    outcome: dict = {}

    def wait_ok() -> None:
        outcome["ok"] = backend.wait_result(ok, 60)

    def wait_bad() -> None:
        try:
            backend.wait_result(bad, 60)
        except JobFailedError as e:
            outcome["bad"] = e

    waits = [threading.Thread(target=wait_ok), threading.Thread(target=wait_bad)]
    for t in waits:
        t.start()
    rq_worker()
    for t in waits:
        t.join(60)
    reads_of_ok = fetched.count(f"rq:job:{ok}")
    info, result = outcome["ok"]
    assert info["status"] == "finished" and result == backend.result(ok)
    assert result["media_type"] == "audio/wav" and result["body_b64"]
    assert reads_of_ok == 1
    assert outcome["bad"].status_code == 404
    assert [a[:2] for a in observed].count(("generate_speech", "finished")) == 1
    backend.close()
