"""Prometheus metrics, request ids and the access log of one app instance (its own registry, so that tests
can build several apps).

vrnn_http_requests_total{method, route, status}       requests answered, by route template
vrnn_http_request_duration_seconds{method, route}      latency histogram
vrnn_http_requests_in_progress                         requests being answered now
vrnn_jobs_submitted_total{kind}                        jobs queued by this process
vrnn_job_duration_seconds{kind, status}                run time of finished jobs (embedded: every
                                                       job; Redis mode: each job this process saw end)
vrnn_job_failures_total{kind}                          failed jobs among those (any cause: bad input too)
vrnn_job_retries_total{kind}                           extra attempts those jobs took (Redis mode; RQ's
                                                       Retry: a worker error or a worker that died)
vrnn_queue_depth                                       jobs waiting to start        } read from the backend
vrnn_jobs_running                                      jobs started, not ended      } (RQ's registries in
vrnn_jobs_failed_stored                                failed jobs still kept       }  Redis, or the thread
vrnn_workers                                           job runners: live RQ workers }  pool) at scrape time
                                                       on the queue, or the pool's threads
vrnn_backend_up                                        1 when those reads worked (0: Redis unreachable)
vrnn_batch_rows{model}                                 histogram: rows (requests) in each step of the model's
                                                       sampling engine (embedded mode, BATCH_MAX > 1)
vrnn_batch_queue_wait_seconds{model}                   histogram: a generation request's wait for its row
vrnn_batch_steps_total{model}                          steps the engine ran (read from the backend's
                                                       `batching()` at scrape time; none without batching)

Every request gets an id: the client's `X-Request-Id` when it is a short token, else a fresh one. It is sent
back in `X-Request-Id`, is in every line of the `app.access` log (one JSON object per request, with the job id
of the answer when there is one), and in Redis mode goes into the job's meta (`request_id`), which the
worker's log lines carry.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.logs import JsonFormatter

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Sync calls run jobs (up to SYNC_WAIT_S); the buckets reach past 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # anything else is replaced, never logged
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vrnn_request_id", default=None)

access_log = logging.getLogger("app.access")


def current_request_id() -> str | None:
    """The id of the request being answered (also in the threads it runs work in), or None outside one."""
    return _request_id.get()


def request_id_from(value: str | None) -> str:
    """The client's X-Request-Id when it is a short token of safe characters, else a fresh random id."""
    if value and _REQUEST_ID_OK.match(value):
        return value
    return uuid.uuid4().hex


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # rows per step (BATCH_MAX is at most 256)


