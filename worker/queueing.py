"""The API's side of the RQ queue: enqueue jobs, see live workers, read a failed job's error.

Imports neither torch nor `model` (the API process in Redis mode must not load torch): only redis and rq.

    from worker import queueing
    conn = queueing.connect(os.environ["REDIS_URL"])
    queue = queueing.make_queue(conn)                        # QUEUE_NAME, default "vrnn"; JSON serializer
    job_id = queueing.enqueue(queue, "generate_speech", {"duration_s": 2.0}, job_timeout=120,
                              result_ttl=3600, failure_ttl=86400, retries=1)
    job = queueing.fetch_job(conn, job_id)                   # rq.job.Job, or None when unknown/expired
    job.get_status(); job.return_value()                     # the job function's result dict when finished
    queueing.job_error(job)                                  # {"type", "message", "status"} when failed
    queueing.live_workers(conn)                              # {worker name: {"models": [...], ...}}

Every payload goes through RQ's `JSONSerializer`, never pickle, and the worker runs only the
functions of `worker.jobs` (see `worker.__main__`), so whoever can write to Redis cannot make a
worker unpickle data or call an arbitrary function.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from .contract import ABANDONED_MESSAGE, ERROR_STATUS, KINDS, POISON_ERROR, parse_error

JOB_FUNCTIONS = {name: f"worker.jobs.{name}" for name in KINDS}
DEFAULT_QUEUE = "vrnn"
SERIALIZER = JSONSerializer
# A live worker keeps "vrnn:worker:<worker name>:models" (a JSON object) alive with its heartbeat.
MODELS_KEY_PREFIX = "vrnn:worker:"
MODELS_KEY_SUFFIX = ":models"
# The names of the workers that published models (a set, kept beside the keys): read with one SMEMBERS and one MGET
# instead of a SCAN of the whole keyspace, which every job and every finished job's result lengthens (a SCAN per
# submitted job was a third of the API's CPU at 16 clients). A worker adds itself with each publication and removes
# itself when it stops; a dead worker's name stays until a reader finds its key expired and removes it.
MODELS_INDEX_KEY = "vrnn:workers:published"


# Poison jobs. A job whose worker dies while running it (SIGKILL, the OOM killer, a lost machine, or a job stuck in
# native code past its timeout) is retried at most once more, whatever its retries allow: one death may be an
# accident (a deploy, a lost machine), but a job that takes down a second worker is what takes them all down, one
# after the other, if retried blindly. The second death fails it with POISON_ERROR (500, its message public). The
# worker counts the attempts it begins (meta "attempts") and those that ended by an exception in its process
# (meta "failures"); every other attempt ended with its worker.
MAX_WORKER_DEATHS = 2


def worker_deaths(job: Job) -> int:
    """How many attempts of this (not running) job ended with the death of their worker."""
    meta = job.meta or {}
    return max(0, int(meta.get("attempts", 0)) - int(meta.get("failures", 0)))


def poison_message(deaths: int) -> str:
    return (
        f"this job stopped {deaths} workers while it ran (each killed, perhaps out of memory, or lost); it is not "
        "tried again, so that it cannot take down more of them. If the input is large, send a shorter one or fewer "
        "num_samples; else report it with this job's id"
    )


def on_abandoned(job: Job, *exc_info: Any) -> bool:
    """Exception handler of RQ's StartedJobRegistry.cleanup for a job whose worker died mid-run (the workers'
    maintenance passes and the API run it): counts the death, leaves at most one more attempt, fails the job with
    POISON_ERROR at the MAX_WORKER_DEATHS-th death, and records the error for `job_error`. Returns True (RQ then
    retries the job if it has retries left, else fails it)."""
    deaths = worker_deaths(job)
    if deaths == 0:  # its worker died before counting the attempt (or was older than the count): count it here
        job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
        deaths = 1
    if deaths >= MAX_WORKER_DEATHS:
        job.retries_left = 0
        error = {"type": POISON_ERROR, "message": poison_message(deaths), "status": 500}
    else:
        if job.retries_left:
            job.retries_left = min(job.retries_left, MAX_WORKER_DEATHS - deaths)
        error = {"type": "AbandonedJobError", "message": ABANDONED_MESSAGE, "status": 500}
    job.meta.update(error=error, worker_deaths=deaths)
    job.save_meta()
    return True


def queue_name() -> str:
    """QUEUE_NAME from the environment, else "vrnn"."""
    return os.environ.get("QUEUE_NAME") or DEFAULT_QUEUE


def connect(redis_url: str | None = None) -> Redis:
    """A Redis client for `redis_url` (default: REDIS_URL). Raises ValueError when neither is given."""
    url = redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise ValueError("no Redis URL: set REDIS_URL (e.g. redis://localhost:6379/0)")
    return Redis.from_url(url)


def make_queue(connection: Redis, name: str | None = None) -> Queue:
    """The job queue (`name`, default QUEUE_NAME or "vrnn") with RQ's JSON serializer."""
    return Queue(name or queue_name(), connection=connection, serializer=SERIALIZER)


