"""The RQ internals the service still relies on, each with the signature it is used with: an RQ upgrade that renames,
removes or reshapes one fails here, by name, before it fails in production. pyproject.toml pins the RQ releases
these hold for; public hooks (push_exc_handler, exception_handlers, job_class, serializer) are not listed."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from redis import Redis
from rq import SimpleWorker, worker_registration
from rq.job import Job
from rq.registry import StartedJobRegistry

ROOT = Path(__file__).resolve().parents[2]

# (owner, attribute, the parameters the service passes or overrides with, in order) -> where it is used
INTERNALS = [
    (SimpleWorker, "execute_job", ["self", "job", "queue"]),  # ModelWorker.execute_job: heartbeats around it
    (SimpleWorker, "maintain_heartbeats", ["self", "job"]),  # ModelWorker._beat
    (SimpleWorker, "set_current_job_working_time", ["self", "current_job_working_time", "pipeline"]),
    (SimpleWorker, "handle_execution_ended", ["self", "job", "queue", "heartbeat_ttl"]),  # stops the beat first
    (SimpleWorker, "get_heartbeat_ttl", ["self", "job"]),
    (SimpleWorker, "heartbeat", ["self", "timeout", "pipeline"]),  # + the published models
    (SimpleWorker, "register_birth", ["self"]),
    (SimpleWorker, "register_death", ["self"]),
    (SimpleWorker, "handle_exception", ["self", "job", "exc_info"]),  # input errors logged without a traceback
    (worker_registration, "register", ["worker", "pipeline"]),  # again at each heartbeat (a Redis restart)
    (Job, "_handle_failure", ["self", "exc_string", "pipeline", "worker_name"]),  # RedisBackend._fail_unrun
    (StartedJobRegistry, "cleanup", ["self", "timestamp", "exception_handlers"]),  # the API's abandoned-job pass
    # worker/slots.py: the main thread owns the signals, a slot leaves its dequeue loop through heartbeat()
    (SimpleWorker, "_install_signal_handlers", ["self"]),
    (SimpleWorker, "get_state", ["self"]),
    (SimpleWorker, "work", ["self", "burst", "logging_level"]),
]


@pytest.mark.parametrize(("owner", "name", "params"), INTERNALS, ids=[f"{o.__name__}.{n}" for o, n, _ in INTERNALS])
def test_an_rq_internal_the_service_uses_is_unchanged(owner, name, params) -> None:
    where = f"{owner.__name__}.{name} (rq {version('rq')})"
    assert hasattr(owner, name), f"{where} is gone: worker/__main__.py or app/backends/redis.py must change"
    found = list(inspect.signature(getattr(owner, name)).parameters)
    assert found[: len(params)] == params, f"{where} now takes {found}, the service calls it with {params}"


def test_rq_job_attributes_the_worker_reads() -> None:
    """RestrictedJob refuses callbacks by their stored names; the heartbeat reads the job-monitoring settings."""
    job = Job(connection=Redis())  # a client that never connects: no command is sent
    for name in ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name", "retries_left"):
        assert hasattr(job, name), f"rq.job.Job has no {name} (rq {version('rq')})"
    for prop in ("func", "success_callback", "failure_callback", "stopped_callback"):
        assert isinstance(inspect.getattr_static(Job, prop), property), f"Job.{prop} is no longer a property"
    assert "job_monitoring_interval" in inspect.signature(SimpleWorker.__init__).parameters
    # ModelWorker.get_heartbeat_ttl reads how long the job has run (a worker instance needs Redis: read the source)
    assert "self.current_job_working_time" in inspect.getsource(SimpleWorker.__init__)


def test_what_job_slots_rely_on() -> None:
    """worker/slots.py: RQ's warm-shutdown flag, the dequeue wait it shortens, StopRequested ending work() quietly,
    and the thread-safe timer timeout."""
    from rq.exceptions import StopRequested
    from rq.timeouts import BaseDeathPenalty, TimerDeathPenalty

    assert isinstance(inspect.getattr_static(SimpleWorker, "dequeue_timeout"), property)
    work = inspect.getsource(SimpleWorker.work)
    assert "self._stop_requested" in work and "except StopRequested" in work and "self.dequeue_timeout" in work
    assert "self.heartbeat()" in inspect.getsource(SimpleWorker.dequeue_job_and_maintain_ttl)
    assert issubclass(TimerDeathPenalty, BaseDeathPenalty) and issubclass(StopRequested, Exception)


def test_the_installed_rq_is_a_pinned_supported_release() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (rq,) = [Requirement(d) for d in deps if Requirement(d).name == "rq"]
    assert version("rq") in rq.specifier, f"rq {version('rq')} is outside the supported {rq.specifier}"
