"""Prometheus metrics of one app instance (its own registry, so that tests can build several apps).

vrnn_http_requests_total{method, route, status}       requests answered, by route template
vrnn_http_request_duration_seconds{method, route}      latency histogram
vrnn_jobs_submitted_total{kind}                        jobs queued by this process
vrnn_job_duration_seconds{kind, status}                run time of finished jobs (embedded: every
                                                       job; Redis mode: each job this process saw end)
vrnn_queue_depth                                       jobs waiting to start, read at scrape time
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Sync calls run jobs (up to SYNC_WAIT_S); the buckets reach past 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _QueueDepth:
    def __init__(self, read: Callable[[], int]):
        self.read = read

    def describe(self):
        yield GaugeMetricFamily("vrnn_queue_depth", "Jobs waiting to start.")

    def collect(self):
        yield GaugeMetricFamily("vrnn_queue_depth", "Jobs waiting to start.", value=self.read())


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
        self.submitted = Counter("vrnn_jobs_submitted", "Jobs queued.", ["kind"], registry=self.registry)
        self.job_duration = Histogram(
            "vrnn_job_duration_seconds",
            "Run time of finished jobs (started to ended).",
            ["kind", "status"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth: Callable[[], int] = lambda: 0
        self.registry.register(_QueueDepth(lambda: self.queue_depth()))

    def observe_job(self, kind: str, status: str, seconds: float) -> None:
        self.job_duration.labels(kind or "unknown", status).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (/jobs/{job_id}, not each id)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
