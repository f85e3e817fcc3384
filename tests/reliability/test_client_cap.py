"""MAX_JOBS_PER_CLIENT: one client (its API key, else its address) may have that many jobs queued or running; one
more is a 429 with Retry-After, other clients are not affected, and a slot frees when a job ends. Embedded mode
(jobs held at a gate) and Redis mode (a private redis-server, jobs queued until a burst worker runs them, the count
shared by two API instances)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import relkit
from apikit import SPEECH, make_settings, write_checkpoints
from fastapi.testclient import TestClient
from servicekit import wait_for

from app.main import create_app

ASYNC = {"Prefer": "respond-async"}
BODY = {"model": SPEECH, "duration_s": 0.1, "seed": 1}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("cap-checkpoints"))


@pytest.fixture
def gate(monkeypatch):
    """generate_speech waits for the returned event before it runs (embedded mode runs worker.jobs.Jobs' methods)."""
    from worker import jobs

    release = threading.Event()
    original = jobs.Jobs.generate_speech

    def gated(self, params):
        release.wait(30)
        return original(self, params)

    monkeypatch.setattr(jobs.Jobs, "generate_speech", gated)
    yield release
    release.set()


def submit(client: TestClient, key: str | None = None, sync: bool = False):
    headers = {} if sync else dict(ASYNC)
    if key:
        headers["X-API-Key"] = key
    return client.post("/generate/speech", json=BODY, headers=headers)


def assert_capped(r, retry_after: int) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == str(retry_after)
    assert "MAX_JOBS_PER_CLIENT" in r.json()["detail"] and "wait for one to finish" in r.json()["detail"]


def wait_final(client: TestClient, job_id: str, key: str | None = None) -> dict:
    headers = {"X-API-Key": key} if key else {}
    return wait_for(
        lambda: (s := client.get(f"/jobs/{job_id}", headers=headers).json())["status"] in relkit.FINAL and s,
        30,
        f"job {job_id}",
        step=0.02,
    )


def test_embedded_cap_per_api_key(checkpoint_dir, gate):
    settings = make_settings(checkpoint_dir, api_keys="key-a,key-b", max_jobs_per_client=2, retry_after_s=4)
    with TestClient(create_app(settings)) as c:
        first = [submit(c, "key-a") for _ in range(2)]
        assert [r.status_code for r in first] == [202, 202]
        assert_capped(submit(c, "key-a"), 4)
        assert_capped(submit(c, "key-a", sync=True), 4)  # synchronous calls count the same
        assert submit(c, "key-b").status_code == 202  # another client is not affected
        gate.set()
        for r in first:
            assert wait_final(c, r.json()["id"], "key-a")["status"] == "finished"
        assert submit(c, "key-a").status_code == 202  # the slots are free again
        # A job that fails frees its slot as well.
        bad = [c.post("/generate/speech", json={"model": "nope"}, headers={**ASYNC, "X-API-Key": "key-b"})]
        assert wait_final(c, bad[0].json()["id"], "key-b")["status"] == "failed"


def test_embedded_cap_per_address_and_off_switch(checkpoint_dir, gate):
    app = create_app(make_settings(checkpoint_dir, max_jobs_per_client=1))
    with TestClient(app, client=("10.0.0.1", 1234)) as one:
        other = TestClient(app, client=("10.0.0.2", 1234))  # shares the running app (its lifespan is one's)
        assert submit(one).status_code == 202
        assert submit(one).status_code == 429
        assert submit(other).status_code == 202
        gate.set()
    with TestClient(create_app(make_settings(checkpoint_dir, max_jobs_per_client=0, max_queued_jobs=50))) as c:
        gate.clear()
        assert [submit(c).status_code for _ in range(10)] == [202] * 10  # 0: no per-client cap
        gate.set()


def test_the_cap_is_documented_in_the_openapi_document(checkpoint_dir):
    with TestClient(create_app(make_settings(checkpoint_dir))) as c:
        spec = c.get("/openapi.json").json()
    for path in ("/generate/speech", "/generate/handwriting", "/score", "/analyze/latent"):
        assert "429" in spec["paths"][path]["post"]["responses"], path


# Redis mode ----------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_mode(checkpoint_dir, tmp_path):
    """A private Redis with a (fake) worker registered on the queue: jobs wait until `run_jobs()` runs them."""
    from rq import SimpleWorker

    from worker import queueing
    from worker.cache import ModelCache, set_cache

    with relkit.redis_server(tmp_path / "redis") as server:
        conn = server.client()
        set_cache(ModelCache(checkpoint_dir, device="cpu"))
        queue = queueing.make_queue(conn, "vrnn-cap")
        w = SimpleWorker([queue], connection=conn, serializer=queueing.SERIALIZER)
        queueing.publish_models(conn, w.name, json.dumps({"models": [SPEECH], "queue": "vrnn-cap"}), 600)
        w.register_birth()

        def run_jobs() -> None:
            w.register_death()
            w.work(burst=True)
            w.register_birth()

        def settings(**overrides):
            values = {"redis_url": server.url, "queue_name": "vrnn-cap", "max_jobs_per_client": 2, **overrides}
            return make_settings(checkpoint_dir, **values)

        try:
            yield settings, run_jobs, conn
        finally:
            set_cache(None)
            conn.close()


def test_redis_cap_is_shared_by_api_processes_and_frees_when_jobs_end(redis_mode):
    settings, run_jobs, conn = redis_mode
    s = settings(api_keys="key-a,key-b", retry_after_s=6)
    with TestClient(create_app(s)) as api1, TestClient(create_app(s)) as api2:
        a1, a2 = submit(api1, "key-a"), submit(api2, "key-a")  # one on each API process
        assert (a1.status_code, a2.status_code) == (202, 202)
        assert_capped(submit(api1, "key-a"), 6)
        assert_capped(submit(api2, "key-a"), 6)
        assert submit(api2, "key-b").status_code == 202
        # The keys of the per-client sets hold a digest, never the API key; they expire.
        client_keys = [k.decode() for k in conn.scan_iter("vrnn:client:*")]
        assert len(client_keys) == 2 and not any("key-a" in k or "key-b" in k for k in client_keys)
        assert all(conn.ttl(k) > 0 for k in client_keys)
        run_jobs()
        for r in (a1, a2):
            assert api1.get(f"/jobs/{r.json()['id']}", headers={"X-API-Key": "key-a"}).json()["status"] == "finished"
        started = time.monotonic()
        assert submit(api1, "key-a").status_code == 202 and submit(api1, "key-a").status_code == 202
        assert_capped(submit(api1, "key-a"), 6)
        assert time.monotonic() - started < 5


def test_redis_refused_submissions_use_up_no_place(redis_mode):
    """Were a refused (503) submission's reservation kept, the third accepted job here would be a 429."""
    settings, run_jobs, _ = redis_mode
    with TestClient(create_app(settings(max_queued_jobs=1))) as c:
        assert submit(c).status_code == 202
        assert submit(c).status_code == 503  # queue full: refused before the client's count
        run_jobs()
        assert submit(c).status_code == 202 and submit(c).status_code == 503
        run_jobs()
        assert submit(c).status_code == 202


def test_redis_cap_holds_under_concurrent_submissions(redis_mode):
    """Twelve submissions of one client at once, through two API instances: exactly the cap accepted (never more,
    and no place lost to a race), the other nine refused with 429."""
    from concurrent.futures import ThreadPoolExecutor

    settings, run_jobs, _ = redis_mode
    s = settings(max_jobs_per_client=3, max_queued_jobs=100)
    with TestClient(create_app(s)) as api1, TestClient(create_app(s)) as api2:
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda i: submit(api1 if i % 2 else api2).status_code, range(12)))
        assert sorted(codes) == [202] * 3 + [429] * 9, codes
        run_jobs()
        assert submit(api1).status_code == 202
