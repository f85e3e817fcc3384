"""The Prometheus metrics, request ids and access log (app/metrics.py): an embedded-mode TestClient, a Redis-mode
app whose Redis is unreachable, and one Redis-mode scrape with a live `python -m worker` (Redis database 11,
emptied before and after)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from apikit import child_env, make_settings, wav, write_checkpoints
from fastapi.testclient import TestClient
from rediskit import redis_db
from servicekit import metric as value
from servicekit import parse_metrics, start, stop, wait_for

from app.main import create_app
from app.metrics import JsonLogFormatter, access_log

REDIS_URL = "redis://127.0.0.1:6379/11"  # this file's own database: emptied before and after
QUEUE = "vrnn-metrics-test"


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("metrics-checkpoints"))


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse_metrics(r.text)


@pytest.fixture()
def access_lines():
    """The app.access log lines written meanwhile, as parsed JSON."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonLogFormatter())
    access_log.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    finally:
        access_log.removeHandler(handler)


def test_embedded_metrics_count_requests_jobs_failures_and_workers(checkpoint_dir):
    with TestClient(create_app(make_settings(checkpoint_dir, embedded_workers=2))) as c:
        before = scrape(c)
        assert value(before, "vrnn_workers") == 2 and value(before, "vrnn_backend_up") == 1
        assert value(before, "vrnn_queue_depth") == 0 and value(before, "vrnn_jobs_running") == 0
        assert c.post("/generate/speech", json={"duration_s": 0.1, "seed": 1}).status_code == 200
        assert c.post("/generate/speech", json={"duration_s": -1}).status_code == 422  # refused before a job
        assert c.post("/generate/speech", json={"model": "no-such-model"}).status_code == 404  # a failed job
        files = {"file": ("a.wav", wav(0.25), "audio/wav")}
        assert c.post("/score", files=files, data={"num_samples": "2"}).status_code == 200
        m = scrape(c)
    post = {"method": "POST", "route": "/generate/speech"}
    assert value(m, "vrnn_http_requests_total", status="200", **post) == 1
    assert value(m, "vrnn_http_requests_total", status="422", **post) == 1
    assert value(m, "vrnn_http_requests_total", status="404", **post) == 1
    assert value(m, "vrnn_http_request_duration_seconds_count", **post) == 3
    assert value(m, "vrnn_http_requests_total", method="GET", route="/metrics", status="200") == 1  # the first
    assert value(m, "vrnn_jobs_submitted_total", kind="generate_speech") == 2
    assert value(m, "vrnn_job_duration_seconds_count", kind="generate_speech", status="finished") == 1
    assert value(m, "vrnn_job_duration_seconds_count", kind="generate_speech", status="failed") == 1
    assert value(m, "vrnn_job_duration_seconds_count", kind="score", status="finished") == 1
    assert value(m, "vrnn_job_failures_total", kind="generate_speech") == 1
    assert value(m, "vrnn_job_failures_total", kind="score") is None
    assert value(m, "vrnn_jobs_failed_stored") == 1 and value(m, "vrnn_jobs_running") == 0
    assert value(m, "vrnn_http_requests_in_progress") == 1  # the scrape itself
    assert value(m, "vrnn_workers") == 2 and value(m, "vrnn_backend_up") == 1


def test_request_ids_are_echoed_replaced_when_unsafe_and_logged_with_the_job(checkpoint_dir, access_lines):
    with TestClient(create_app(make_settings(checkpoint_dir))) as c:
        r = c.post("/generate/speech", json={"duration_s": 0.1, "seed": 2}, headers={"X-Request-Id": "req-1.a:b"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-1.a:b"
        job_id = r.headers["x-job-id"]
        for bad in ("has space", "x" * 129, "accent-\u00e9"):
            got = c.get("/healthz", headers={"X-Request-Id": bad.encode()})
            assert len(got.headers["x-request-id"]) == 32 and got.headers["x-request-id"] != bad
        fresh = {c.get("/healthz").headers["x-request-id"] for _ in range(3)}
        assert len(fresh) == 3  # a new id per request when the client sends none
        assert c.post("/generate/speech", json={"nope": 1}).headers["x-request-id"]  # errors carry one too
    lines = access_lines()
    line = next(x for x in lines if x.get("request_id") == "req-1.a:b")
    assert line["logger"] == "app.access" and line["route"] == "/generate/speech" and line["status"] == 200
    assert line["job_id"] == job_id and line["method"] == "POST" and line["duration_s"] >= 0
    assert all(x["request_id"] for x in lines) and not any("has space" in json.dumps(x) for x in lines)


def test_metrics_still_answer_when_redis_is_unreachable(checkpoint_dir):
    settings = make_settings(checkpoint_dir, redis_url="redis://127.0.0.1:1/11", queue_name=QUEUE)
    with TestClient(create_app(settings)) as c:
        m = scrape(c)
    assert value(m, "vrnn_backend_up") == 0 and value(m, "vrnn_workers") == 0 and value(m, "vrnn_queue_depth") == 0


@pytest.fixture()
def db11():
    """A client of database 11, emptied before and after, locked against concurrent runs."""
    with redis_db(REDIS_URL) as conn:
        yield conn


@pytest.mark.slow
def test_redis_mode_scrape_with_a_live_worker(checkpoint_dir, db11, tmp_path):
    from worker import queueing

    env = child_env(REDIS_URL=REDIS_URL, QUEUE_NAME=QUEUE, CHECKPOINT_DIR=str(checkpoint_dir))
    log = tmp_path / "worker.log"
    worker = start(["-m", "worker", "--device", "cpu"], env, log)
    try:
        settings = make_settings(checkpoint_dir, redis_url=REDIS_URL, queue_name=QUEUE, job_retries=1)
        with TestClient(create_app(settings)) as c:
            wait_for(lambda: c.get("/readyz").status_code == 200, 90, "a ready worker", 0.2, [(worker, log)])
            r = c.post("/generate/speech", json={"duration_s": 0.1, "seed": 3}, headers={"X-Request-Id": "redis-r1"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "redis-r1"
            job_id = r.headers["x-job-id"]
            assert c.post("/generate/speech", json={"model": "no-such-model"}).status_code == 404
            m = scrape(c)
            job = queueing.fetch_job(db11, job_id)
            assert job is not None and job.meta.get("request_id") == "redis-r1"
    finally:
        stop(worker)
    assert value(m, "vrnn_workers") == 1 and value(m, "vrnn_backend_up") == 1
    assert value(m, "vrnn_queue_depth") == 0 and value(m, "vrnn_jobs_running") == 0
    assert value(m, "vrnn_jobs_failed_stored") == 1  # the unknown model's job, in RQ's failed registry
    assert value(m, "vrnn_jobs_submitted_total", kind="generate_speech") == 2
    assert value(m, "vrnn_job_duration_seconds_count", kind="generate_speech", status="finished") == 1
    assert value(m, "vrnn_job_failures_total", kind="generate_speech") == 1
    assert value(m, "vrnn_job_retries_total", kind="generate_speech") is None  # bad input is never retried
    # The worker's JSON log lines carry the request id of the job they run.
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    started = [e for e in events if e.get("event") == "job_started" and e.get("job_id") == job_id]
    assert started and started[0]["request_id"] == "redis-r1", log.read_text()[-3000:]
