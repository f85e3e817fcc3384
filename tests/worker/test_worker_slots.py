"""`python -m worker --slots N` against a real Redis (database 14): N jobs at once in one process, concurrent
generation sharing the model's sampling engine with the bytes of an unbatched run, a job timeout per slot, and warm
and cold shutdown owned by the main thread."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from servicekit import kill, wait_for
from test_worker_process import SLOW_JOB, start_worker, worker_env
from workerkit import SPEECH

from worker import queueing


def events(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_concurrent_generation_jobs_share_the_engine_and_keep_their_bytes(conn, ckpt_dir: Path, tmp_path: Path):
    from rq.job import JobStatus

    from worker.cache import ModelCache
    from worker.jobs import Jobs

    queue = queueing.make_queue(conn, "slots")
    params = [{"duration_s": 1.0, "seed": s} for s in range(6)] + [{"steps": 120, "seed": s} for s in range(6)]
    ids = [
        queueing.enqueue(queue, "generate_speech" if "duration_s" in p else "generate_handwriting", p, 120, 600, 600, 0)
        for p in params
    ]
    log_path = tmp_path / "worker.log"
    proc = start_worker(worker_env(ckpt_dir, "slots"), "--burst", "--slots", "6", "--name", "s", log_path=log_path)
    try:
        assert proc.wait(timeout=120) == 0, log_path.read_text()
    finally:
        kill(proc)
    lines = events(log_path)
    jobs = [queueing.fetch_job(conn, i) for i in ids]
    assert all(j.get_status() == JobStatus.FINISHED for j in jobs), log_path.read_text()
    assert {e["worker"] for e in lines if e.get("event") == "job_started"} <= {f"s.{k}" for k in range(6)}
    assert len({e["worker"] for e in lines if e.get("event") == "job_started"}) > 1  # the slots shared the jobs
    # Every body is the one the same parameters give unbatched, alone, in this process.
    solo = Jobs(ModelCache(ckpt_dir, device="cpu", default_speech=SPEECH))
    for job, p in zip(jobs, params, strict=True):
        kind = "generate_speech" if "duration_s" in p else "generate_handwriting"
        assert job.return_value() == solo.run(kind, p), (kind, p)
    stats = next(e for e in lines if e.get("event") == "engine_stats")["engines"]
    rows = {int(r) for s in stats.values() for r in s["batch_sizes"]}
    assert max(rows) > 1, stats  # some steps ran several requests at once


@pytest.mark.slow
def test_concurrent_text_jobs_share_the_text_engine_and_keep_their_bytes(conn, tmp_path: Path):
    """Lines of text through a worker's slots (Redis mode) join the text model's engine (model.engine.TextEngine)
    and each job returns what it returns alone, in this process, without batching."""
    from rq.job import JobStatus
    from tinyckpt import TEXT, write_tiny_text_checkpoint

    from model import native
    from worker.cache import ModelCache
    from worker.jobs import Jobs

    if native.library() is None:
        pytest.skip(f"no native library: {native.status()}")
    directory = tmp_path / "ckpts"
    directory.mkdir()
    write_tiny_text_checkpoint(directory / f"{TEXT}.safetensors")
    queue = queueing.make_queue(conn, "text-slots")
    params = [{"text": t, "seed": s, "steps": 60} for s, t in enumerate(["hello", "world", "he\nrode", "low"] * 2)]
    ids = [queueing.enqueue(queue, "generate_handwriting", p, 120, 600, 600, 0) for p in params]
    log_path = tmp_path / "worker.log"
    proc = start_worker(
        worker_env(directory, "text-slots"), "--burst", "--slots", "4", "--name", "t", log_path=log_path
    )
    try:
        assert proc.wait(timeout=120) == 0, log_path.read_text()
    finally:
        kill(proc)
    jobs = [queueing.fetch_job(conn, i) for i in ids]
    assert all(j.get_status() == JobStatus.FINISHED for j in jobs), log_path.read_text()
    solo = Jobs(ModelCache(directory, device="cpu"))
    for job, p in zip(jobs, params, strict=True):
        assert job.return_value() == solo.run("generate_handwriting", p), p
    stats = next(e for e in events(log_path) if e.get("event") == "engine_stats")["engines"]
    assert max(int(r) for r in stats[TEXT]["batch_sizes"]) > 1, stats  # lines of several jobs per step


@pytest.mark.slow
def test_a_slot_times_out_its_own_job_and_the_others_go_on(conn, ckpt_dir: Path, tmp_path: Path) -> None:
    from rq.job import JobStatus

    queue = queueing.make_queue(conn, "slot-timeout")
    late = queue.enqueue_call(func=SLOW_JOB, args=({"seconds": 30},), timeout=1, failure_ttl=600).id
    quick = [queue.enqueue_call(func=SLOW_JOB, args=({"seconds": 0.2},), result_ttl=600).id for _ in range(4)]
    log_path = tmp_path / "worker.log"
    env = worker_env(ckpt_dir, "slot-timeout")
    proc = start_worker(env, "--burst", "--slots", "2", "--allow-function", SLOW_JOB, log_path=log_path)
    started = time.monotonic()
    try:
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    finally:
        kill(proc)
    assert time.monotonic() - started < 25  # the 30 s job was stopped by its timeout, not run to the end
    error = queueing.job_error(queueing.fetch_job(conn, late))
    assert error["type"] == "JobTimeoutException" and error["status"] == 504
    assert all(queueing.fetch_job(conn, i).get_status() == JobStatus.FINISHED for i in quick)


@pytest.mark.slow
@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_is_a_warm_then_a_cold_shutdown_of_every_slot(conn, ckpt_dir: Path, tmp_path: Path, signals):
    """One SIGTERM: the running jobs finish, the idle slots leave at once, the process exits 0. A second: the running
    jobs fail through RQ's path (and, with retries left, go back on the queue) and the process exits."""
    from rq import Retry
    from rq.job import JobStatus

    name = f"slot-stop-{signals}"
    queue = queueing.make_queue(conn, name)
    log_path = tmp_path / "worker.log"
    env = worker_env(ckpt_dir, name)
    proc = start_worker(env, "--slots", "3", "--name", "w", "--allow-function", SLOW_JOB, log_path=log_path)
    try:
        watch = [(proc, log_path)]
        wait_for(lambda: len(queueing.live_workers(conn, name)) == 3, 60, "three slots", watch=watch)
        jobs = [
            queue.enqueue_call(func=SLOW_JOB, args=({"seconds": 4},), result_ttl=600, failure_ttl=600, retry=Retry(1))
            for _ in range(2)
        ]
        wait_for(lambda: all(j.get_status() == JobStatus.STARTED for j in jobs), 30, "two busy slots", watch=watch)
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.5)  # RQ ignores a repeat within one second
        assert proc.wait(timeout=30) == 0 if signals == 1 else proc.wait(timeout=30) is not None
    finally:
        kill(proc)
    for job in jobs:
        job.refresh()
        if signals == 1:
            assert job.get_status() == JobStatus.FINISHED, log_path.read_text()
        else:  # failed in its slot, and re-queued for its one retry
            assert job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED), log_path.read_text()
            assert job.retries_left == 0
    assert queueing.live_workers(conn, name) == {}  # every slot unpublished its models


