"""`python -m worker`: an RQ worker that keeps every checkpoint in memory and runs jobs in-process.

    REDIS_URL=redis://localhost:6379/0 CHECKPOINT_DIR=checkpoints python -m worker
    python -m worker --burst            # process what is queued, then exit (tests, batch runs)

- Loads the checkpoint cache (CHECKPOINT_DIR, DEVICE) before taking any job; exits with status 1
  when no checkpoint loads.
- Runs each job in this process (no fork per job: a forked child cannot use the parent's CUDA
  context), with a heartbeat thread that keeps the job's StartedJobRegistry entry, the execution and
  the worker alive while it runs; once a job overruns its timeout the heartbeats stop, so that a job
  stuck in native code is still recovered by another worker's maintenance pass.
- Uses RQ's JSONSerializer (never pickle) and runs only the functions of `worker.jobs` (plus any
  given with --allow-function): a job naming any other function fails without running.
- Runs RQ's maintenance (abandoned jobs -> retried or failed with AbandonedJobError) every
  --maintenance-interval seconds while idle; see `worker.queueing.enqueue` for the timeline. A job that
  has killed a worker runs at most once more; after a second death it fails (PoisonJobError), never run
  by a third worker (`worker.queueing.on_abandoned`).
- SIGTERM or Ctrl+C: warm shutdown (the current job finishes, then the worker exits); a second
  one: cold shutdown (the job fails and is retried if it has retries left).
- Publishes its loaded models at "vrnn:worker:<name>:models" (JSON), refreshed by its heartbeat,
  so the API's /readyz can see a live worker with models.
- Logs one JSON object per line (--log-format text for plain lines), with job ids.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import uuid
from typing import Any

from rq import SimpleWorker, worker_registration
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from model.cli import positive_int
from model.runtime import set_threads

from . import queueing, slots
from .cache import ModelCache, set_cache
from .contract import JobInputError, UnknownModelError, error_info
from .logs import JsonFormatter

log = logging.getLogger("worker")

DEFAULT_MAINTENANCE_S = 30
DEFAULT_HEARTBEAT_S = 10
DEFAULT_HEARTBEAT_GRACE_S = 60  # RQ's own slack on top of the monitoring interval
BEAT_MIN_S = 1.0  # a worker's heartbeats come at most this often (ModelWorker.heartbeat)


class ForbiddenJobError(RuntimeError):
    """A job names a function this worker does not run."""


class PoisonJobError(RuntimeError):
    """A job whose runs have killed queueing.MAX_WORKER_DEATHS workers already: refused without running."""


# Errors that would recur on a retry: not retried, whatever Retry(max=...) the job has.
NOT_RETRIED = (JobInputError, UnknownModelError, ForbiddenJobError, JobTimeoutException, PoisonJobError)


class RestrictedJob(Job):
    """A Job that resolves only allowed function names and never imports callbacks by name."""

    allowed_functions: frozenset[str] = frozenset(queueing.JOB_FUNCTIONS.values())
    refused: str | None = None  # set by the worker for a poison job: why it is not run

    @property
    def func(self):
        if self.refused:
            raise PoisonJobError(self.refused)
        name = self.func_name
        if name not in self.allowed_functions:
            raise ForbiddenJobError(
                f"refusing to run {name!r}: this worker runs only {', '.join(sorted(self.allowed_functions))}"
            )
        return super().func

    @staticmethod
    def _no_callback(kind: str) -> property:
        def callback(self: RestrictedJob) -> None:
            name = getattr(self, f"_{kind}_callback_name")
            if name:
                log.warning("ignoring the %s callback %r of job %s", kind, name, self.id, extra={"job_id": self.id})

        return property(callback)

    success_callback = _no_callback("success")
    failure_callback = _no_callback("failure")
    stopped_callback = _no_callback("stopped")


class ModelWorker(SimpleWorker):
    """SimpleWorker (jobs in this process) with heartbeats during jobs and published model names."""

    job_class = RestrictedJob
    # RQ backs off up to 60 s between reconnection attempts while Redis is down; 5 s keeps recovery quick.
    max_connection_wait_time = 5.0

    def __init__(self, *args: Any, models_info: dict[str, Any], heartbeat_grace: int, **kwargs: Any):
        kwargs.setdefault("log_job_description", False)  # a description could carry uploads: log job ids only
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = heartbeat_grace
        self._models_payload = json.dumps({**models_info, "worker": self.name, "queue": self.queue_names()[0]})
        self._beat_at, self._beat_until = -math.inf, -math.inf  # the last heartbeat, and until when its TTL lasts
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None
        self.push_exc_handler(self._record_error)

    # Published models ---------------------------------------------------------------------------

    @property
    def liveness_ttl(self) -> int:
        """How long the published models outlive the last heartbeat: the longest gap between two heartbeats (the
        idle wait on the queue, worker_ttl - 15 s, or the heartbeat interval during a job) plus the grace. The API
        reads a missing key as "no live worker" (/readyz, and failing jobs nobody can run)."""
        return int(max(self.worker_ttl - 15, self.job_monitoring_interval) + self.heartbeat_grace + 5)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, the worker registered again and its models published, in one round trip (RQ calls it
        before and after every dequeue and after every job: alone, its two commands and the two steps below were
        four round trips each time, a fifth of a busy worker's CPU). At most one every BEAT_MIN_S seconds unless it
        must make the worker's key live longer than the last one did: RQ calls it five times a job, which was eight
        of every twenty Redis commands of a busy worker's (a busy worker beats once a second; every TTL it keeps is
        tens of seconds)."""
        ttl = timeout or self.worker_ttl + 60  # (RQ's default)
        at = time.monotonic()
        if at - self._beat_at < BEAT_MIN_S and at + ttl <= self._beat_until + BEAT_MIN_S:
            return
        if pipeline is not None:  # (the caller's pipeline: its owner executes it)
            self._beat_into(timeout, pipeline)
        else:
            with self.connection.pipeline(transaction=True) as pipe:
                self._beat_into(timeout, pipe)
                pipe.execute()
        self._beat_at, self._beat_until = at, at + ttl

    def _beat_into(self, timeout: int | None, pipe: Any) -> None:
        SimpleWorker.heartbeat(self, timeout, pipe)
        # Registered again at every heartbeat: a Redis restarted without persistence has forgotten the worker
        # sets, and the API would see no worker on the queue until this worker restarted.
        worker_registration.register(self, pipe)
        queueing.publish_models(pipe, self.name, self._models_payload, self.liveness_ttl)

    def register_birth(self) -> None:
        super().register_birth()
        queueing.publish_models(self.connection, self.name, self._models_payload, self.liveness_ttl)

    def register_death(self) -> None:
        queueing.withdraw_models(self.connection, self.name)
        super().register_death()

    # Heartbeats while a job runs ----------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job) -> int:
        """How long the job's registry entry lives without the next heartbeat: the heartbeat interval
        (or the job's remaining time, if shorter) plus the grace."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(interval, max(1, int(job.timeout - self.current_job_working_time)))
        return int(interval) + self.heartbeat_grace

    def _beat(self, job: Job, stop: threading.Event, started: float) -> None:
        limit = job.timeout + self.heartbeat_grace if job.timeout and job.timeout > 0 else None
        while not stop.wait(self.job_monitoring_interval):
            elapsed = time.monotonic() - started
            if limit is not None and elapsed > limit:
                log.error(
                    "job %s overran its timeout (%s s) by more than %s s: no more heartbeats, so that a "
                    "maintenance pass can recover it",
                    job.id,
                    job.timeout,
                    self.heartbeat_grace,
                    extra={"event": "job_stuck", "job_id": job.id, "worker": self.name},
                )
                return
            try:
                self.set_current_job_working_time(elapsed)
                self.maintain_heartbeats(job)
            except Exception as e:  # Redis down for a moment: keep trying, the job itself goes on
                log.warning("heartbeat for job %s failed: %s", job.id, e, extra={"job_id": job.id})

    def _stop_beat(self) -> None:
        if self._beat_stop is not None:
            self._beat_stop.set()
        if self._beat_thread is not None and self._beat_thread is not threading.current_thread():
            self._beat_thread.join(timeout=30)
        self._beat_stop = self._beat_thread = None

    def handle_execution_ended(self, job: Job, queue: Any, heartbeat_ttl: int) -> None:
        self._stop_beat()  # before RQ records the outcome: no heartbeat may race with the cleanup
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def execute_job(self, job: Job, queue: Any) -> None:
        started = time.monotonic()
        self._beat_stop = threading.Event()
        self._beat_thread = threading.Thread(
            target=self._beat, args=(job, self._beat_stop, started), name=f"heartbeat-{job.id}", daemon=True
        )
        self._beat_thread.start()
        meta = job.meta or {}
        fields = {"job_id": job.id, "func": meta.get("kind") or job.func_name, "worker": self.name}
        if meta.get("request_id"):  # the API request that queued the job (X-Request-Id)
            fields["request_id"] = str(meta["request_id"])[:128]
        log.info("job %s started", job.id, extra={"event": "job_started", **fields})
        self._count_attempt(job)
        try:
            super().execute_job(job, queue)  # SimpleWorker's: prepare, perform, back to idle
        finally:
            self._stop_beat()
        duration = round(time.monotonic() - started, 3)
        status = job.get_status(refresh=False)
        ok = status == JobStatus.FINISHED
        status_text = getattr(status, "value", str(status))
        level = logging.INFO if ok else logging.WARNING
        error = (job.meta or {}).get("error") if not ok else None
        extra = {"event": "job_finished" if ok else "job_failed", "duration_s": duration, "status": status_text}
        if error:
            extra.update(error_type=error.get("type"), error=error.get("message"))
        if not ok:
            extra["retries_left"] = job.retries_left or 0
        log.log(level, "job %s %s in %.3f s", job.id, status_text, duration, extra={**extra, **fields})

    # Failures -----------------------------------------------------------------------------------

    def _count_attempt(self, job: Job) -> None:
        """Count this attempt in the job's meta (queueing.worker_deaths reads the count), or refuse a job whose runs
        have killed MAX_WORKER_DEATHS workers already: a registry cleanup without queueing.on_abandoned (RQ's
        registry count() runs one) may have re-enqueued it. A refused job fails with PoisonJobError unrun."""
        deaths = queueing.worker_deaths(job)
        if deaths >= queueing.MAX_WORKER_DEATHS and isinstance(job, RestrictedJob):  # this worker's job class
            job.refused = queueing.poison_message(deaths)
            return
        job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
        try:
            job.save_meta()
        except Exception as e:  # Redis down for a moment: the job runs anyway, uncounted
            log.warning("could not count the attempt of job %s: %s", job.id, e, extra={"job_id": job.id})

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Bad input is the client's error, not the worker's: no traceback at error level for it (the
        job_failed line carries its message); everything else goes through RQ's logging."""
        if isinstance(exc_info[1], JobInputError | UnknownModelError):
            self._record_error(job, *exc_info)  # this worker's one exception handler
            return
        super().handle_exception(job, *exc_info)

    def _record_error(self, job: Job, exc_type: Any, exc_value: BaseException | None, tb: Any) -> bool:
        """Exception handler: store the error in job.meta["error"] for the API, and cancel retries for
        errors that would recur. Also called by maintenance for jobs abandoned by a dead worker."""
        if exc_value is None and isinstance(exc_type, type):
            exc_value = exc_type()
        if exc_value is None:
            return True
        if isinstance(exc_value, AbandonedJobError):  # its worker died: count the death, poison jobs fail
            try:
                return queueing.on_abandoned(job)
            except Exception as e:
                log.warning("could not record the death of job %s: %s", job.id, e, extra={"job_id": job.id})
                return True
        if isinstance(exc_value, NOT_RETRIED):
            job.retries_left = 0
        try:
            if not isinstance(exc_value, PoisonJobError):  # an attempt that ended in this process, not with it
                job.meta["failures"] = int(job.meta.get("failures", 0)) + 1
            job.meta["error"] = error_info(exc_value)
            job.save_meta()
        except Exception as e:  # never let bookkeeping hide the failure itself
            log.warning("could not store the error of job %s: %s", job.id, e, extra={"job_id": job.id})
        return True


