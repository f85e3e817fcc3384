"""The job backend interface: what routes may ask of a job runner, whichever runs the jobs.

A job is a call of one of worker.jobs' functions (`kind`, one of worker.contract.KINDS) on a JSON-safe params
dict; its result is the dict docs/SERVICE.md describes.
A job's state, as `status()` gives it (times are ISO 8601 UTC, None until they happen):

    {"id", "kind", "status": "queued" | "started" | "finished" | "failed",
     "enqueued_at", "started_at", "ended_at", "error": None | message, "error_status": None | HTTP status}

`error_status` is what the synchronous call would have answered: worker.contract.ERROR_STATUS gives each error's
(422 bad input, 413 too large, 415 wrong kind of upload, 404 unknown model, 504 a job that outran JOB_TIMEOUT_S,
503 a job no worker took while none was alive), 500 anything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

JobObserver = Callable[[str, str, float], None]  # (kind, final status, seconds running): feeds the metrics


class BackendError(Exception):
    """Base of the errors a backend raises; app/errors.py maps each to an HTTP answer."""


class UnknownJobError(BackendError, LookupError):
    """No such job id (never existed, or its result expired): 404."""


class QueueFullError(BackendError):
    """MAX_QUEUED_JOBS are waiting already: 503 + Retry-After."""


class ClientLimitError(BackendError):
    """This client has MAX_JOBS_PER_CLIENT jobs queued or running already: 429 + Retry-After."""


class UnavailableError(BackendError):
    """No one can run jobs now (Redis unreachable, no live worker, models not loaded): 503 + Retry-After."""


class JobPendingError(BackendError):
    """The job has not finished yet (asked for its result): 202 + Retry-After."""

    def __init__(self, info: dict[str, Any]):
        super().__init__(f"job {info['id']} is {info['status']}")
        self.info = info


class JobFailedError(BackendError):
    """The job raised: `status_code` is 422 (bad input), 413, 404 (unknown model) or 500; `message` says why."""

    def __init__(self, status_code: int, message: str, job_id: str):
        super().__init__(message)
        self.status_code, self.message, self.job_id = status_code, message, job_id


class Backend(Protocol):
    mode: str  # "embedded" or "redis"

    def start(self) -> None:
        """Called once when the app starts (embedded: loads the checkpoints)."""

    def close(self) -> None:
        """Called once when the app stops."""

    def submit(self, kind: str, params: dict[str, Any], client: str | None = None) -> str:
        """Queue a job -> its id. `client` identifies the submitter for MAX_JOBS_PER_CLIENT (None: not capped).
        Raises QueueFullError, ClientLimitError or UnavailableError."""

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's state (see the module docstring). Raises UnknownJobError."""

    def result(self, job_id: str) -> dict[str, Any]:
        """A finished job's result dict. Raises UnknownJobError, JobPendingError or JobFailedError."""

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """Block up to `timeout` seconds for the job to finish or fail -> its state then."""

    def wait_result(self, job_id: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """`wait`, then (its state, the result dict when it finished, else None). Raises JobFailedError for a failed
        job, as `result` does (a synchronous call's path: one call where `wait` and `result` were two)."""

    def ready(self) -> tuple[bool, list[str]]:
        """(whether jobs can run now, the reasons they cannot)."""

    def models(self) -> dict[str, Any]:
        """{"models": [...], "failed": {name: error}} for GET /models."""

    def queue_depth(self) -> int:
        """Jobs waiting to start."""

    def counts(self) -> dict[str, int]:
        """{"running": jobs started and not ended, "failed": failed jobs still kept, "workers": live job runners}
        for the metrics. Raises when the backend cannot answer."""

    def batching(self) -> dict[str, dict[str, Any]]:
        """Per model with a running sampling engine (BATCH_MAX > 1), for the metrics: {"steps", "requests",
        "batch_sizes": {rows per step: steps}, "wait_buckets_s": upper bounds, "wait_counts": requests per bucket
        (one more than the bounds: the last is above them all), "wait_sum_s"}; {} when nothing batches here."""


def iso(ts: float | datetime | None) -> str | None:
    """A time (epoch seconds or a datetime, naive meaning UTC) -> ISO 8601 UTC text with a Z."""
    if ts is None:
        return None
    dt = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> float:
    return time.time()
