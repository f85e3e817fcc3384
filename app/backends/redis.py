"""Redis mode (REDIS_URL set): jobs go to an RQ queue (JSON serializer, never pickle) that `python -m worker`
processes consume; states and results are read back through RQ. Nothing here imports torch.

Backpressure is ours (RQ has none): a submission while MAX_QUEUED_JOBS wait, or while no worker is
registered on the queue, is refused with 503 + Retry-After rather than queued for nobody.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict
from datetime import UTC
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry
from rq.exceptions import DeserializationError, InvalidJobOperation
from rq.job import Job, JobStatus
from rq.results import Result

from worker import queueing  # redis and rq only: no torch, no model
from worker.contract import KINDS, public

from ..catalog import read_catalog
from ..metrics import current_request_id
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
)

# RQ's job statuses (by value: the set differs between RQ 2.x releases) -> ours.
_STATES = {
    "created": "queued",
    "queued": "queued",
    "deferred": "queued",
    "scheduled": "queued",  # also a job waiting for its retry
    "started": "started",
    "finished": "finished",
    "failed": "failed",
    "stopped": "failed",
    "canceled": "failed",
}


def _state(status: JobStatus | str | None) -> str:
    value = getattr(status, "value", status)
    return _STATES.get(str(value), "queued")


_WAIT_SLICE_S = 1.0  # a wait blocks on the job's result stream this long at most before it reads the status
_SEEN_MAX = 10_000  # finished jobs remembered so that each is counted once in the job metrics
_CLEANUP_EVERY_S = 1.0  # the API runs RQ's abandoned-job cleanup at most this often (while someone polls a job)
# Per-client job ids (a sorted set by submission time) for MAX_JOBS_PER_CLIENT, shared by every API process.
CLIENT_KEY_PREFIX = "vrnn:client:"
# Reserves a place for a job among the client's active jobs -> the count with it (above the cap: not added).
# KEYS[1]: the client's set; ARGV: job id, now (s), the cap, the set's TTL (s), RQ's job key prefix. A member whose
# job has ended (a status other than RQ's active ones) or whose job is gone after its minute of grace (an id
# reserved a moment ago by another request has no job yet) no longer counts.
_RESERVE = """
local key, id, now, cap = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local active = {created = true, queued = true, deferred = true, scheduled = true, started = true}
local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
    local member, score = members[i], tonumber(members[i + 1])
    local status = redis.call('HGET', ARGV[5] .. member, 'status')
    if (status and not active[status]) or (not status and score < now - 60) then
        redis.call('ZREM', key, member)
    end
end
redis.call('ZADD', key, now, id)
local count = redis.call('ZCARD', key)
redis.call('EXPIRE', key, tonumber(ARGV[4]))
if count > cap then
    redis.call('ZREM', key, id)
