"""Container health check of the vrnn-service image: exit 0 healthy, 1 unhealthy (Docker's convention).

    python healthcheck.py api      GET http://127.0.0.1:$PORT/healthz answers 200
    python healthcheck.py worker   an RQ worker of this container (same hostname) is registered in Redis
    python healthcheck.py          the role of the process the container runs (`-m app` or `-m worker`)

The worker's registration (RQ's `rq:worker:NAME` key) expires when the worker stops sending heartbeats; while
it runs a job RQ keeps it alive for the job's timeout, so a busy worker stays healthy and a hung or dead one
does not. Standard library only, apart from `rq`/`redis` (installed in the image) for the worker check.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 5.0


# The module each role runs (docker/entrypoint.sh: `api` execs `python -m app`, `worker` `python -m worker`).
ROLE_OF_MODULE = {b"app": "api", b"worker": "worker"}


def detect_role(proc: Path = Path("/proc")) -> str | None:
    """`api` or `worker`, from the command lines of this container's processes (`python -m app` is the api)."""
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-m" and argv[i + 1] in ROLE_OF_MODULE:
                return ROLE_OF_MODULE[argv[i + 1]]
    return None


def check_api() -> str | None:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            if response.status != 200:
                return f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url}: {e}"
    return None


def check_worker() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return "REDIS_URL is not set; a worker cannot run without Redis"
    try:
        from redis import Redis
        from rq import Worker
    except ImportError as e:
        return f"cannot import redis/rq: {e}"
    try:
        connection = Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        connection.ping()
        host = socket.gethostname()
        mine = [w for w in Worker.all(connection=connection) if w.hostname == host]
    except Exception as e:  # any Redis or RQ failure means "not healthy", with the reason
        return f"Redis at {url}: {type(e).__name__}: {e}"
    if not mine:
        return f"no RQ worker of host {host} is registered in Redis (starting, stopped or hung)"
    return None


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else detect_role()
    checks = {"api": check_api, "worker": check_worker}
    if role not in checks:
        print(f"healthcheck: unknown role {role!r} (expected api or worker)", file=sys.stderr)
        return 1
    problem = checks[role]()
    if problem:
        print(f"unhealthy ({role}): {problem}", file=sys.stderr)
        return 1
    print(f"healthy ({role})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