class _ScrapeTime:
    """What is read from the backend at scrape time: gauges (a backend that cannot answer gives vrnn_backend_up
    0), then the sampling engines' batch sizes (rows per step) and queue waits, per model, from the backend's
    `batching()` (embedded mode with BATCH_MAX > 1; nothing otherwise)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # no describe: the registry must not read the backend when the collector is registered

    def collect(self):
        yield from self._gauges()
        yield from self._batching()

    def _gauges(self):
        m = self.metrics
        up = 1
        try:
            depth = int(m.queue_depth())
        except Exception:
            depth, up = 0, 0
        values = {"running": 0, "failed": 0, "workers": 0}
        if m.backend is not None:
            try:
                values.update(m.backend.counts())
            except Exception:
                up = 0
        yield GaugeMetricFamily("vrnn_queue_depth", "Jobs waiting to start.", value=depth)
        yield GaugeMetricFamily("vrnn_jobs_running", "Jobs started and not ended.", value=values["running"])
        yield GaugeMetricFamily(
            "vrnn_jobs_failed_stored", "Failed jobs still kept (FAILURE_TTL_S).", value=values["failed"]
        )
        yield GaugeMetricFamily(
            "vrnn_workers",
            "Job runners: live RQ workers on the queue (Redis mode) or the thread pool's size (embedded).",
            value=values["workers"],
        )
        yield GaugeMetricFamily("vrnn_backend_up", "1 when the job backend answered this scrape.", value=up)

    def _batching(self):
        backend = self.metrics.backend
        try:
            engines = backend.batching() if backend is not None and hasattr(backend, "batching") else {}
        except Exception:
            engines = {}
        rows = HistogramMetricFamily(
            "vrnn_batch_rows", "Rows (requests) in each step of a model's sampling engine.", labels=["model"]
        )
        waits = HistogramMetricFamily(
            "vrnn_batch_queue_wait_seconds",
            "Time a generation request waited for a row in its model's sampling engine.",
            labels=["model"],
        )
        steps = CounterMetricFamily("vrnn_batch_steps", "Steps run by a model's sampling engine.", labels=["model"])
        for name, st in sorted(engines.items()):
            sizes = {int(k): int(v) for k, v in st["batch_sizes"].items()}
            row_buckets = [(f"{bound:.1f}", sum(v for k, v in sizes.items() if k <= bound)) for bound in BATCH_BUCKETS]
            rows.add_metric(
                [name],
                [*row_buckets, ("+Inf", sum(sizes.values()))],
                sum_value=float(sum(k * v for k, v in sizes.items())),
            )
            cumulative, wait_buckets = 0, []
            for bound, count in zip(st["wait_buckets_s"], st["wait_counts"], strict=False):
                cumulative += int(count)
                wait_buckets.append((str(float(bound)), cumulative))
            wait_buckets.append(("+Inf", sum(int(c) for c in st["wait_counts"])))
            waits.add_metric([name], wait_buckets, sum_value=float(st["wait_sum_s"]))
            steps.add_metric([name], float(st["steps"]))
        yield rows
        yield waits
        yield steps


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vrnn_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "vrnn_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "vrnn_http_requests_in_progress", "HTTP requests being answered now.", registry=self.registry
        )
        self.submitted = Counter("vrnn_jobs_submitted", "Jobs queued.", ["kind"], registry=self.registry)
        self.job_duration = Histogram(
            "vrnn_job_duration_seconds",
            "Run time of finished jobs (started to ended).",
            ["kind", "status"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.job_failures = Counter(
            "vrnn_job_failures", "Jobs that ended failed (bad input included).", ["kind"], registry=self.registry
        )
        self.job_retries = Counter(
            "vrnn_job_retries", "Extra attempts of ended jobs (RQ retries).", ["kind"], registry=self.registry
        )
        self.queue_depth: Callable[[], int] = lambda: 0
        self.backend: Any = None
        self.registry.register(_ScrapeTime(self))

    def bind(self, backend: Any) -> None:
        """Read the scrape-time gauges from this backend (called once it has started)."""
        self.backend = backend
        self.queue_depth = backend.queue_depth

    def observe_job(self, kind: str, status: str, seconds: float, retries: int = 0) -> None:
        kind = kind or "unknown"
        self.job_duration.labels(kind, status).observe(max(0.0, seconds))
        if status == "failed":
            self.job_failures.labels(kind).inc()
        if retries > 0:
            self.job_retries.labels(kind).inc(retries)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class JsonLogFormatter(JsonFormatter):
    """One JSON object per line: ts, level, logger, msg, and the request's fields when there are."""

    FIELDS = ("request_id", "method", "route", "path", "status", "duration_s", "job_id", "client")

    def __init__(self) -> None:
        super().__init__(self.FIELDS, request_id=current_request_id)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a line is written (test runners swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_access_log(level: str = "info") -> None:
    """Send the `app.access` log (one JSON line per request) to stderr, once per process."""
    if not any(getattr(h, "_vrnn_access", False) for h in access_log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonLogFormatter())
        handler._vrnn_access = True  # type: ignore[attr-defined]
        access_log.addHandler(handler)
        access_log.propagate = False
    access_log.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO")


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (/jobs/{job_id}, not each id), gives it a
    request id (X-Request-Id, in and out) and writes its access log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, job_id = time.perf_counter(), 500, None
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        request_id = request_id_from(given)
        token = _request_id.set(request_id)

        async def send_status(message: Message) -> None:
            nonlocal status, job_id
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                job_id = headers.get("x-job-id")
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                fields = {
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_s": round(elapsed, 4),
                }
                if job_id:
                    fields["job_id"] = job_id
                access_log.info("%s %s %s", method, scope.get("path", ""), status, extra=fields)
            _request_id.reset(token)
