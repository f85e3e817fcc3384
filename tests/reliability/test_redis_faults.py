"""Redis stopping, hanging and restarting under a running service (`python -m app` in Redis mode, a real
`python -m worker`, a private redis-server):

- Redis down (killed) or hung (SIGSTOP): the API answers 503 with Retry-After within REDIS_TIMEOUT_S (never a 500,
  never a hang); /healthz and /models still answer.
- Redis back: the worker reconnects and registers again by itself, /readyz is 200 again and jobs run.
- Without persistence a restarted Redis has forgotten every job: their ids are 404. With persistence (appendonly
  yes) a job accepted before the restart still finishes after it."""

from __future__ import annotations

import json
import signal
import time

import pytest
import relkit
from apikit import SPEECH, write_checkpoints
from servicekit import free_port, http, kill, post_json, wait_for, wait_until

pytestmark = pytest.mark.slow

QUEUE = "vrnn-redis-faults"
BODY = {"model": SPEECH, "duration_s": 0.1, "seed": 5}
REDIS_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("redis-faults-checkpoints"))


def start_service(checkpoints, server, tmp, delay: float = 0.0):
    env = relkit.service_env(checkpoints, server.url, QUEUE_NAME=QUEUE, REDIS_TIMEOUT_S=str(REDIS_TIMEOUT_S))
    port = free_port()
    api = relkit.spawn("app", env, tmp / "api.log", "--port", str(port))
    worker = relkit.spawn(
        "worker", {**env, "RELIABILITY_JOB_DELAY_S": str(delay)}, tmp / "worker.log", *relkit.FAST_WORKER
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(base + "/readyz", api, tmp / "api.log", timeout=60)
    return base, api, worker


def assert_503_quickly(state: str, base: str, calls: list[tuple[str, str, dict | None]]) -> None:
    """Each call answers 503 with Retry-After and a reason, within a few REDIS_TIMEOUT_S (never a 500 or a hang)."""
    for method, path, body in calls:
        started = time.monotonic()
        status, headers, data = http(method, base + path, timeout=30) if body is None else post_json(base + path, body)
        elapsed = time.monotonic() - started
        assert status == 503, (status, data[:300])
        assert "retry-after" in {k.lower() for k in headers}
        answer = json.loads(data)
        assert answer.get("detail") or answer.get("reasons"), answer
        assert elapsed < 3 * REDIS_TIMEOUT_S + 2, elapsed
        print(f"Redis {state}: {method} {path} -> {status} in {elapsed * 1000:.0f} ms")


def test_redis_down_or_hung_is_503_and_the_service_recovers_by_itself(checkpoints, tmp_path):
    with relkit.redis_server(tmp_path / "redis") as server:
        base, api, worker = start_service(checkpoints, server, tmp_path)
        try:
            status, headers, _ = post_json(base + "/generate/speech", BODY)
            assert status == 200
            old_job = {k.lower(): v for k, v in headers.items()}["x-job-id"]

            # Hung: the process is alive but answers nothing. Every call gives up after REDIS_TIMEOUT_S.
            calls = [("GET", "/readyz", None), ("POST", "/generate/speech", BODY), ("GET", f"/jobs/{old_job}", None)]
            server.pause()
            try:
                assert_503_quickly("hung", base, calls)
            finally:
                server.resume()
            wait_for(lambda: http("GET", base + "/readyz")[0] == 200, 30, "ready again after the hang")

            # Down: connections are refused at once.
            server.stop(signal.SIGKILL)
            assert_503_quickly("down", base, [*calls, ("GET", f"/jobs/{old_job}/result", None)])
            assert "unreachable" in json.loads(http("GET", base + "/readyz")[2])["reasons"][0]
            assert http("GET", base + "/healthz")[0] == 200
            assert http("GET", base + "/models")[0] == 200  # read from CHECKPOINT_DIR

            # Back (empty: no persistence): the worker reconnects and registers again; the API needs no restart.
            server.start()
            back = time.monotonic()
            wait_for(lambda: http("GET", base + "/readyz")[0] == 200, 60, "ready after the restart", 0.05)
            print(f"Redis back -> /readyz 200 in {time.monotonic() - back:.2f} s")
            status, _, body = post_json(base + "/generate/speech", BODY)
            assert status == 200, body[:300]
            print(f"Redis back -> first job done {time.monotonic() - back:.2f} s after the restart")
            # Without persistence the jobs from before the restart are gone: an unknown job, 404 (not a 500).
            status, _, body = http("GET", f"{base}/jobs/{old_job}")
            assert status == 404 and b"never submitted" in body
            assert api.poll() is None and worker.poll() is None
        finally:
            kill(worker)
            kill(api, signal.SIGTERM)


def test_with_persistence_accepted_jobs_survive_a_redis_restart(checkpoints, tmp_path):
    with relkit.redis_server(tmp_path / "redis", appendonly=True) as server:
        base, api, worker = start_service(checkpoints, server, tmp_path, delay=2.0)
        try:
            running = relkit.submit_async(base, "/generate/speech", BODY)
            waiting = relkit.submit_async(base, "/generate/speech", {**BODY, "seed": 6})
            wait_for(lambda: relkit.job_state(base, running["id"])["status"] == "started", 30, "a running job")
            assert relkit.job_state(base, waiting["id"])["status"] == "queued"
            server.stop(signal.SIGTERM)  # `docker compose restart redis`: the append-only file is flushed
            server.start()
            restarted = time.monotonic()
            for job in (running, waiting):
                state = relkit.poll_until_final(base, job["id"], 60)
                assert state["status"] == "finished", state
                status, _, body = http("GET", f"{base}/jobs/{job['id']}/result")
                assert status == 200 and body[:4] == b"RIFF"
            print(f"persistent Redis restarted -> both jobs finished {time.monotonic() - restarted:.1f} s later")
            assert worker.poll() is None
        finally:
            kill(worker)
            kill(api, signal.SIGTERM)