@pytest.mark.slow
def test_a_killed_multi_slot_process_has_each_of_its_jobs_recovered_and_counted_once(
    conn, ckpt_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL a process whose two slots are busy: a second process's maintenance finds both jobs abandoned by their own
    registry entries, re-enqueues each for its one retry with one death counted, and runs them to the end."""
    from rq import Retry
    from rq.job import JobStatus

    name = "slot-killed"
    queue = queueing.make_queue(conn, name)
    env = worker_env(ckpt_dir, name)
    fast = ["--heartbeat", "1", "--heartbeat-grace", "1", "--maintenance-interval", "1", "--allow-function", SLOW_JOB]
    first = start_worker(env, *fast, "--slots", "2", "--name", "first", log_path=tmp_path / "first.log")
    second = None
    try:
        watch = [(first, tmp_path / "first.log")]
        wait_for(lambda: len(queueing.live_workers(conn, name)) == 2, 60, "two slots", watch=watch)
        jobs = [
            queue.enqueue_call(func=SLOW_JOB, args=({"seconds": 5},), result_ttl=600, failure_ttl=600, retry=Retry(1))
            for _ in range(2)
        ]
        wait_for(lambda: all(j.get_status() == JobStatus.STARTED for j in jobs), 30, "both slots busy", watch=watch)
        assert {j.refresh() or j.worker_name for j in jobs} == {"first.0", "first.1"}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_worker(env, *fast, "--slots", "2", "--name", "second", log_path=tmp_path / "second.log")
        wait_for(
            lambda: all(j.get_status() == JobStatus.FINISHED for j in jobs),
            90,
            "the second process to finish both jobs",
            watch=[(second, tmp_path / "second.log")],
        )
        for job in jobs:
            job.refresh()
            assert job.return_value()["json"]["pid"] == second.pid and job.retries_left == 0
            assert job.meta["worker_deaths"] == 1 and job.meta["attempts"] == 2, job.meta  # one death each, not two
    finally:
        for proc in (first, second):
            kill(proc)