end
return count
"""


class RedisBackend:
    mode = "redis"

    def __init__(self, settings: Settings, observer: JobObserver | None = None):
        assert settings.redis_url
        self.settings = settings
        self.observer = observer
        # Bounded waits: a Redis that is down or hung costs a request at most REDIS_TIMEOUT_S per command (503),
        # never a hang. A connection broken by a Redis restart is retried once at once on a fresh one.
        timeout = settings.redis_timeout_s
        self.connection = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=min(2.0, timeout),
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.queue = queueing.make_queue(self.connection, settings.queue_name)
        self._reserve_script = self.connection.register_script(_RESERVE)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._last_cleanup = 0.0

    def start(self) -> None:
        """Nothing to load: workers hold the models. Redis may come up later; /readyz tells."""

    def close(self) -> None:
        self.connection.close()

    # Jobs ----------------------------------------------------------------------------------------

    def submit(self, kind: str, params: dict[str, Any], client: str | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        s = self.settings
        job_id = str(uuid.uuid4())
        reserved = None
        try:
            if self.queue.count >= s.max_queued_jobs:
                raise QueueFullError(f"{s.max_queued_jobs} jobs are waiting already")
            if not self._live_workers():
                raise UnavailableError(f"no worker is running on queue {s.queue_name!r}; start `python -m worker`")
            if client is not None and s.max_jobs_per_client > 0:
                reserved = self._reserve(client, job_id)
            job_id = queueing.enqueue(
                self.queue,
                kind,
                params,
                job_timeout=s.job_timeout_s,
                result_ttl=s.result_ttl_s,
                failure_ttl=s.failure_ttl_s,
                retries=s.job_retries,
                job_id=job_id,
                meta={"request_id": request_id} if (request_id := current_request_id()) else None,
            )
            reserved = None  # the job exists: it holds its place until it ends
            return job_id
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        finally:
            if reserved is not None:  # refused or failed after the reservation: give the place back
                with contextlib.suppress(RedisError):
                    self.connection.zrem(reserved, job_id)

    def _client_key(self, client: str) -> str:
        digest = hashlib.sha256(client.encode()).hexdigest()[:32]  # never the raw key or address in Redis keys
        return f"{CLIENT_KEY_PREFIX}{self.settings.queue_name}:{digest}"

    def _reserve(self, client: str, job_id: str) -> str:
        """Add `job_id` to the client's set of active jobs, or raise ClientLimitError when it has
        MAX_JOBS_PER_CLIENT active already. Ended or expired jobs are pruned first. One Lua script (`_RESERVE`), so
        one round trip, atomic: concurrent submissions from several API processes never admit one too many."""
        s = self.settings
        key = self._client_key(client)
        # The set outlives no job: a client idle for the longest a job can live is forgotten.
        expire = s.job_timeout_s * (s.job_retries + 1) + s.failure_ttl_s + 3600
        count = int(
            self._reserve_script(
                keys=[key], args=[job_id, time.time(), s.max_jobs_per_client, expire, Job.redis_job_namespace_prefix]
            )
        )
        if count > s.max_jobs_per_client:
            raise ClientLimitError(f"you have {count - 1} jobs queued or running, the most allowed per client")
        return key

    def status(self, job_id: str) -> dict[str, Any]:
        job = self._fetch(job_id)
        try:
            if _state(job.get_status(refresh=False)) in ("queued", "started") and self._recover(job):
                job = self._fetch(job_id)
            state = _state(job.get_status(refresh=False))
            info = self._info(job, state)
            if state == "failed":
                info["error_status"], info["error"] = self._failure(job)
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        self._observe(job, info)
        return info

    @staticmethod
    def _info(job: Job, state: str) -> dict[str, Any]:
        return {
            "id": job.id,
            "kind": _kind(job),
            "status": state,
            "enqueued_at": iso(job.enqueued_at),
            "started_at": iso(job.started_at),
            "ended_at": iso(job.ended_at) if state in ("finished", "failed") else None,
            "error": None,
            "error_status": None,
        }

    def _recover(self, job: Job) -> bool:
        """Bring a job that nobody will finish to its end, so that a client polling it always sees one (True: the
        job's state may have changed).

        - Started, but its worker's heartbeats stopped (killed, lost): RQ's abandoned-job cleanup, which a live
          worker's maintenance pass also runs: retried if it has retries left, else failed (AbandonedJobError); a
          job that has killed a worker before is not retried again (queueing.on_abandoned: PoisonJobError). The
          API runs it too, because with no live worker nobody else would.
        - Queued for longer than JOB_TIMEOUT_S while no live worker is on the queue: failed (NoWorkerError).
        """
        state = _state(job.get_status(refresh=False))
        if state == "started":
            t = time.monotonic()
            if t - self._last_cleanup < _CLEANUP_EVERY_S:
                return False
            self._last_cleanup = t
            self.queue.started_job_registry.cleanup(exception_handlers=[queueing.on_abandoned])
            return True
        waited = time.time() - job.enqueued_at.replace(tzinfo=UTC).timestamp() if job.enqueued_at else 0.0
        if waited <= self.settings.job_timeout_s or self._live_workers():
            return False
        return self._fail_unrun(job, waited)

    def _fail_unrun(self, job: Job, waited: float) -> bool:
        if not self.connection.lrem(self.queue.key, 1, job.id):
            return False  # not waiting in the queue (a worker took it a moment ago, or it is scheduled)
        message = (
            f"no worker took the job in {waited:.0f} s (JOB_TIMEOUT_S is {self.settings.job_timeout_s} s): no worker "
            f"is running on queue {self.settings.queue_name!r}; submit it again once one is (see /readyz)"
        )
        job.meta["error"] = {"type": "NoWorkerError", "message": message, "status": 503}
        job.save_meta()
        with self.connection.pipeline() as pipe:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(f"NoWorkerError: {message}", pipe, worker_name="")
            pipe.execute()
        return True

    def result(self, job_id: str) -> dict[str, Any]:
        info = self.status(job_id)
        if info["status"] == "failed":
            raise JobFailedError(info["error_status"], info["error"], job_id)
        if info["status"] != "finished":
            raise JobPendingError(info)
        try:
            value = self._fetch(job_id).return_value()
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        if not isinstance(value, dict):  # expired between the two reads, or not one of our jobs
            raise UnknownJobError(job_id)
        return value

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """Block until the job ends or `timeout` passes, then its status. A worker that ends a job adds its
        result (success or failure) to RQ's result stream of the job (`Result.get_key`): the wait blocks on that
        stream (XREAD) instead of polling, so it returns as the result lands, at one Redis call per slice. Every
        slice (at most _WAIT_SLICE_S) it also reads the job's status, which covers the ends that write no result
        (a job recovered by `status`, a retry that re-queued it) without busy waiting."""
        job = self._fetch(job_id)
        deadline, seen = time.monotonic() + timeout, "0-0"
        stream = Result.get_key(job_id)
        slice_s = min(_WAIT_SLICE_S, self.settings.redis_timeout_s / 2)
        try:
            while _state(job.get_status(refresh=True)) not in ("finished", "failed"):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                entries = self.connection.xread({stream: seen}, block=max(1, int(1000 * min(slice_s, left))))
                if entries:  # a newer result: read the status again (a failed attempt may have been re-queued)
                    seen = entries[0][1][-1][0]
        except InvalidJobOperation:
            raise UnknownJobError(job_id) from None
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        return self.status(job_id)

    def wait_result(self, job_id: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """`wait` and `result` in fewer round trips: the successful result's entry that the blocking XREAD returns
        carries the return value itself, so the job's hash is read once (its state and times, for the metrics)
        instead of four times and the stream once more. Any other outcome (a failed attempt, a retry, no result
        within the slice) takes `wait`'s and `result`'s path."""
        deadline, seen = time.monotonic() + timeout, "0-0"
        stream = Result.get_key(job_id)
        slice_s = min(_WAIT_SLICE_S, self.settings.redis_timeout_s / 2)
        try:
            left = deadline - time.monotonic()
            # (the job was enqueued a moment ago: the first read blocks on its stream without reading the job first)
            entries = self.connection.xread({stream: seen}, block=max(1, int(1000 * min(slice_s, left))))
            if entries:
                entry_id, payload = entries[0][1][-1]
                seen = entry_id
                done = Result.restore(job_id, entry_id.decode(), payload, self.connection, queueing.SERIALIZER)
                value = done.return_value if done.type == Result.Type.SUCCESSFUL else None
                if isinstance(value, dict):  # the worker wrote it with the job's finished status, in one transaction
                    job = self._fetch(job_id)
                    if _state(job.get_status(refresh=False)) == "finished":
                        info = self._info(job, "finished")
                        self._observe(job, info)
                        return info, value
        except InvalidJobOperation:
            raise UnknownJobError(job_id) from None
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        info = self.wait(job_id, max(0.0, deadline - time.monotonic()))
        return info, (self.result(job_id) if info["status"] in ("finished", "failed") else None)

    def queue_depth(self) -> int:
        try:
            return self.queue.count
        except RedisError:
            return 0

    def counts(self) -> dict[str, int]:
        """Reads the sizes of RQ's started and failed registries directly (ZCARD: RQ's own `count` would also clean
        the registries up, moving abandoned jobs, which is the workers' maintenance's job)."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zcard(self.queue.started_job_registry.key)
            pipe.zcard(self.queue.failed_job_registry.key)
            running, failed = pipe.execute()
        return {"running": int(running), "failed": int(failed), "workers": len(self._live_workers())}

    def batching(self) -> dict[str, dict[str, Any]]:
        """The sampling engines' stats: none in this process (Redis mode runs jobs in `python -m worker`)."""
        return {}

    # Workers, models, readiness ------------------------------------------------------------------

    def _live_workers(self) -> dict[str, dict[str, Any]]:
        """The one definition of a live worker: one on our queue whose published models (refreshed by its
        heartbeat) have not expired; a stopped worker deletes them, a dead one's expire."""
        return queueing.live_workers(self.connection, self.settings.queue_name)

    def models(self) -> dict[str, Any]:
        """CHECKPOINT_DIR's metadata (no torch), with the defaults the live workers use when they publish them."""
        catalog = read_catalog(self.settings.checkpoint_dir)
        try:
            workers = self._live_workers()
        except RedisError:
            workers = {}
        # A checkpoint whose JSON reads fine but whose weights the workers could not load (truncated, corrupted)
        # is theirs to report: it moves from "models" to "failed", with the worker's reason.
        for w in workers.values():
            reasons = w.get("failed_reasons")
            if isinstance(reasons, dict):
                for name, why in reasons.items():
                    catalog["failed"].setdefault(str(name), str(why)[:500])
        catalog["models"] = [m for m in catalog["models"] if m["name"] not in catalog["failed"]]
        # A text model's styles as the workers loaded them (they check NAME.styles.json in full; the catalog only
        # reads its names).
        styles = next((w["styles"] for w in workers.values() if isinstance(w.get("styles"), dict)), None)
        if styles is not None:
            for m in catalog["models"]:
                if m.get("takes_text") and isinstance(styles.get(m["name"]), list):
                    m["styles"] = [str(s) for s in styles[m["name"]]]
        # ... and whether each made its word model (NAME.wordlm.json) usable.
        inventors = next((w["inventors"] for w in workers.values() if isinstance(w.get("inventors"), list)), None)
        if inventors is not None:
            for m in catalog["models"]:
                if m.get("takes_text"):
                    m["invents_text"] = m["name"] in inventors
        defaults = next((w["defaults"] for w in workers.values() if isinstance(w.get("defaults"), dict)), None)
        if defaults is not None:
            catalog["defaults"] = defaults
            text_default = next((w.get("text_default") for w in workers.values() if "text_default" in w), None)
            for m in catalog["models"]:
                m["default"] = defaults.get(m.get("modality")) == m["name"]
                m["text_default"] = text_default == m["name"]
        catalog["workers"] = len(workers)
        return catalog

    def ready(self) -> tuple[bool, list[str]]:
        reasons = []
        try:
            self.connection.ping()
            workers = self._live_workers()
            if not workers:
                reasons.append(f"no worker is running on queue {self.settings.queue_name!r}; start `python -m worker`")
            elif not any(w.get("models") for w in workers.values()):
                reasons.append("the running workers have no model loaded")
        except RedisError as e:
            reasons.append(f"Redis at the configured REDIS_URL is unreachable ({type(e).__name__})")
        if not read_catalog(self.settings.checkpoint_dir)["models"]:
            reasons.append(f"no checkpoint found in {self.settings.checkpoint_dir}")
        return not reasons, reasons

    # Internals -----------------------------------------------------------------------------------

    def _fetch(self, job_id: str) -> Job:
        try:
            job = queueing.fetch_job(self.connection, job_id)
        except (DeserializationError, ValueError):
            job = None
        except RedisError as e:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {type(e).__name__}") from None
        if job is None:
            raise UnknownJobError(job_id)
        if _kind(job) not in KINDS:  # some other application's job in the same Redis
            raise UnknownJobError(job_id)
        return job

    def _failure(self, job: Job) -> tuple[int, str]:
        """(the HTTP status a synchronous call answers, the message) of a failed job. The worker records
        its errors in job.meta; a traceback is read only for jobs that failed before it could."""
        status = str(getattr(job.get_status(refresh=False), "value", ""))
        if status in ("stopped", "canceled"):
            return 500, f"the job was {status} before it finished"
        return public(queueing.job_error(job))

    def _observe(self, job: Job, info: dict[str, Any]) -> None:
        """Count each finished job once in the job metrics (the first time this process sees it ended)."""
        if self.observer is None or info["status"] not in ("finished", "failed") or job.id in self._seen:
            return
        self._seen[job.id] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        if job.started_at and job.ended_at:
            seconds = (job.ended_at - job.started_at).total_seconds()
            self.observer(info["kind"], info["status"], seconds, _retries_taken(job, info, self.settings.job_retries))


def _retries_taken(job: Job, info: dict[str, Any], retries: int) -> int:
    """Extra attempts an ended job took: the retries it was given less those left. A job failed for a reason
    that would recur (bad input: 4xx; timeout: 504) had its retries cancelled by the worker, not used."""
    left = getattr(job, "retries_left", None)
    if left is None or (info["status"] == "failed" and (info.get("error_status") or 500) != 500):
        return 0
    attempts = (job.meta or {}).get("attempts")  # counted by the workers: a job that killed one has fewer retries left
    if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1:
        return attempts - 1
    return max(0, retries - int(left))


def _kind(job: Job) -> str:
    """The job function's name (generate_speech, ...), "" for a job that is not one of ours."""
    try:
        name = job.func_name or ""
    except (DeserializationError, ValueError):
        return ""
    return name.rsplit(".", 1)[-1] if name.startswith("worker.jobs.") else ""