def models_key(worker_name: str) -> str:
    return f"{MODELS_KEY_PREFIX}{worker_name}{MODELS_KEY_SUFFIX}"


def enqueue(
    queue: Queue,
    kind: str,
    params: dict[str, Any] | None,
    job_timeout: int,
    result_ttl: int,
    failure_ttl: int,
    retries: int,
    ttl: int | None = None,
    job_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """Put one job function call on `queue` -> the job id.

    kind:        one of contract.KINDS (the function of `worker.jobs` to run), params: its JSON-safe dict.
    job_timeout: seconds a worker lets the job run before it fails with JobTimeoutException.
    result_ttl:  seconds a finished job's result is kept; failure_ttl: the same for a failed job.
    retries:     extra attempts (RQ's `Retry(max=retries)`, re-enqueued at once) when an attempt fails for
                 a reason other than the input: the worker dying, a CUDA or Redis error. Input errors
                 (JobInputError, UnknownModelError) and timeouts are not retried: they would fail again.
    ttl:         seconds the job may wait in the queue before RQ discards it (None: no limit).
    meta:        extra JSON-safe job meta (the API puts the request's `request_id` there for the logs).
    job_id:      the id to give the job (None: RQ draws one); the API reserves it first for its per-client count.

    A job whose worker is killed outright (SIGKILL, OOM killer, lost machine) stays in the queue's
    StartedJobRegistry. The worker (`python -m worker`) refreshes that entry with its heartbeat every
    `--heartbeat` seconds (10 by default), each time for `--heartbeat + --heartbeat-grace` seconds (10 + 60),
    so without heartbeats the entry expires about 70 s after the worker died, whatever the job timeout.
    The next maintenance pass of any live worker on the queue (every `--maintenance-interval`, WORKER_MAINTENANCE_S,
    30 s by default; it runs while a worker is idle) then treats the job as abandoned: with retries left it is
    re-enqueued (`retries_left` goes down by one) and another worker runs it from the start; without, it moves
    to the FailedJobRegistry with RQ's AbandonedJobError, and `job_error(job)` reports it. A job that has
    killed a worker is retried at most once more, and fails (PoisonJobError) at its second death: see
    MAX_WORKER_DEATHS and `on_abandoned`. So with the defaults
    a killed worker's job is retried or failed within about 100 s, provided a live worker is idle at some point;
    with no live worker at all the API runs the same cleanup while a client polls the job, and fails a job that
    waited JOB_TIMEOUT_S in the queue with no live worker (NoWorkerError), so a polling client always sees an end.
    """
    if kind not in JOB_FUNCTIONS:
        raise ValueError(f"unknown job kind {kind!r}; one of {', '.join(KINDS)}")
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    for what, value in (("job_timeout", job_timeout), ("result_ttl", result_ttl), ("failure_ttl", failure_ttl)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    job = queue.enqueue_call(
        func=JOB_FUNCTIONS[kind],
        args=(params or {},),
        timeout=job_timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        ttl=ttl,
        retry=Retry(max=retries) if retries > 0 else None,
        description=kind,  # not the call's repr: that would copy base64 uploads into the job hash and logs
        meta={**(meta or {}), "kind": kind},
        job_id=job_id,
    )
    return job.id


def fetch_job(connection: Redis, job_id: str) -> Job | None:
    """The job with this id (JSON serializer), or None when there is none (unknown, or expired)."""
    try:
        return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return None


def job_error(job: Job) -> dict[str, Any] | None:
    """Why a failed job failed -> {"type", "message", "status"} (the HTTP status the API should answer for
    a synchronous call: 422/413/415 bad input, 404 unknown model, 504 timeout, 500 otherwise), or None
    when the job has not failed (or no longer exists).

    The worker stores the error in job.meta["error"]; a job abandoned by a dead worker gets it from the
    maintenance pass that fails it. Without it (an abandoned job failed by a registry cleanup that some
    other client triggered: RQ's registry `count`/`get_job_ids` clean up too) the error is read from the
    job's latest result."""
    try:
        if job.get_status(refresh=True) != JobStatus.FAILED:
            return None
        error = job.get_meta(refresh=True).get("error")
    except InvalidJobOperation:  # the job expired meanwhile
        return None
    if isinstance(error, dict) and "type" in error:
        kind = str(error["type"])
        return {
            "type": kind,
            "message": str(error.get("message", "")),
            "status": int(error.get("status", ERROR_STATUS.get(kind, 500))),
        }
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    if "AbandonedJobError" in text:
        return {"type": "AbandonedJobError", "message": ABANDONED_MESSAGE, "status": 500}
    failed = {"type": "JobFailed", "message": "the job failed on the worker (see the worker's log)", "status": 500}
    return parse_error(text) or failed


def live_workers(connection: Redis, queue: str | None = None) -> dict[str, dict[str, Any]]:
    """Workers that published their loaded models and whose heartbeat is recent -> {worker name: {"models":
    [names], "failed": [names], "queue", "device", "hostname", "pid"}}; only those on `queue` if given."""
    out: dict[str, dict[str, Any]] = {}
    names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in connection.smembers(MODELS_INDEX_KEY))
    if not names:
        return out
    expired = []
    for name, raw in zip(names, connection.mget([models_key(n) for n in names]), strict=True):
        if raw is None:
            expired.append(name)
            continue
        try:
            info = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(info, dict) or (queue is not None and info.get("queue") != queue):
            continue
        out[name] = info
    if expired:  # (a worker that died without removing its name; one that publishes again adds it back)
        keys = [models_key(n) for n in expired]
        connection.eval(_PRUNE, len(keys) + 1, *keys, MODELS_INDEX_KEY, *expired)
    return out


# Removes a name from the index only while its key is still missing, in one step: a worker that publishes again
# between a reader's MGET and its removal keeps its place.
_PRUNE = """
local index = KEYS[#KEYS]
for i, name in ipairs(ARGV) do
    if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SREM', index, name) end
end
return 0
"""


@contextlib.contextmanager
def _transaction(connection: Any) -> Iterator[Any]:
    """`connection` itself when it is a pipeline (its owner executes it), else a transaction executed on exit."""
    if isinstance(connection, Pipeline):
        yield connection
        return
    with connection.pipeline(transaction=True) as pipe:
        yield pipe
        pipe.execute()


def publish_models(connection: Any, worker_name: str, payload: str, ttl: int) -> None:
    """A worker's published models (`live_workers`), for `ttl` seconds, in one transaction (or in the caller's
    pipeline)."""
    with _transaction(connection) as pipe:
        pipe.set(models_key(worker_name), payload, ex=ttl)
        pipe.sadd(MODELS_INDEX_KEY, worker_name)


def withdraw_models(connection: Any, worker_name: str) -> None:
    with _transaction(connection) as pipe:
        pipe.delete(models_key(worker_name))
        pipe.srem(MODELS_INDEX_KEY, worker_name)
