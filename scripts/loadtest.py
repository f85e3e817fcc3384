"""Load test of the VRNN service: a bounded async HTTP client at several concurrencies, and docs/RELIABILITY.md.

    python scripts/loadtest.py --report docs/RELIABILITY.md          # starts its own stack (below), ~3-5 min
    python scripts/loadtest.py --url http://127.0.0.1:8000 --report /tmp/r.md    # targets a running server
    python scripts/loadtest.py --embedded --concurrency 1,2 --requests 10      # one `python -m app`, no Redis
    python scripts/loadtest.py --from-json /tmp/lt.json --report docs/RELIABILITY.md  # re-render only

Without --url it starts, on loopback only: a private `redis-server` on a free port (no persistence; or the
Redis of --redis-url, whose database is emptied before and after), `--workers` `python -m worker` processes
and one `python -m app` (uvicorn), all on CHECKPOINT_DIR (--checkpoints, default the shipped ones), and stops
them at the end. With --embedded the server runs the jobs itself (EMBEDDED_WORKERS = --workers threads).

Scenarios (--scenarios): `speech2` POST /generate/speech {} (the default 2 s); `speech` the same with
{duration_s: 0.5}; `handwriting` POST
/generate/handwriting {steps: 300}; `score8`, `score40` POST /score with a 0.5 s WAV upload and num_samples
8 or 40. Each runs at each concurrency (--concurrency, default 1,4,16) for --requests requests or --seconds
seconds, whichever ends first (requests in flight then are awaited, each bounded by --timeout), after
--warmup requests that are not counted. Recorded: requests/s (answered requests over the run's wall time),
p50/p95/p99/max latency of the 200 answers, and the other answers by status (503 backpressure on its own;
202 means a synchronous call outlasted SYNC_WAIT_S; `exc` a transport error or client timeout). A sampler
scrapes /metrics every 0.25 s for the queue depth and running jobs.

Everything the client does is bounded: at most --requests per run, at most --seconds of new requests per
run, each request at most --timeout seconds, and the whole run at most --max-total-s (the script stops the
remaining runs and says so in the report).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from servicekit import (
    ROOT,
    THREAD_SETTINGS,
    child_env,
    free_port,
    metric,
    parse_metrics,
    redis_answers,
    redis_server_command,
    spawn,
    stop,
    tone_wav,
    wait_for,
)

QUEUE = "vrnn-loadtest"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
# The service's processes run with its own defaults: no thread settings are passed on (the service sizes its
# PyTorch threads itself; OMP_NUM_THREADS here once hid that it did not).
THREAD_SETTINGS_AND_WORKERS = (*THREAD_SETTINGS, "EMBEDDED_WORKERS", "WORKER_SLOTS")


# Inputs and scenarios --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    kind: str  # "json" or "score"
    body: dict[str, Any]
    # Name the server's default model of this modality in the body (GET /models): "handwriting" keeps the
    # handwriting scenarios on the unconditional line, which a request without text and model no longer is where
    # the text model makes its lines up (model.wordlm).
    default_of: str | None = None

    def resolved(self, models: dict[str, Any]) -> Scenario:
        """This scenario with `default_of`'s default model named in its body, when the server says which."""
        name = (models.get("defaults") or {}).get(self.default_of) if self.default_of else None
        return dataclasses.replace(self, body={**self.body, "model": name}) if name else self