# Logging ----------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_FIELDS = (
    "event",
    "job_id",
    "request_id",
    "func",
    "queue",
    "worker",
    "status",
    "duration_s",
    "error_type",
    "error",
    "retries_left",
    "models",
    "failed",
    "device",
    "engines",
)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(_LOG_FIELDS, clean=lambda msg: _ANSI.sub("", msg)))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# Command line -----------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"error: {name} must be a whole number of seconds, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m worker",
        description=(
            "RQ worker for the VRNN service: loads every checkpoint of CHECKPOINT_DIR once, then runs the jobs "
            "of worker.jobs from the queue in this process (JSON serializer, no fork per job)."
        ),
        epilog=(
            "environment: REDIS_URL, QUEUE_NAME, CHECKPOINT_DIR, DEVICE (auto|cpu|cuda), DEFAULT_SPEECH_MODEL, "
            "DEFAULT_HANDWRITING_MODEL, WORKER_MAINTENANCE_S, WORKER_HEARTBEAT_S, WORKER_HEARTBEAT_GRACE_S, "
            "WORKER_NAME, TORCH_THREADS, LOG_FORMAT (json|text), LOG_LEVEL. Options override them. Exit status: "
            "0 done, 1 no checkpoint loaded or Redis unreachable, 2 bad arguments."
        ),
    )
    p.add_argument("--burst", action="store_true", help="process the queued jobs, then exit")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="default: REDIS_URL")
    p.add_argument("--queue", default=queueing.queue_name(), help="queue name (default: QUEUE_NAME or 'vrnn')")
    p.add_argument(
        "--checkpoints", default=os.environ.get("CHECKPOINT_DIR") or "checkpoints", help="default: CHECKPOINT_DIR"
    )
    p.add_argument(
        "--device", default=os.environ.get("DEVICE") or "auto", choices=("auto", "cpu", "cuda"), help="default: DEVICE"
    )
    p.add_argument("--name", default=os.environ.get("WORKER_NAME"), help="worker name (default: host.pid.random)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=os.environ.get("TORCH_THREADS") or "1",
        metavar="N",
        help="PyTorch intra-op threads of this process (default: TORCH_THREADS or 1). Workers scale by processes: "
        "several workers each using every core fight over them and serve fewer requests under load than one at a "
        "time, so run one single-threaded worker per core; more threads only for a lone worker on idle cores",
    )
    p.add_argument(
        "--slots",
        type=positive_int,
        default=os.environ.get("WORKER_SLOTS") or "1",
        metavar="N",
        help="job slots: run N jobs at once in this process (N RQ workers named NAME.0 ... in threads, one checkpoint "
        "cache); concurrent generation jobs for one model then share its sampling engine's steps, with the bytes "
        "each seed gives alone (default: WORKER_SLOTS or 1; batching runs on the CPU only)",
    )
    p.add_argument(
        "--maintenance-interval",
        type=positive_int,
        default=_env_int("WORKER_MAINTENANCE_S", DEFAULT_MAINTENANCE_S),
        metavar="S",
        help="seconds between maintenance passes that recover abandoned jobs (default: %(default)s)",
    )
    p.add_argument(
        "--heartbeat",
        type=positive_int,
        default=_env_int("WORKER_HEARTBEAT_S", DEFAULT_HEARTBEAT_S),
        metavar="S",
        help="seconds between heartbeats while a job runs (default: %(default)s)",
    )
    p.add_argument(
        "--heartbeat-grace",
        type=positive_int,
        default=_env_int("WORKER_HEARTBEAT_GRACE_S", DEFAULT_HEARTBEAT_GRACE_S),
        metavar="S",
        help="a running job counts as abandoned this long after its last heartbeat is due (default: %(default)s)",
    )
    p.add_argument(
        "--allow-function",
        action="append",
        default=[],
        metavar="MODULE.FUNC",
        help="also run this function (repeatable; for tests and extensions)",
    )
    p.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("LOG_FORMAT") or "json")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL") or "INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    if not args.redis_url:
        log.error("no Redis URL: set REDIS_URL or pass --redis-url (e.g. redis://localhost:6379/0)")
        return 2

    set_threads(args.threads)  # before any PyTorch work; see --threads
    started = time.monotonic()
    try:
        # With slots, up to N generation jobs at once share each model's engine: N rows per step at most.
        cache = ModelCache(args.checkpoints, args.device, batch_max=args.slots if args.slots > 1 else 1)
    except ValueError as e:
        log.error("%s", e)
        return 2
    set_cache(cache)  # the job functions use the process-wide cache: this one
    info = {
        "models": cache.names,
        "failed": sorted(cache.failed),
        "failed_reasons": dict(cache.failed),  # name -> why it did not load (the API's /models and /readyz show it)
        "defaults": cache.defaults,
        "text_default": cache.text_default,  # the model a request with text and no model gets (GET /models)
        "styles": cache.style_names(),  # text model -> the names of the styles it loaded (GET /models)
        "inventors": cache.inventors(),  # text models that loaded a word model (GET /models: invents_text)
        "device": cache.device,
        "threads": args.threads,
        "slots": args.slots,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
    log.info(
        "loaded %d checkpoint(s) from %s in %.1f s (%d failed; %d PyTorch thread(s))",
        len(cache),
        args.checkpoints,
        time.monotonic() - started,
        len(cache.failed),
        args.threads,
        extra={"event": "models_loaded", "models": cache.names, "failed": cache.failed, "device": cache.device},
    )
    if not len(cache):
        log.error("no checkpoint could be loaded from %s: nothing to serve", args.checkpoints)
        return 1

    if args.allow_function:
        RestrictedJob.allowed_functions = RestrictedJob.allowed_functions | frozenset(args.allow_function)

    conn = queueing.connect(args.redis_url)
    try:
        conn.ping()
    except Exception as e:
        log.error("cannot reach Redis at %s: %s", _redact(args.redis_url), e)
        return 1
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"

    def make(worker_class: type[ModelWorker], worker_name: str, **kwargs: Any) -> ModelWorker:
        return worker_class(
            [args.queue],
            name=worker_name,
            connection=conn,
            serializer=queueing.SERIALIZER,
            job_class=RestrictedJob,
            maintenance_interval=args.maintenance_interval,
            # RQ blocks on the queue for worker_ttl - 15 s between maintenance checks: make that the interval.
            worker_ttl=args.maintenance_interval + 15,
            job_monitoring_interval=args.heartbeat,
            models_info=info,
            heartbeat_grace=args.heartbeat_grace,
            **kwargs,
        )

    log.info(
        "worker %s listening on queue %s (burst=%s, %d slot(s))",
        name,
        args.queue,
        args.burst,
        args.slots,
        extra={"event": "worker_started", "worker": name, "queue": args.queue},
    )
    work = dict(burst=args.burst, logging_level=args.log_level.upper())
    try:
        if args.slots == 1:
            make(ModelWorker, name).work(**work)
        else:
            slot = slots.slot_class(ModelWorker)
            slots.run_slots(lambda k, stop: make(slot, f"{name}.{k}", stop=stop), args.slots, **work)
    except ValueError as e:  # e.g. "There exists an active worker named ... already"
        log.error("worker %s could not start: %s", name, e)
        return 1
    finally:
        if args.slots > 1:
            log.info("sampling engines", extra={"event": "engine_stats", "engines": cache.engine_stats()})
            cache.close()
    log.info("worker %s stopped", name, extra={"event": "worker_stopped", "worker": name})
    return 0


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


if __name__ == "__main__":
    sys.exit(main())
