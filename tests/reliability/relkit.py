"""Helpers of the reliability tests: a private redis-server (stopped, killed, restarted at will), the API and
workers as subprocesses (with slowed-down jobs, see slowrun.py), and polling through the HTTP API.

Built on scripts/servicekit.py (free ports, processes, waiting, HTTP calls) and tests/app/apikit.py."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from pathlib import Path

import pytest
import servicekit
from apikit import child_env, write_checkpoints
from servicekit import (
    ROOT,
    free_port,
    http,
    kill,
    post_json,
    redis_answers,
    redis_server_command,
    start,
    wait_for,
    wait_until,
)

SLOWRUN = str(Path(__file__).resolve().parent / "slowrun.py")
FINAL = ("finished", "failed")
# Fast recovery for the tests: heartbeats every second, a job counts as abandoned 1 s after a missed one, and an
# idle worker runs RQ's maintenance every second.
FAST_WORKER = ["--heartbeat", "1", "--heartbeat-grace", "1", "--maintenance-interval", "1", "--device", "cpu"]


class RedisServer:
    """A redis-server of our own on a free loopback port: no other test's data, and free to stop and restart."""

    def __init__(self, workdir: Path, appendonly: bool = False):
        self.port = free_port()
        self.command = redis_server_command(self.port, workdir, appendonly)
        if self.command is None:
            pytest.skip("needs redis-server on PATH")
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = self.workdir / "redis.log"
        self.proc = servicekit.spawn(self.command, None, log, append=True, new_session=True)
        wait_for(lambda: redis_answers(self.url), timeout, "redis-server to answer", 0.05, [(self.proc, log)])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the append-only file is flushed); SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)  # alive but silent: connections hang

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@contextlib.contextmanager
def redis_server(workdir: Path, appendonly: bool = False):
    server = RedisServer(workdir, appendonly)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.resume()
        server.stop(signal.SIGKILL)


@contextlib.contextmanager
def api_stack(tmp: Path, queue: str, **settings: str):
    """A private Redis and one API process on tiny checkpoints under `tmp` (the tests start their own workers):
    yields {"base", "server", "env", "tmp", "api"}; the API gets SIGTERM at the end."""
    checkpoints = write_checkpoints(tmp / "checkpoints")
    with redis_server(tmp / "redis") as server:
        port = free_port()
        env = service_env(checkpoints, server.url, QUEUE_NAME=queue, **settings)
        api = spawn("app", env, tmp / "api.log", "--port", str(port))
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(base + "/healthz", api, tmp / "api.log")
            yield {"base": base, "server": server, "env": env, "tmp": tmp, "api": api}
        finally:
            kill(api, signal.SIGTERM)


def spawn(kind: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """`slowrun.py worker|app args` in its own process group (so that a test can SIGKILL it alone)."""
    return start([SLOWRUN, kind, *args], env, log, append=True, new_session=True)


def service_env(checkpoint_dir: Path, redis_url: str | None, delay: float = 0.0, **extra: str) -> dict[str, str]:
    env = child_env(CHECKPOINT_DIR=str(checkpoint_dir), RELIABILITY_JOB_DELAY_S=str(delay), LOG_FORMAT="json", **extra)
    env["PYTHONPATH"] = str(ROOT)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def submit_async(base: str, path: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    status, _, data = post_json(base + path, body, {"Prefer": "respond-async", **(headers or {})})
    assert status == 202, (status, data[:500])
    return json.loads(data)


def job_state(base: str, job_id: str) -> dict:
    status, _, data = http("GET", f"{base}/jobs/{job_id}", timeout=10)
    assert status == 200, (status, data[:500])
    return json.loads(data)


def poll_until_final(base: str, job_id: str, timeout: float) -> dict:
    """What a client does: poll /jobs/{id} until the job is finished or failed (every answer must be a 200)."""
    return wait_for(lambda: (s := job_state(base, job_id))["status"] in FINAL and s, timeout, f"job {job_id} to end")
