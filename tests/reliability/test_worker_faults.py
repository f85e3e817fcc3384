"""Workers that die or stop, seen through the HTTP API: a uvicorn (`python -m app`, Redis mode), `python -m worker`
processes whose jobs take a few seconds (slowrun.py), and a private redis-server.

- SIGKILL the worker running a job: the job runs again on the other worker and finishes.
- SIGTERM a worker during a job: warm shutdown, the job finishes, the worker exits 0.
- SIGKILL the only worker: the job ends `failed` with a clear reason once JOB_TIMEOUT_S has passed, and a client
  polling /jobs/{id} sees that final state (the API itself recovers jobs when no worker is left to)."""

from __future__ import annotations

import signal
import time

import pytest
import relkit
from apikit import SPEECH
from servicekit import http, kill, wait_for, wait_until

pytestmark = pytest.mark.slow

QUEUE = "vrnn-faults"
JOB_DELAY_S = 3.0
JOB_TIMEOUT_S = 4
BODY = {"model": SPEECH, "duration_s": 0.1, "seed": 3}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A private Redis and one API process; the tests start their own workers."""
    tmp = tmp_path_factory.mktemp("faults")
    with relkit.api_stack(tmp, QUEUE, JOB_TIMEOUT_S=str(JOB_TIMEOUT_S), SYNC_WAIT_S="1") as stack:
        yield stack


def start_worker(stack, name: str):
    env = {**stack["env"], "RELIABILITY_JOB_DELAY_S": str(JOB_DELAY_S)}
    return relkit.spawn("worker", env, stack["tmp"] / f"{name}.log", *relkit.FAST_WORKER, "--name", name)


def live(stack) -> set[str]:
    from worker import queueing

    return set(queueing.live_workers(stack["server"].client(), QUEUE))


def running_on(stack, job_id: str) -> str | None:
    """The worker running the job (RQ's job hash), once it has started."""
    conn = stack["server"].client()
    if conn.hget(f"rq:job:{job_id}", "status") != b"started":
        return None
    name = conn.hget(f"rq:job:{job_id}", "worker_name")
    return name.decode() if name else None


def test_a_job_of_a_sigkilled_worker_finishes_on_the_other_and_sigterm_is_warm(stack):
    workers = {name: start_worker(stack, name) for name in ("w1", "w2")}
    try:
        wait_for(lambda: live(stack) >= {"w1", "w2"}, 60, "two live workers")
        wait_until(stack["base"] + "/readyz", stack["api"], stack["tmp"] / "api.log")
        job = relkit.submit_async(stack["base"], "/generate/speech", BODY)
        victim = wait_for(lambda: running_on(stack, job["id"]), 30, "the job to start")
        survivor = next(n for n in workers if n != victim)
        time.sleep(0.5)  # well inside the job
        kill(workers[victim])
        killed_at = time.monotonic()
        state = relkit.poll_until_final(stack["base"], job["id"], 60)
        recovered_s = time.monotonic() - killed_at
        assert state["status"] == "finished", state
        status, headers, body = http("GET", f"{stack['base']}/jobs/{job['id']}/result")
        assert status == 200 and body[:4] == b"RIFF"
        assert {k.lower(): v for k, v in headers.items()}["x-worker-pid"] == str(workers[survivor].pid)
        print(f"SIGKILL -> job finished on the other worker in {recovered_s:.1f} s (job itself: {JOB_DELAY_S} s)")
        assert recovered_s < 20

        # Warm shutdown: SIGTERM while a job runs; the job finishes, then the worker exits 0.
        job = relkit.submit_async(stack["base"], "/generate/speech", {**BODY, "seed": 4})
        wait_for(lambda: running_on(stack, job["id"]) == survivor, 30, "the survivor to start the job")
        workers[survivor].send_signal(signal.SIGTERM)
        assert workers[survivor].wait(timeout=30) == 0
        assert relkit.poll_until_final(stack["base"], job["id"], 10)["status"] == "finished"
        assert http("GET", f"{stack['base']}/jobs/{job['id']}/result")[0] == 200
    finally:
        for proc in workers.values():
            kill(proc)


def test_with_no_worker_left_the_job_fails_with_a_clear_reason(stack):
    worker = start_worker(stack, "only")
    try:
        wait_for(lambda: "only" in live(stack), 60, "the worker")
        wait_until(stack["base"] + "/readyz", stack["api"], stack["tmp"] / "api.log")
        job = relkit.submit_async(stack["base"], "/generate/speech", BODY)
        wait_for(lambda: running_on(stack, job["id"]), 30, "the job to start")
        kill(worker)
        killed_at = time.monotonic()
        state = relkit.poll_until_final(stack["base"], job["id"], 60)
        failed_s = time.monotonic() - killed_at
    finally:
        kill(worker)
    assert state["status"] == "failed", state
    # Retried once (JOB_RETRIES=1) after the worker's heartbeats stopped, then nobody took it: failed.
    assert state["error_status"] == 503 and "no worker" in state["error"] and "JOB_TIMEOUT_S" in state["error"]
    status, _, body = http("GET", f"{stack['base']}/jobs/{job['id']}/result")
    assert status == 503 and b"no worker" in body
    print(f"SIGKILL of the only worker -> job failed in {failed_s:.1f} s (JOB_TIMEOUT_S={JOB_TIMEOUT_S})")
    assert JOB_TIMEOUT_S <= failed_s < 30
    ready = http("GET", stack["base"] + "/readyz")
    assert ready[0] == 503
