"""Poison jobs: a job that kills its worker is not retried blindly onto the next one (worker.queueing.on_abandoned).

- Real processes: an API (Redis mode, JOB_RETRIES=3), three workers and a private redis-server. Whichever worker
  runs the job is SIGKILLed, as a job that takes its worker's memory would have it killed: after the first death
  the job runs once more, after the second it ends `failed` with the reason, and the third worker never runs it.
- In process: the counts in the job's meta, the cleanup with and without our handler (RQ's registry `count()`
  cleans up without it), and the worker refusing, unrun, a job that has killed two workers already."""

from __future__ import annotations

import json
import time

import pytest
import relkit
from apikit import SPEECH
from servicekit import http, kill, wait_for, wait_until
from workerkit import model_worker, take_job

from worker import queueing

QUEUE = "vrnn-poison"
JOB_DELAY_S = 3.0
BODY = {"model": SPEECH, "duration_s": 0.1, "seed": 3}
FAR = 2**40  # a cleanup timestamp after every registry entry's expiry: every started job counts as abandoned


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("poison")
    with relkit.api_stack(tmp, QUEUE, JOB_RETRIES="3", SYNC_WAIT_S="1") as stack:
        yield stack


def running_on(conn, job_id: str) -> str | None:
    if conn.hget(f"rq:job:{job_id}", "status") != b"started":
        return None
    name = conn.hget(f"rq:job:{job_id}", "worker_name")
    return name.decode() if name else None


@pytest.mark.slow
def test_a_job_that_kills_its_workers_fails_after_the_second_and_spares_the_third(stack):
    env = {**stack["env"], "RELIABILITY_JOB_DELAY_S": str(JOB_DELAY_S)}
    names = ("w1", "w2", "w3")
    workers = {
        n: relkit.spawn("worker", env, stack["tmp"] / f"{n}.log", *relkit.FAST_WORKER, "--name", n) for n in names
    }
    conn = stack["server"].client()
    try:
        wait_for(lambda: set(queueing.live_workers(conn, QUEUE)) >= set(names), 90, "three live workers")
        wait_until(stack["base"] + "/readyz", stack["api"], stack["tmp"] / "api.log")
        job_id = relkit.submit_async(stack["base"], "/generate/speech", BODY)["id"]
        killed: list[str] = []
        deadline = time.monotonic() + 90
        while (state := relkit.job_state(stack["base"], job_id))["status"] not in relkit.FINAL:
            assert time.monotonic() < deadline, (killed, state)
            victim = running_on(conn, job_id)
            if victim is not None and victim not in killed:  # the job is running: it "kills" its worker
                time.sleep(0.3)
                kill(workers[victim])
                killed.append(victim)
            time.sleep(0.05)
        # JOB_RETRIES=3 would have let it kill all three workers and then some.
        assert len(killed) == 2, killed
        assert state["status"] == "failed" and state["error_status"] == 500, state
        assert "stopped 2 workers" in state["error"] and "not tried again" in state["error"], state
        status, _, body = http("GET", f"{stack['base']}/jobs/{job_id}/result")
        assert status == 500 and b"stopped 2 workers" in body
        spared = next(n for n in names if n not in killed)
        time.sleep(2)  # a few maintenance passes of the spared worker: nothing re-enqueues the job
        meta = queueing.fetch_job(conn, job_id).get_meta()
        assert meta["attempts"] == 2 and meta["worker_deaths"] == 2 and meta["error"]["type"] == "PoisonJobError"
        assert queueing.fetch_job(conn, job_id).get_status() == "failed"
        assert workers[spared].poll() is None and spared in queueing.live_workers(conn, QUEUE)
        started = [json.loads(line) for line in (stack["tmp"] / f"{spared}.log").read_text().splitlines()]
        assert not [e for e in started if e.get("event") == "job_started" and e.get("job_id") == job_id]
        # The spared worker still serves.
        assert http("GET", stack["base"] + "/readyz")[0] == 200
        other = relkit.submit_async(stack["base"], "/generate/speech", {**BODY, "seed": 4})["id"]
        assert relkit.poll_until_final(stack["base"], other, 60)["status"] == "finished"
    finally:
        for proc in workers.values():
            kill(proc)


def _start_and_die(conn, queue, name: str):
    """A worker takes the next job and begins it (its attempt counted), then sends no heartbeat: as if SIGKILLed."""
    job = take_job(conn, queue)
    dead = model_worker(conn, name, queue.name)
    dead.prepare_execution(job)
    dead._count_attempt(job)
    return job


def test_deaths_are_counted_and_the_second_one_fails_the_job(stack):
    conn = stack["server"].client()
    queue = queueing.make_queue(conn, "poison-guarded")
    job_id = queueing.enqueue(queue, "list_models", {}, 60, 600, 600, retries=3)
    handlers = model_worker(conn, "live", queue.name)._exc_handlers  # what a live worker's maintenance passes RQ

    _start_and_die(conn, queue, "dead-1")
    queue.started_job_registry.cleanup(timestamp=FAR, exception_handlers=handlers)
    job = queueing.fetch_job(conn, job_id)
    assert job.get_status() == "queued" and job.retries_left == 0  # one more attempt, not 3
    assert job.get_meta()["worker_deaths"] == 1

    _start_and_die(conn, queue, "dead-2")
    queue.started_job_registry.cleanup(timestamp=FAR, exception_handlers=[queueing.on_abandoned])  # as the API does
    job = queueing.fetch_job(conn, job_id)
    assert job.get_status() == "failed" and queue.count == 0
    error = queueing.job_error(job)
    assert error["type"] == "PoisonJobError" and error["status"] == 500 and "stopped 2 workers" in error["message"]


def test_a_job_re_enqueued_without_our_handler_is_refused_unrun(stack):
    conn = stack["server"].client()
    queue = queueing.make_queue(conn, "poison-unguarded")
    job_id = queueing.enqueue(queue, "list_models", {}, 60, 600, 600, retries=3)
    for name in ("dead-1", "dead-2"):
        _start_and_die(conn, queue, name)
        queue.started_job_registry.cleanup(timestamp=FAR)  # RQ's own cleanup: blind retries
    job = queueing.fetch_job(conn, job_id)
    assert job.get_status() == "queued" and job.retries_left == 1 and queueing.worker_deaths(job) == 2

    live = model_worker(conn, "live", queue.name)
    live.execute_job(take_job(conn, queue), queue)  # list_models would need a model cache: it must not run at all
    job = queueing.fetch_job(conn, job_id)
    assert job.get_status() == "failed" and job.retries_left == 0 and queue.count == 0
    assert job.get_meta()["attempts"] == 2  # the refusal is no attempt
    error = queueing.job_error(job)
    assert error["type"] == "PoisonJobError" and "stopped 2 workers" in error["message"]
