"""Helpers of the reliability tests: a private redis-server (stopped, killed, restarted at will), the API and
workers as subprocesses (with slowed-down jobs, see slowrun.py), and polling through the HTTP API.

Built on tests/app/apikit.py (free ports, child environments, HTTP calls) and tests/worker/workerkit.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The API tests' and the worker tests' helpers (apikit, workerkit) are imported by bare name.
for _helpers in ("app", "worker"):
    if str(Path(__file__).resolve().parents[1] / _helpers) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / _helpers))

from apikit import ROOT, child_env, free_port, http, post_json  # noqa: E402

SLOWRUN = str(Path(__file__).resolve().parent / "slowrun.py")
FINAL = ("finished", "failed")
# Fast recovery for the tests: heartbeats every second, a job counts as abandoned 1 s after a missed one, and an
# idle worker runs RQ's maintenance every second.
FAST_WORKER = ["--heartbeat", "1", "--heartbeat-grace", "1", "--maintenance-interval", "1", "--device", "cpu"]


class RedisServer:
    """A redis-server of our own on a free loopback port: no other test's data, and free to stop and restart."""

    def __init__(self, workdir: Path, appendonly: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs redis-server on PATH")
        self.binary, self.workdir, self.appendonly = binary, workdir, appendonly
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no", "--protected-mode", "yes"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.RedisError):
                client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start:\n{(self.workdir / 'redis.log').read_text()[-2000:]}")

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
    from apikit import wait_until, write_checkpoints

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
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, SLOWRUN, kind, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def service_env(checkpoint_dir: Path, redis_url: str | None, delay: float = 0.0, **extra: str) -> dict[str, str]:
    env = child_env(CHECKPOINT_DIR=str(checkpoint_dir), RELIABILITY_JOB_DELAY_S=str(delay), LOG_FORMAT="json", **extra)
    env["PYTHONPATH"] = str(ROOT)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def kill(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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