SCENARIOS = {
    "speech2": Scenario("speech2", "Generate speech, 2 s (the default)", "/generate/speech", "json", {}),
    "speech": Scenario(
        "speech", "Generate speech, 0.5 s", "/generate/speech", "json", {"duration_s": 0.5, "temperature": 1.0}
    ),
    "handwriting": Scenario(
        "handwriting",
        "Generate handwriting, 300 steps",
        "/generate/handwriting",
        "json",
        {"steps": 300},
        default_of="handwriting",
    ),
    "score8": Scenario("score8", "Score a 0.5 s WAV, num_samples 8", "/score", "score", {"num_samples": 8}),
    "score40": Scenario("score40", "Score a 0.5 s WAV, num_samples 40", "/score", "score", {"num_samples": 40}),
    # one line of handwriting (issue 11's latency target at concurrency 1); not in the default set
    "handwriting700": Scenario(
        "handwriting700",
        "Generate handwriting, 700 steps",
        "/generate/handwriting",
        "json",
        {"steps": 700},
        default_of="handwriting",
    ),
    # the default handwriting request: a line the text model makes up and writes (model.wordlm), where it can
    "madeup": Scenario("madeup", "Generate handwriting, the default request", "/generate/handwriting", "json", {}),
    # a 40-character line written by the text model (issue 10's latency target); needs a text checkpoint loaded
    "text40": Scenario(
        "text40",
        "Write a 40-character line of text",
        "/generate/handwriting",
        "json",
        {"text": "a quiet harbour at dawn, sparrows argue!", "bias": 1.0},
    ),
}
DEFAULT_SCENARIOS = ("speech2", "speech", "handwriting", "score8", "score40")


async def send(client: httpx.AsyncClient, scenario: Scenario, i: int, audio: bytes) -> httpx.Response:
    headers = {"X-Request-Id": f"load-{scenario.name}-{i}"}
    if scenario.kind == "json":
        return await client.post(scenario.path, json={**scenario.body, "seed": i}, headers=headers)
    data = {k: str(v) for k, v in scenario.body.items()}
    files = {"file": ("tone.wav", audio, "audio/wav")}
    return await client.post(scenario.path, files=files, data=data, headers=headers)


# Statistics -------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between order statistics; None for no values.
    Monotone in q, so p50 <= p95 <= p99 always holds."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class RunResult:
    scenario: str
    concurrency: int
    clients: int = 1  # distinct client addresses the loops used
    requests: int = 0  # answered or failed, counted
    ok: int = 0
    wall_s: float = 0.0
    rps: float = 0.0
    ok_rps: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)  # status (or "exc:Name") -> count, 200 included
    backpressure_503: int = 0
    limited_429: int = 0  # MAX_JOBS_PER_CLIENT: this client has too many jobs in flight
    errors: int = 0  # neither 200 nor 503 nor 429
    max_queue_depth: int | None = None
    max_running: int | None = None
    stopped_by: str = "requests"  # "requests", "seconds" or "budget"
    # where the time goes: CPU milliseconds per answered request, by role (api, workers, redis; client: this
    # process, the HTTP clients); only for a service this script started (it knows the processes)
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system, every thread) used so far per role, from /proc; the client: this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"client": time.process_time()}
    for role, ids in pids.items():
        total = 0.0
        for pid in ids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        out[role] = total
    return out


