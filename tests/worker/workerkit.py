"""Helpers for the worker tests: tiny checkpoints, test inputs, and a slow job for the worker process tests.

Imports only the standard library, tinyckpt and scripts/servicekit.py (torch-free) at the top: `python -m worker
--allow-function workerkit.slow_job` (with tests/ and tests/worker on PYTHONPATH) imports this module inside the
worker process, and test_jobs.py's child process too, so it puts scripts/ on the path itself.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import tinyckpt
from tinyckpt import HAND, SPEECH, SPEECH_RNN, b64, strokes_json  # noqa: F401 (the tests import these from here)

if str(Path(__file__).resolve().parents[2] / "scripts") not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parents[2] / "scripts"))
from servicekit import tone_wav as wav  # noqa: F401

REDIS_URL = "redis://127.0.0.1:6379/14"  # the worker tests' own database: emptied before and after


def write_checkpoint(path: Path, modality: str, family: str = "vrnn") -> Path:
    return tinyckpt.write_tiny_checkpoint(path, tinyckpt.tiny_config(modality, family, output="gmm"))


def write_checkpoints(directory: Path) -> Path:
    """speech-vrnn, speech-rnn and hand-vrnn (mixture outputs) in `directory`."""
    return tinyckpt.write_checkpoints(directory, output="gmm")


IAM_XML = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><StrokeSet>'
    '<Stroke><Point x="100" y="200" time="0.1"/><Point x="110" y="190" time="0.2"/><Point x="120" y="195" time="0.3"/>'
    '</Stroke><Stroke><Point x="140" y="200" time="0.5"/><Point x="150" y="180" time="0.6"/></Stroke>'
    "</StrokeSet></WhiteboardCaptureSession>\n"
)


def slow_job(params: dict[str, Any]) -> dict[str, Any]:
    """A job that sleeps `params["seconds"]` and reports which process ran it (worker process tests only)."""
    seconds = float(params["seconds"])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"media_type": "application/json", "headers": {}, "json": {"pid": os.getpid(), "slept": seconds}}


def model_worker(conn: Any, name: str, queue: str, models: list[str] | None = None) -> Any:
    """A ModelWorker on `queue` for tests that drive RQ's calls by hand: 1 s heartbeats, 1 s grace."""
    from worker import queueing
    from worker.__main__ import ModelWorker, RestrictedJob

    return ModelWorker(
        [queue],
        name=name,
        connection=conn,
        serializer=queueing.SERIALIZER,
        job_class=RestrictedJob,
        job_monitoring_interval=1,
        models_info={"models": models or []},
        heartbeat_grace=1,
    )


def take_job(conn: Any, queue: Any) -> Any:
    """The next job of `queue`, dequeued as a worker takes it."""
    from worker import queueing
    from worker.__main__ import RestrictedJob

    job, _ = queue.dequeue_any([queue], None, connection=conn, job_class=RestrictedJob, serializer=queueing.SERIALIZER)
    return job
