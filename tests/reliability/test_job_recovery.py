"""The API brings every job to an end even when no worker is left to do it (Redis mode, a private redis-server,
no worker processes: a worker that dies is simulated by RQ's own calls, as tests/worker does):

- a started job whose worker stopped sending heartbeats, without retries left: failed, "the worker ... stopped";
- a job that waited JOB_TIMEOUT_S in the queue while no worker is alive: failed, 503, "no worker".
A client polling /jobs/{id} sees the end; /jobs/{id}/result answers the error."""

from __future__ import annotations

import time

import pytest
import relkit
from apikit import SPEECH, make_settings, write_checkpoints
from fastapi.testclient import TestClient
from servicekit import wait_for
from workerkit import model_worker, take_job

from app.main import create_app

QUEUE = "vrnn-recovery"


@pytest.fixture
def redis_app(tmp_path):
    """(make an app on a private Redis, that Redis's client, the registered worker) with a worker registered on
    the queue, so that submissions are accepted; nothing runs the jobs."""
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    with relkit.redis_server(tmp_path / "redis") as server:
        conn = server.client()
        dead = model_worker(conn, "doomed", QUEUE, [SPEECH])
        dead.register_birth()

        def make(**overrides):
            values = {"redis_url": server.url, "queue_name": QUEUE, **overrides}
            return TestClient(create_app(make_settings(checkpoints, **values)))

        try:
            yield make, conn, dead
        finally:
            conn.close()


def test_a_started_job_whose_worker_died_fails_when_no_one_else_recovers_it(redis_app):
    from rq.job import JobStatus

    from worker import queueing

    make, conn, dead = redis_app
    with make(job_retries=0) as c:
        job_id = c.post("/generate/speech", json={"seed": 1}, headers={"Prefer": "respond-async"}).json()["id"]
        queue = queueing.make_queue(conn, QUEUE)
        job = take_job(conn, queue)
        dead.prepare_execution(job)  # started on "doomed", which then dies: no heartbeat, no maintenance pass
        job.set_status(JobStatus.STARTED)
        queueing.withdraw_models(conn, "doomed")
        assert c.get(f"/jobs/{job_id}").json()["status"] == "started"
        started = time.monotonic()
        state = wait_for(
            lambda: (s := c.get(f"/jobs/{job_id}").json())["status"] in relkit.FINAL and s, 30, "the job to end"
        )
        assert state["status"] == "failed" and "stopped" in state["error"], state
        assert time.monotonic() - started < 10
        r = c.get(f"/jobs/{job_id}/result")
        assert r.status_code == 500 and "stopped" in r.json()["detail"]


def test_a_queued_job_fails_after_job_timeout_when_no_worker_is_alive(redis_app):
    from worker import queueing

    make, conn, _ = redis_app
    with make(job_timeout_s=1) as c:
        job_id = c.post("/generate/speech", json={"seed": 1}, headers={"Prefer": "respond-async"}).json()["id"]
        assert c.get(f"/jobs/{job_id}").json()["status"] == "queued"  # a worker is alive: it just waits
        time.sleep(1.2)
        assert c.get(f"/jobs/{job_id}").json()["status"] == "queued"  # still alive: waiting longer is fine
        queueing.withdraw_models(conn, "doomed")  # the last worker is gone
        state = c.get(f"/jobs/{job_id}").json()
        assert state["status"] == "failed" and state["error_status"] == 503, state
        assert "no worker" in state["error"] and "JOB_TIMEOUT_S" in state["error"]
        assert conn.llen(queueing.make_queue(conn, QUEUE).key) == 0  # taken off the queue: no worker runs it later
        r = c.get(f"/jobs/{job_id}/result")
        assert r.status_code == 503 and "no worker" in r.json()["detail"]