async def run_one(
    clients: list[httpx.AsyncClient],
    scenario: Scenario,
    concurrency: int,
    requests: int,
    seconds: float,
    audio: bytes,
    seed0: int = 0,
) -> RunResult:
    """`concurrency` loops send requests until `requests` were sent or `seconds` passed (bounded both ways).
    Loop k sends through clients[k % len(clients)]: one client each, or all through one."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    start = time.monotonic()
    deadline = start + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            i = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                r = await send(client, scenario, seed0 + i, audio)
                status = str(r.status_code)
            except httpx.HTTPError as e:
                status = f"exc:{type(e).__name__}"
            if status == "200":
                latencies.append(time.perf_counter() - t0)
            statuses[status] += 1

    await asyncio.gather(*(loop(clients[k % len(clients)]) for k in range(concurrency)))
    wall = time.monotonic() - start
    n = sum(statuses.values())
    res = RunResult(scenario.name, concurrency, requests=n, ok=statuses.get("200", 0), wall_s=round(wall, 3))
    res.rps = round(n / wall, 2) if wall > 0 else 0.0
    res.ok_rps = round(res.ok / wall, 2) if wall > 0 else 0.0
    res.clients = min(len(clients), concurrency)
    for name, q in (("p50_s", 50), ("p95_s", 95), ("p99_s", 99), ("max_s", 100)):
        v = percentile(latencies, q)
        setattr(res, name, None if v is None else round(v, 4))
    res.statuses = dict(sorted(statuses.items()))
    res.backpressure_503 = statuses.get("503", 0)
    res.limited_429 = statuses.get("429", 0)
    res.errors = n - res.ok - res.backpressure_503 - res.limited_429
    res.stopped_by = "requests" if issued >= requests else "seconds"
    return res


# Server metrics ---------------------------------------------------------------------------------------------------


async def sample_gauges(client: httpx.AsyncClient, stop: asyncio.Event, peaks: dict[str, int]) -> None:
    """Scrape /metrics every 0.25 s until `stop`: the largest queue depth and running-job count seen."""
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get("/metrics", timeout=5)
            samples = parse_metrics(r.text)
            for key, name in (("queue", "vrnn_queue_depth"), ("running", "vrnn_jobs_running")):
                value = metric(samples, name)
                if value is not None:
                    peaks[key] = max(peaks.get(key, 0), int(value))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def server_summary(text: str) -> dict[str, Any]:
    """Per job kind: jobs ended, mean run time, failures and retries, from one /metrics scrape."""
    samples = parse_metrics(text)
    kinds: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        lab = dict(labels)
        kind = lab.get("kind")
        if kind is None:
            continue
        row = kinds.setdefault(kind, {"jobs": 0.0, "seconds": 0.0, "failures": 0.0, "retries": 0.0, "submitted": 0.0})
        if name == "vrnn_job_duration_seconds_count":
            row["jobs"] += value
        elif name == "vrnn_job_duration_seconds_sum":
            row["seconds"] += value
        elif name == "vrnn_job_failures_total":
            row["failures"] += value
        elif name == "vrnn_job_retries_total":
            row["retries"] += value
        elif name == "vrnn_jobs_submitted_total":
            row["submitted"] += value
    workers = metric(samples, "vrnn_workers")
    return {"kinds": kinds, "workers": None if workers is None else int(workers)}


# The stack (when no --url) ----------------------------------------------------------------------------------------


class Stack:
    """redis-server (or a given Redis database), workers and the API as subprocesses on loopback."""

    def __init__(
        self,
        checkpoints: Path,
        workers: int,
        embedded: bool,
        redis_url: str | None,
        logs: Path,
        torch_threads: int | None = None,
        batch_max: int | None = None,
        batch_wait_ms: float | None = None,
        slots: int | None = None,
    ):
        self.checkpoints, self.workers, self.embedded = checkpoints, workers, embedded
        self.slots = slots
        self.torch_threads = torch_threads
        self.batch_max, self.batch_wait_ms = batch_max, batch_wait_ms
        self.redis_url, self.logs = redis_url, logs
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.url = ""
        self.description = ""
        self._flush_url: str | None = None

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.procs.append((name, spawn(args, env, self.logs / f"{name}.log")))
        return self.procs[-1][1]

    def _redis(self) -> str:
        import redis

        if self.redis_url is None:
            port = free_port()
            args = redis_server_command(port)
            if args is None:
                raise SystemExit("no redis-server on PATH: pass --redis-url redis://127.0.0.1:6379/11")
            self._start("redis", args, {"PATH": os.environ.get("PATH", "")})
            url = f"redis://127.0.0.1:{port}/0"
            what = f"a private redis-server on 127.0.0.1:{port} (no persistence)"
        else:
            url, what = self.redis_url, f"the Redis at {self.redis_url} (database emptied before and after)"
            self._flush_url = url
        wait_for(lambda: redis_answers(url), 15, f"the Redis at {url} to answer", 0.1, self._watched(), SystemExit)
        if self._flush_url:
            conn = redis.Redis.from_url(url)
            conn.flushdb()
            conn.close()
        self.description = what
        return url

    def __enter__(self) -> Stack:
        try:
            port = free_port()
            common = {"CHECKPOINT_DIR": str(self.checkpoints), "SYNC_WAIT_S": "30", "LOG_LEVEL": "info"}
            if self.torch_threads:
                common["TORCH_THREADS"] = str(self.torch_threads)
            if self.batch_max is not None:
                common["BATCH_MAX"] = str(self.batch_max)
            if self.batch_wait_ms is not None:
                common["BATCH_WAIT_MS"] = str(self.batch_wait_ms)
            if self.slots is not None:
                common["WORKER_SLOTS"] = str(self.slots)
            if self.embedded:
                env = child_env(THREAD_SETTINGS_AND_WORKERS, **common, EMBEDDED_WORKERS=str(self.workers))
                self.description = f"embedded mode: one `python -m app`, {self.workers} job threads"
            else:
                url = self._redis()
                env = child_env(THREAD_SETTINGS_AND_WORKERS, **common, REDIS_URL=url, QUEUE_NAME=QUEUE)
                for k in range(self.workers):
                    self._start(f"worker{k + 1}", [sys.executable, "-m", "worker"], env)
                self.description = f"Redis mode: {self.workers} `python -m worker` processes, {self.description}"
            api = self._start("api", [sys.executable, "-m", "app", "--port", str(port)], env)
            self.url = f"http://127.0.0.1:{port}"
            self._wait_ready(api)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def pids(self) -> dict[str, list[int]]:
        """The started processes by role: api, workers, redis."""
        roles: dict[str, list[int]] = {}
        for name, proc in self.procs:
            roles.setdefault("workers" if name.startswith("worker") else name, []).append(proc.pid)
        return roles

    def _watched(self) -> list[tuple[subprocess.Popen, Path]]:
        return [(proc, self.logs / f"{name}.log") for name, proc in self.procs]

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                models = {"workers": 0} if self.embedded else httpx.get(self.url + "/models", timeout=5).json()
                return self.embedded or models.get("workers", 0) >= self.workers
        return False

    def _wait_ready(self, api: subprocess.Popen, timeout: float = 120.0) -> None:
        """/readyz 200 and (Redis mode) every worker registered, within `timeout` seconds."""
        wait_for(self._ready, timeout, f"the service at {self.url} to be ready", 0.25, self._watched(), SystemExit)

    def __exit__(self, *exc: object) -> None:
        stop(*(proc for _, proc in reversed(self.procs)))
        if self._flush_url:
            import redis

            with contextlib.suppress(redis.exceptions.RedisError):
                conn = redis.Redis.from_url(self._flush_url)
                conn.flushdb()
                conn.close()


# Running everything -----------------------------------------------------------------------------------------------


async def run_all(
    url: str,
    scenarios: list[str],
    concurrencies: list[int],
    requests: int,
    seconds: float,
    warmup: int,
    timeout: float,
    max_total_s: float,
    one_client_run: bool = True,
    pids: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Every scenario at every concurrency against `url` -> {"runs": [RunResult as dict], "server": ..., ...}.

    On a loopback URL each concurrent loop is its own client: it connects from its own address 127.0.0.(k+2),
    so the server's per-client cap (MAX_JOBS_PER_CLIENT, by remote address) sees c clients with one request
    each, as c users would be. Then, with `one_client_run`, the first scenario runs once more at the highest
    concurrency through a single client (one address), which shows that cap at work (429)."""
    audio = tone_wav(0.5)
    runs: list[RunResult] = []
    skipped: list[str] = []
    start = time.monotonic()
    limits = httpx.Limits(max_connections=max(concurrencies) + 2, max_keepalive_connections=max(concurrencies) + 2)
    host = httpx.URL(url).host
    distinct = host in ("127.0.0.1", "localhost")
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits))
        pool = [client]
        if distinct:
            pool = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=url,
                        timeout=timeout,
                        transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{k + 2}"),
                    )
                )
                for k in range(max(concurrencies))
            ]
        models = (await client.get("/models")).json()
        plan = [(name, c, pool) for name in scenarios for c in concurrencies]
        if one_client_run and distinct and max(concurrencies) > 1:
            plan.append((scenarios[0], max(concurrencies), [client]))
        warmed: set[str] = set()
        for name, c, clients in plan:
            scenario = SCENARIOS[name].resolved(models)
            if name not in warmed:
                warmed.add(name)
                for i in range(warmup):  # first calls load caches; not counted
                    with contextlib.suppress(httpx.HTTPError):
                        await send(client, scenario, 10**6 + i, audio)
            if time.monotonic() - start > max_total_s:
                skipped.append(f"{name} at concurrency {c}")
                continue
            left = max(1.0, max_total_s - (time.monotonic() - start))
            stop, peaks = asyncio.Event(), {}
            sampler = asyncio.create_task(sample_gauges(client, stop, peaks))
            cpu0 = cpu_seconds(pids or {})
            res = await run_one(clients, scenario, c, requests, min(seconds, left), audio, seed0=1000 * c)
            stop.set()
            await sampler
            if pids and res.ok:
                used = cpu_seconds(pids)
                res.cpu_ms_per_request = {k: round(1000 * (used[k] - cpu0[k]) / res.ok, 1) for k in used}
            res.max_queue_depth, res.max_running = peaks.get("queue"), peaks.get("running")
            if min(seconds, left) < seconds and res.stopped_by == "seconds":
                res.stopped_by = "budget"
            runs.append(res)
            print(
                f"{name:12s} c={c:<3d} clients={res.clients:<3d} n={res.requests:<4d} {res.rps:7.2f} req/s  "
                f"p50={res.p50_s}  p95={res.p95_s}  p99={res.p99_s}  statuses={res.statuses}"
                + (f"  CPU ms/request {res.cpu_ms_per_request}" if res.cpu_ms_per_request else ""),
                file=sys.stderr,
                flush=True,
            )
        server = server_summary((await client.get("/metrics")).text)
    return {
        "runs": [asdict(r) for r in runs],
        "skipped": skipped,
        "server": server,
        "models": {m["name"]: m.get("modality") for m in models.get("models", [])},
        "defaults": models.get("defaults"),
        "elapsed_s": round(time.monotonic() - start, 1),
    }


