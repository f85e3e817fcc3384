"""The job backend interface: what routes may ask of a job runner, whichever runs the jobs.

A job is a call of one of worker.jobs' functions (`kind`: generate_speech, generate_handwriting, score,
analyze_latent, list_models) on a JSON-safe params dict; its result is the dict docs/SERVICE.md describes.
A job's state, as `status()` gives it (times are ISO 8601 UTC, None until they happen):

    {"id", "kind", "status": "queued" | "started" | "finished" | "failed",
     "enqueued_at", "started_at", "ended_at", "error": None | message, "error_status": None | HTTP status}

`error_status` is what the synchronous call would have answered: 422 for bad input (worker's
JobInputError), 413 for input over a limit (InputTooLargeError), 415 for an upload of the wrong kind
(UnsupportedMediaError), 404 for an unknown model (UnknownModelError), 504 for a job that outran
JOB_TIMEOUT_S (Redis mode), 503 for a job no worker took while none was alive (Redis mode, NoWorkerError), 500 for
anything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

KINDS = ("generate_speech", "generate_handwriting", "score", "analyze_latent", "list_models")
FINAL = ("finished", "failed")

# worker/errors.py's exceptions by class name (as a failed RQ job's traceback names them) -> HTTP status.
ERROR_STATUS = {"JobInputError": 422, "InputTooLargeError": 413, "UnsupportedMediaError": 415, "UnknownModelError": 404}
JobObserver = Callable[[str, str, float], None]  # (kind, final status, seconds running): feeds the metrics

INTERNAL_ERROR_MESSAGE = "the job failed on the server (an internal error, logged by the worker); retrying may help"


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

    def ready(self) -> tuple[bool, list[str]]:
        """(whether jobs can run now, the reasons they cannot)."""

    def models(self) -> dict[str, Any]:
        """{"models": [...], "failed": {name: error}} for GET /models."""

    def queue_depth(self) -> int:
        """Jobs waiting to start."""


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


def classify_failure(text: str | None) -> tuple[int, str]:
    """A failed job's exception text (RQ's traceback string, or "Name: message") -> (HTTP status, message).

    Only the worker's own input and unknown-model errors are passed on word for word; anything else is a
    server fault whose details stay in the worker's log."""
    text = (text or "").rstrip()
    # The last exception of a traceback: the first unindented line after the last frame list.
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0:
        lines = text[at:].splitlines()[1:]
        while lines and (not lines[0] or lines[0][0].isspace()):
            lines.pop(0)
        text = "\n".join(lines)
    head, _, message = text.partition(": ")
    name = head.rsplit(".", 1)[-1].strip()
    if name in ERROR_STATUS:
        return ERROR_STATUS[name], message.strip() or name
    return 500, INTERNAL_ERROR_MESSAGE
