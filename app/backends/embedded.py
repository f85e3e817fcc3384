"""Embedded mode (no REDIS_URL): worker.jobs' functions run in this process, in a small thread pool, on this
backend's own checkpoint cache (a worker.jobs.Jobs object: nothing process-wide, so several apps can share a process).

With batching (BATCH_MAX > 1) the cache runs one step-level sampling engine per model, and generation jobs run in a
second pool of BATCH_MAX threads that wait on their model's engine (so that up to BATCH_MAX of them share each
step), while scoring and analysis keep the EMBEDDED_WORKERS pool and the model locks.

Jobs wait in the pools' queues (at most MAX_QUEUED_JOBS, then 503); their states and results live in a
dict that forgets finished jobs after RESULT_TTL_S (FAILURE_TTL_S for failed ones) and keeps at most
MAX_STORED_JOBS of them. torch is imported here (through worker.jobs) and only here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from worker.contract import INTERNAL_ERROR_MESSAGE, KINDS, JobError, error_info, public

from ..settings import Settings
from .base import (
    ClientLimitError,
    JobFailedError,
    JobObserver,
    JobPendingError,
    QueueFullError,
    UnavailableError,
    UnknownJobError,
    iso,
    now,
)

log = logging.getLogger(__name__)

GENERATION_KINDS = frozenset({"generate_speech", "generate_handwriting"})


@dataclass
class _Job:
    id: str
    kind: str
    params: dict[str, Any]
    client: str | None = None
    status: str = "queued"
    enqueued_at: float = field(default_factory=now)
    started_at: float | None = None
    ended_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_status: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "enqueued_at": iso(self.enqueued_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "error": self.error,
            "error_status": self.error_status,
        }


class EmbeddedBackend:
    mode = "embedded"

    def __init__(self, settings: Settings, observer: JobObserver | None = None):
        self.settings = settings
        self.observer = observer
        self._jobs: dict[str, _Job] = {}  # insertion order = submission order
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._generation_pool: ThreadPoolExecutor | None = None  # with batching: the jobs that wait on an engine
        self._runner: Any = None  # worker.jobs.Jobs on this backend's cache, once loaded
        self._load_error: str | None = None
        self.torch_threads: int | None = None  # set by start(): see Settings.torch_threads

    # Life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Import the job functions (and torch) and load every checkpoint once."""
        from model.runtime import apply_threads, set_threads, threads_for  # torch: only when embedded mode starts
        from worker.cache import ModelCache
        from worker.jobs import Jobs

        self.torch_threads = set_threads(threads_for(self.settings.torch_threads, self.settings.embedded_workers))
        try:
            cache = ModelCache(
                self.settings.checkpoint_dir,
                device=self.settings.device,
                batch_max=self.settings.batch_max,
                batch_wait_s=self.settings.batch_wait_ms / 1000,
            )
            self._runner = Jobs(cache)
        except Exception as e:  # a broken folder: keep answering, /readyz says why
            log.exception("loading checkpoints from %s failed", self.settings.checkpoint_dir)
            self._load_error = f"loading checkpoints from {self.settings.checkpoint_dir} failed: {e}"
        # Every job thread takes the configured thread count (model.runtime.apply_threads).
        threads = (self.torch_threads,)
        self._pool = ThreadPoolExecutor(self.settings.embedded_workers, "vrnn-job", apply_threads, threads)
        if self._runner is not None and self._runner.cache.batching:  # BATCH_MAX > 1 (and a CPU cache)
            self._generation_pool = ThreadPoolExecutor(self.settings.batch_max, "vrnn-gen", apply_threads, threads)

    def close(self) -> None:
        for pool in (self._pool, self._generation_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._runner is not None:
            self._runner.cache.close(timeout=2.0)  # the engines finish the requests they hold, then stop

    # Jobs ----------------------------------------------------------------------------------------

    def submit(self, kind: str, params: dict[str, Any], client: str | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        if self._pool is None:
            raise UnavailableError("the job runner has not started")
        if self._load_error:
            raise UnavailableError(self._load_error)
        job = _Job(id=str(uuid.uuid4()), kind=kind, params=params, client=client)
        cap = self.settings.max_jobs_per_client
        with self._lock:
            self._forget_old()
            if self._queued() >= self.settings.max_queued_jobs:
                raise QueueFullError(f"{self.settings.max_queued_jobs} jobs are waiting already")
            if client is not None and cap > 0:
                active = sum(1 for j in self._jobs.values() if j.client == client and j.ended_at is None)
                if active >= cap:
                    raise ClientLimitError(f"you have {active} jobs queued or running, the most allowed per client")
            self._jobs[job.id] = job
        pool = self._generation_pool if kind in GENERATION_KINDS and self._generation_pool is not None else self._pool
        pool.submit(self._run, job)
        return job.id

    def status(self, job_id: str) -> dict[str, Any]:
        return self._get(job_id).info()

    def result(self, job_id: str) -> dict[str, Any]:
        job = self._get(job_id)
        if job.status == "finished":
            assert job.result is not None
            return job.result
        if job.status == "failed":
            raise JobFailedError(job.error_status or 500, job.error or INTERNAL_ERROR_MESSAGE, job.id)
        raise JobPendingError(job.info())

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        job = self._get(job_id)
        job.done.wait(timeout)
        return job.info()

    def wait_result(self, job_id: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        info = self.wait(job_id, timeout)
        return info, (self.result(job_id) if info["status"] in ("finished", "failed") else None)

    def queue_depth(self) -> int:
        with self._lock:
            return self._queued()

    def counts(self) -> dict[str, int]:
        with self._lock:
            jobs = list(self._jobs.values())
        return {
            "running": sum(1 for j in jobs if j.status == "started"),
            "failed": sum(1 for j in jobs if j.status == "failed"),
            "workers": self.settings.embedded_workers if self._pool is not None else 0,
        }

    def batching(self) -> dict[str, dict[str, Any]]:
        """Per model whose sampling engine has started: its stats (`SamplingEngine.stats.snapshot()`: "steps",
        "requests", "batch_sizes" {rows: steps}, "wait_buckets_s", "wait_counts", "wait_sum_s"); {} without
        batching."""
        if self._runner is None:
            return {}
        return self._runner.cache.engine_stats()

    # Models and readiness ------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        if self._load_error:
            raise UnavailableError(self._load_error)
        if self._runner is None:
            raise UnavailableError("the models have not been loaded yet")
        return self._runner.cache.describe()

    def ready(self) -> tuple[bool, list[str]]:
        if self._load_error:
            return False, [self._load_error]
        if self._runner is None:
            return False, ["the checkpoints are still loading"]
        listing = self.models()
        reasons = []
        if not listing.get("models"):
            failed = "; ".join(f"{k}: {v}" for k, v in (listing.get("failed") or {}).items())
            reasons.append(
                f"no model loaded from {self.settings.checkpoint_dir}" + (f" (failed: {failed})" if failed else "")
            )
        return not reasons, reasons

    # Internals -----------------------------------------------------------------------------------

    def _get(self, job_id: str) -> _Job:
        with self._lock:
            self._forget_old()
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def _queued(self) -> int:
        return sum(1 for j in self._jobs.values() if j.status == "queued")

    def _forget_old(self) -> None:
        """Drop expired finished jobs, then the oldest finished ones beyond MAX_STORED_JOBS (lock held)."""
        t = now()
        ended = [j for j in self._jobs.values() if j.ended_at is not None]
        for j in ended:
            ttl = self.settings.result_ttl_s if j.status == "finished" else self.settings.failure_ttl_s
            if t - j.ended_at > ttl:
                del self._jobs[j.id]
        extra = len(self._jobs) - self.settings.max_stored_jobs
        for j in ended:
            if extra <= 0:
                break
            if j.id in self._jobs:
                del self._jobs[j.id]
                extra -= 1

    def _run(self, job: _Job) -> None:
        job.started_at, job.status = now(), "started"
        try:
            job.result = self._runner.run(job.kind, job.params)
        except Exception as e:  # the contract's errors say what to change; anything else is logged here
            if not isinstance(e, JobError):
                log.exception("job %s (%s) failed", job.id, job.kind)
            job.error_status, job.error = public(error_info(e))
        job.ended_at = now()
        job.status = "failed" if job.error_status else "finished"
        job.params = {}  # inputs can be megabytes; the job no longer needs them
        job.done.set()
        if self.observer is not None:
            self.observer(job.kind, job.status, job.ended_at - (job.started_at or job.ended_at))