# The report -------------------------------------------------------------------------------------------------------


OWN_TESTS = ("test_metrics.py", "test_loadtest.py")


def fault_tests(folder: Path) -> list[dict[str, Any]]:
    """The test files of tests/reliability/ (test_faults*.py first; not this script's and the metrics' own),
    read now: [{file, doc, tests: [(name, doc)]}]."""
    out = []
    paths = sorted(folder.glob("test_*.py"), key=lambda p: (not p.name.startswith("test_faults"), p.name))
    for path in (p for p in paths if p.name not in OWN_TESTS):
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError) as e:
            out.append({"file": path.name, "doc": f"(could not be read: {e})", "tests": []})
            continue
        tests = []
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                tests.append((node.name, (ast.get_docstring(node) or "").strip()))
        out.append({"file": path.name, "doc": (ast.get_docstring(tree) or "").strip(), "tests": tests})
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:.0f}" if v >= 0.1 else f"{1000 * v:.1f}"


def _cpu(used: dict[str, float] | None) -> str:
    return " / ".join(f"{used.get(k, 0):.1f}" for k in ("api", "workers", "redis", "client")) if used else "-"


def _others(statuses: dict[str, int]) -> str:
    rest = {k: v for k, v in statuses.items() if k not in ("200", "503", "429")}
    return ", ".join(f"{k}: {v}" for k, v in rest.items()) or "0"


