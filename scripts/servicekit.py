"""Running the service's processes on loopback: free ports, their environment, starting and stopping them, waiting
until they answer, a private redis-server, stdlib HTTP calls, the samples of a /metrics page, and a WAV tone to
send them.

The one copy of these helpers for scripts/loadtest.py and the tests. It lives in scripts/ because users run the
load test as `python scripts/loadtest.py` from the repository root, which puts scripts/ (not the root, not tests/)
first on sys.path: the script imports this module as `servicekit` without installing anything. The tests import
the same module (tests/conftest.py puts scripts/ on sys.path; a subprocess that imports tests/ helpers gets it on
its PYTHONPATH). Only the standard library: redis-py is imported inside redis_answers, prometheus_client inside
parse_metrics."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# The service's settings that never leak from this machine's environment into a child (child_env).
SERVICE_SETTINGS = ("REDIS_URL", "API_KEYS", "CHECKPOINT_DIR", "QUEUE_NAME", "HOST", "PORT")
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_THREADS")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """The environment of a service subprocess: this one's less SERVICE_SETTINGS and `drop`, unbuffered output and
    matplotlib's Agg backend, then `extra`."""
    gone = {*SERVICE_SETTINGS, *drop}
    env = {k: v for k, v in os.environ.items() if k not in gone}
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **extra)
    return env


def spawn(
    argv: list[str], env: dict[str, str] | None, log: Path | None, append: bool = False, new_session: bool = False
) -> subprocess.Popen:
    """`argv` in the repository root, stdout and stderr into `log` (None: discarded); `new_session`: its own
    process group (kill() it alone, and Ctrl-C does not reach it)."""
    with open(log, "ab" if append else "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session
        )


def start(args: list[str], env: dict[str, str] | None, log: Path | None, **kw: bool) -> subprocess.Popen:
    """`python args` (this interpreter) as spawn() runs it."""
    return spawn([sys.executable, *args], env, log, **kw)


def stop(*procs: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM to each that runs, all at once; then wait for each, SIGKILL after `timeout` seconds."""
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        proc.terminate()
    for proc in alive:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    """`sig` to the process group of a process spawned with new_session, and wait for it."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-4000:]}" if log and log.exists() else ""


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    step: float = 0.1,
    watch: Iterable[tuple[subprocess.Popen, Path | None]] = (),
    error: type[BaseException] = AssertionError,
) -> T:
    """Call `predicate` every `step` seconds until it returns something true, and return that. Raise `error`
    (SystemExit in a script) after `timeout` seconds, or as soon as a process of `watch` exits, with its log."""
    watch = list(watch)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in watch:
            if proc.poll() is not None:
                args = shlex.join(map(str, proc.args))
                raise error(f"`{args}` exited with {proc.returncode} while waiting for {what}{_tail(log)}")
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise error(f"timed out after {timeout:g} s waiting for {what}" + "".join(_tail(log) for _, log in watch))


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=60.0):
    """-> (status, headers, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, obj: dict[str, Any], headers: dict[str, str] | None = None):
    return http("POST", url, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def answers(url: str, status: int = 200) -> bool:
    """GET `url` answers `status` (nothing listening yet: False)."""
    try:
        return http("GET", url, timeout=5)[0] == status
    except OSError:
        return False


def wait_until(url: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 90.0, status: int = 200):
    """Poll `url` until it answers `status`; fail with the server's log if `proc` exits or it takes too long."""
    watch = [(proc, log)] if proc is not None else []
    wait_for(lambda: answers(url, status), timeout, f"{url} to answer {status}", step=0.2, watch=watch)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def redis_server_command(port: int, workdir: Path | None = None, appendonly: bool = False) -> list[str] | None:
    """A loopback `redis-server` on `port`, no snapshots; None without redis-server on PATH."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    args = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
    ]
    return [*args, "--daemonize", "no", "--protected-mode", "yes", *(["--dir", str(workdir)] if workdir else [])]


def redis_answers(url: str) -> bool:
    """The Redis at `url` answers PING (not while it is still loading its data)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
    finally:
        client.close()


def tone_wav(seconds: float = 0.25, rate: int = 16000) -> bytes:
    """A 16-bit mono WAV file's bytes: a 220 Hz tone with a faint overtone, `seconds` long."""
    times = [i / rate for i in range(round(seconds * rate))]
    pcm = [
        round(32767 * (0.3 * math.sin(2 * math.pi * 220 * t) + 0.01 * math.cos(2 * math.pi * 1234 * t))) for t in times
    ]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(pcm)}h", *pcm))
    return buf.getvalue()