def render_report(result: dict[str, Any], meta: dict[str, Any], faults: list[dict[str, Any]]) -> str:
    example = faults[0]["file"] if faults else "test_faults.py"
    m = meta["machine_before"]
    m_after = meta["machine_after"]
    lines = [
        "# Reliability: load test and fault tests",
        "",
        "Generated by `scripts/loadtest.py`: do not edit by hand, run the command again.",
        "",
        "## How this was measured",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; the whole run took {result['elapsed_s']} s of load (plus start-up).",
        f"- Machine: {m['cores']} CPU cores ({m['cpu']}), {m['platform']}, Python {m['python']}.",
        f"- Load average (1, 5, 15 min) before: {m['load_avg']}, after: {m_after['load_avg']}. "
        "Other processes shared the machine (another engineer's test runs): numbers from a busy machine.",
        f"- Service: {meta['service']}; checkpoints `{meta['checkpoints']}` "
        f"(defaults: {json.dumps(result.get('defaults'))}).",
        f"- Client: `httpx.AsyncClient`s in one asyncio loop, {meta['requests']} requests per run or "
        f"{meta['seconds']} s (whichever first), {meta['warmup']} uncounted warm-up requests per scenario, "
        f"{meta['timeout']} s per-request timeout. Each request is synchronous (the server waits up to "
        "SYNC_WAIT_S = 30 s for the job, then would answer 202).",
        "- Clients: each concurrent loop is its own client with one request in flight, connecting from its own "
        "loopback address (127.0.0.2, 127.0.0.3, ...), as that many users would; the server's per-client cap "
        "(MAX_JOBS_PER_CLIENT, by remote address) therefore does not limit these runs. The last row of the first "
        "table sends the same concurrency through one client (one address), which that cap limits (429).",
        "- Columns: `req/s` = answers per second of the run's wall time, `200/s` = successful ones; latencies (ms) "
        "are of the 200 answers, linear interpolation between order statistics; `503` = backpressure answers "
        "(queue full or no worker); `429` = per-client cap; `other` = any other status or a transport error "
        "(`202` = a synchronous call outlasted SYNC_WAIT_S); `queue`/`running` = the largest "
        "`vrnn_queue_depth` / `vrnn_jobs_running` seen by scraping /metrics every 0.25 s; CPU = each role's "
        "processes' CPU time (user + system, /proc) over the run per successful answer (only for a stack this "
        "script started).",
        "",
    ]
    for name in meta["scenarios"]:
        sc = SCENARIOS[name]
        body = json.dumps(sc.body) if sc.kind == "json" else f"multipart: 0.5 s WAV + {json.dumps(sc.body)}"
        if sc.default_of:
            body += f", with the server's default {sc.default_of} model as `model` (GET /models)"
        lines += [
            f"## {sc.title}",
            "",
            f"`POST {sc.path}` {body}",
            "",
            "| concurrency | clients | requests | 200 | req/s | 200/s | p50 ms | p95 ms | p99 ms | max ms | 503 | 429 "
            "| other | queue | running | ended by | CPU ms per 200: API / workers / Redis / client |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
            "| --- | --- |",
        ]
        for r in (r for r in result["runs"] if r["scenario"] == name):
            lines.append(
                f"| {r['concurrency']} | {r['clients']} | {r['requests']} | {r['ok']} | {r['rps']:.1f} | "
                f"{r['ok_rps']:.1f} | {_ms(r['p50_s'])} | {_ms(r['p95_s'])} | {_ms(r['p99_s'])} | {_ms(r['max_s'])} | "
                f"{r['backpressure_503']} | {r['limited_429']} | "
                f"{_others(r['statuses'])} | {_fmt(r['max_queue_depth'])} | {_fmt(r['max_running'])} | "
                f"{r['stopped_by']} | {_cpu(r.get('cpu_ms_per_request'))} |"
            )
        lines.append("")
    if result["skipped"]:
        lines += [f"Not run (the --max-total-s budget ran out): {', '.join(result['skipped'])}.", ""]
    server = result["server"]
    lines += [
        *observations(result),
        "## The server's view (/metrics at the end, warm-ups included)",
        "",
        f"Workers (`vrnn_workers`): {server.get('workers')}.",
        "",
        "| job kind | submitted | ended | mean run time ms | failures | retries |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in sorted(server["kinds"].items()):
        mean = _ms(row["seconds"] / row["jobs"]) if row["jobs"] else "-"
        lines.append(
            f"| {kind} | {row['submitted']:.0f} | {row['jobs']:.0f} | {mean} | {row['failures']:.0f} | "
            f"{row['retries']:.0f} |"
        )
    lines += [
        "",
        "The gap between a job's run time and the request's latency is the HTTP and queueing overhead (Redis "
        "mode: a synchronous call blocks on the job's result stream and returns as the result lands).",
        "",
        "## Fault tests (tests/reliability/)",
        "",
        "Run them with `.venv/bin/pytest -q tests/reliability` (all), or one file, e.g. "
        f"`.venv/bin/pytest -q tests/reliability/{example}`. Those in Redis mode start their own redis-server "
        "(redis-server on PATH) or use the one at 127.0.0.1:6379, and are skipped without it. This list is read "
        "from the folder when the report is written (`--from-json` re-renders it without a new load run).",
        "",
    ]
    if not faults:
        lines += ["(No fault tests existed in tests/reliability/ when this report was written.)", ""]
    for f in faults:
        lines += [f"### `{f['file']}`", ""]
        if f["doc"]:
            lines += [f["doc"], ""]
        for test, doc in f["tests"]:
            lines.append(f"- `{test}`" + (f": {' '.join(doc.split())}" if doc else ""))
        lines.append("")
    lines += [
        "Also in tests/reliability/: `test_metrics.py` (the Prometheus metrics, request ids and access log, "
        "embedded and Redis mode with a live `python -m worker`) and `test_loadtest.py` (this script's smoke test "
        "on tiny checkpoints).",
        "",
    ]
    return "\n".join(lines)


def observations(result: dict[str, Any]) -> list[str]:
    """A few sentences computed from the runs: the best throughput per scenario, what more clients did."""
    lines = ["## Observations (computed from the runs above)", ""]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in result["runs"]:
        if r["clients"] == r["concurrency"] or r["concurrency"] == 1:
            by.setdefault(r["scenario"], []).append(r)
    for name, runs in by.items():
        best = max(runs, key=lambda r: r["ok_rps"])
        low, high = min(runs, key=lambda r: r["concurrency"]), max(runs, key=lambda r: r["concurrency"])
        text = (
            f"- {SCENARIOS[name].title}: at most {best['ok_rps']:.1f} successful requests/s "
            f"(concurrency {best['concurrency']})"
        )
        if high is not low and high["p50_s"] and low["p50_s"]:
            text += (
                f"; from concurrency {low['concurrency']} to {high['concurrency']} the median latency went from "
                f"{_ms(low['p50_s'])} to {_ms(high['p50_s'])} ms and throughput from {low['ok_rps']:.1f} to "
                f"{high['ok_rps']:.1f}/s"
            )
            if low["ok_rps"]:
                text += f" ({high['ok_rps'] / low['ok_rps']:.2f}x)"
        lines.append(text + ".")
    totals: Counter[str] = Counter()
    for r in result["runs"]:
        totals.update({"503": r["backpressure_503"], "429": r["limited_429"], "other": r["errors"]})
    lines += [
        f"- Refused or failed answers over all runs: {totals['503']} x 503 (backpressure), {totals['429']} x 429 "
        f"(per-client cap), {totals['other']} other.",
        "- Both cores are shared by the client, the API, Redis and the workers (and, here, other people's tests): "
        "past the two workers, more concurrency mostly queues, and the API and the client "
        "compete with the jobs for CPU, so throughput can fall as latency grows.",
        "",
    ]
    return lines


def _fmt(v: int | None) -> str:
    return "-" if v is None else str(v)


# Command line -----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scripts/loadtest.py",
        description=__doc__.split("\n\n", 2)[2].split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="target this running service instead of starting one")
    p.add_argument("--embedded", action="store_true", help="start the API in embedded mode (no Redis, no workers)")
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="CHECKPOINT_DIR of what it starts")
    p.add_argument("--workers", type=int, default=2, help="worker processes (embedded: job threads); default 2")
    p.add_argument(
        "--torch-threads",
        type=int,
        metavar="N",
        help="TORCH_THREADS of the processes it starts (default: the service's own sizing; e.g. the core count "
        "to measure workers that each take every core)",
    )
    p.add_argument(
        "--batch-max",
        type=int,
        metavar="N",
        help="BATCH_MAX of the API it starts (embedded mode: rows per step of a model's sampling engine; 0 or 1: "
        "no batching; default: the service's own, or the environment's)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        metavar="MS",
        help="BATCH_WAIT_MS of the API it starts (default: the service's own, or the environment's)",
    )
    p.add_argument(
        "--slots",
        type=int,
        metavar="N",
        help="WORKER_SLOTS of the workers it starts (Redis mode: jobs at once per worker process, whose concurrent "
        "generation shares the sampling engines; default: the worker's own, 1)",
    )
    p.add_argument(
        "--redis-url",
        help=f"use this Redis database (emptied before and after, e.g. {DEFAULT_REDIS_URL}) instead of "
        "starting a private redis-server",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated: " + ", ".join(SCENARIOS) + f" (default: {','.join(DEFAULT_SCENARIOS)})",
    )
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrencies (default 1,4,16)")
    p.add_argument("--requests", type=int, default=200, help="requests per run at most (default 200)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of new requests per run at most (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="uncounted requests per scenario first (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--max-total-s", type=float, default=240.0, help="budget for all runs (default 240 s)")
    p.add_argument("--report", type=Path, help="write the Markdown report here (e.g. docs/RELIABILITY.md)")
    p.add_argument("--json", type=Path, help="write the raw results as JSON here")
    p.add_argument(
        "--from-json",
        type=Path,
        help="no load: re-render --report from the JSON of an earlier run (refreshes the fault-test list)",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not concurrencies or min(concurrencies) < 1 or args.requests < 1 or args.seconds <= 0:
        raise SystemExit("concurrencies, --requests and --seconds must be positive")
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        if args.report:
            args.report.write_text(render_report(result, result["meta"], fault_tests(ROOT / "tests" / "reliability")))
        return result
    before = machine()
    with contextlib.ExitStack() as stack:
        pids = None
        if args.url:
            url, service = args.url.rstrip("/"), f"the running service at {args.url}"
        else:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vrnn-loadtest-")))
            s = stack.enter_context(
                Stack(
                    args.checkpoints,
                    args.workers,
                    args.embedded,
                    args.redis_url,
                    logs,
                    args.torch_threads,
                    args.batch_max,
                    args.batch_wait_ms,
                    args.slots,
                )
            )
            url, service, pids = s.url, s.description, s.pids()
            if args.torch_threads:
                service += f"; TORCH_THREADS={args.torch_threads} in every process"
            if args.batch_max is not None:
                service += f"; BATCH_MAX={args.batch_max}"
            if args.batch_wait_ms is not None:
                service += f"; BATCH_WAIT_MS={args.batch_wait_ms:g}"
            if args.slots is not None:
                service += f"; WORKER_SLOTS={args.slots}"
        result = asyncio.run(
            run_all(
                url,
                scenarios,
                concurrencies,
                args.requests,
                args.seconds,
                args.warmup,
                args.timeout,
                args.max_total_s,
                pids=pids,
            )
        )
    meta = {
        "command": shlex.join(["python", "scripts/loadtest.py", *argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine_before": before,
        "machine_after": machine(),
        "service": service,
        "checkpoints": _rel(args.checkpoints) if not args.url else "(the server's)",
        "scenarios": scenarios,
        "requests": args.requests,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "timeout": args.timeout,
    }
    result["meta"] = meta
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render_report(result, meta, fault_tests(ROOT / "tests" / "reliability")))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(ROOT))
    return str(path)


if __name__ == "__main__":
    main()
