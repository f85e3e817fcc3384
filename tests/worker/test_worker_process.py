"""`python -m worker` against a real Redis (database 14, emptied before and after): jobs enqueued with
worker.queueing run in the worker process; a job whose worker is SIGKILLed is finished by another."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import soundfile as sf
from servicekit import ROOT, kill, start, wait_for
from workerkit import HAND, REDIS_URL, SPEECH, SPEECH_RNN, b64, model_worker, strokes_json, take_job, wav

from worker import queueing

# Imported by the worker as `workerkit` (tests/worker is on its PYTHONPATH): the name `tests` is taken by a
# top-level package that the Hershey-Fonts distribution installs.
SLOW_JOB = "workerkit.slow_job"
PNG = b"\x89PNG\r\n\x1a\n"


def worker_env(ckpt_dir: Path, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFAULT_", "WORKER_"))}
    env.update(
        REDIS_URL=REDIS_URL,
        QUEUE_NAME=queue,
        CHECKPOINT_DIR=str(ckpt_dir),
        DEVICE="cpu",
        DEFAULT_SPEECH_MODEL=SPEECH,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]),
        OMP_NUM_THREADS="1",
    )
    return env


def start_worker(env: dict[str, str], *args: str, log_path: Path | None = None) -> subprocess.Popen:
    return start(["-m", "worker", *args], env, log_path, new_session=True)


def test_queueing_does_not_import_torch() -> None:
    code = "import worker.queueing, worker.contract, worker.limits, sys; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_enqueue_checks_its_arguments(conn) -> None:
    queue = queueing.make_queue(conn, "check")
    with pytest.raises(ValueError, match="unknown job kind 'eval'"):
        queueing.enqueue(queue, "eval", {}, 60, 60, 60, 0)
    with pytest.raises(ValueError, match="retries must be"):
        queueing.enqueue(queue, "score", {}, 60, 60, 60, -1)
    with pytest.raises(ValueError, match="job_timeout must be"):
        queueing.enqueue(queue, "score", {}, 0, 60, 60, 0)
    job_id = queueing.enqueue(queue, "list_models", None, 60, 60, 60, 2)
    job = queueing.fetch_job(conn, job_id)
    assert job.func_name == "worker.jobs.list_models" and list(job.args) == [{}]
    assert job.retries_left == 2 and job.timeout == 60 and job.description == "list_models"
    data = json.loads(zlib.decompress(conn.hget(job.key, "data")))  # JSON (zlib-compressed by RQ), not pickle
    assert data[0] == "worker.jobs.list_models" and data[2] == [{}]
    assert queueing.fetch_job(conn, "no-such-job") is None and queueing.job_error(job) is None


def test_burst_worker_runs_the_jobs(conn, ckpt_dir: Path, tmp_path: Path) -> None:
    from rq import Retry
    from rq.job import JobStatus

    from worker import jobs
    from worker.cache import ModelCache, set_cache

    queue = queueing.make_queue(conn, "burst")
    enqueue = lambda kind, params, retries=0: queueing.enqueue(queue, kind, params, 120, 600, 600, retries)  # noqa: E731
    ids = {
        "speech": enqueue("generate_speech", {"duration_s": 0.2, "seed": 42}),
        "hand": enqueue("generate_handwriting", {"steps": 30, "seed": 1}),
        "score": enqueue("score", {"data_b64": b64(wav(0.25)), "filename": "a.wav", "num_samples": 4}),
        "png": enqueue("analyze_latent", {"data_b64": b64(strokes_json()), "format": "png"}),
        "models": enqueue("list_models", {}),
        "bad": enqueue("generate_speech", {"duration_s": -1}, retries=3),  # input errors are not retried
        "unknown": enqueue("score", {"data_b64": b64(wav()), "model": "nope"}, retries=3),
    }
    forbidden = queue.enqueue_call(func="os.getcwd", args=(), result_ttl=600, failure_ttl=600).id
    retry = Retry(max=2)
    late = queue.enqueue_call(func=SLOW_JOB, args=({"seconds": 5},), timeout=1, failure_ttl=600, retry=retry).id
    log_path = tmp_path / "worker.log"
    args = ["--burst", "--name", "burst-worker", "--allow-function", SLOW_JOB]
    proc = start_worker(worker_env(ckpt_dir, "burst"), *args, log_path=log_path)
    assert proc.wait(timeout=60) == 0, log_path.read_text()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]

    fetch = lambda key: queueing.fetch_job(conn, ids[key])  # noqa: E731
    for key in ("speech", "hand", "score", "png", "models"):
        assert fetch(key).get_status() == JobStatus.FINISHED, (key, log_path.read_text())
    speech = fetch("speech").return_value()
    data, rate = sf.read(io.BytesIO(base64.b64decode(speech["body_b64"])))
    assert rate == 16000 and len(data) == 3200 and speech["headers"]["X-Seed"] == "42"
    # The same seed in this process gives the same bytes as in the worker process.
    saved = __import__("worker.cache", fromlist=["_cache"])._cache
    set_cache(ModelCache(ckpt_dir, device="cpu", default_speech=SPEECH))
    try:
        assert jobs.generate_speech({"duration_s": 0.2, "seed": 42}) == speech
    finally:
        set_cache(saved)
    assert fetch("hand").return_value()["media_type"] == "image/svg+xml"
    s = fetch("score").return_value()["json"]
    assert s["model"] == SPEECH and s["log_likelihood"] >= s["elbo"] and s["frames"] == 20
    assert base64.b64decode(fetch("png").return_value()["body_b64"]).startswith(PNG)
    assert fetch("png").return_value()["headers"]["X-Model"] == HAND
    assert len(fetch("models").return_value()["json"]["models"]) == 3

    bad = fetch("bad")
    assert bad.get_status() == JobStatus.FAILED and bad.retries_left == 0  # retries cancelled: it would fail again
    expected = {
        "type": "JobInputError",
        "message": "'duration_s' must be a number from 0.05 to 20, got -1; pick a value in that range",
        "status": 422,
    }
    assert bad.get_meta()["error"] == expected and queueing.job_error(bad) == expected
    without_meta = fetch("bad")
    without_meta.meta.pop("error")
    without_meta.save_meta()
    assert queueing.job_error(without_meta) == expected  # parsed from the stored traceback
    unknown = queueing.job_error(fetch("unknown"))
    assert unknown["type"] == "UnknownModelError" and unknown["status"] == 404 and "'nope'" in unknown["message"]
    timed_out = queueing.job_error(queueing.fetch_job(conn, late))
    assert timed_out["type"] == "JobTimeoutException" and timed_out["status"] == 504  # and not retried:
    assert sum(e.get("event") == "job_started" and e["job_id"] == late for e in lines) == 1
    refused = queueing.job_error(queueing.fetch_job(conn, forbidden))
    assert refused["type"] == "ForbiddenJobError" and "refusing to run 'os.getcwd'" in refused["message"]

    events = {(e.get("event"), e.get("job_id")) for e in lines}
    assert ("job_finished", ids["speech"]) in events and ("job_failed", ids["bad"]) in events
    assert sum(e.get("event") == "job_started" and e["job_id"] == ids["bad"] for e in lines) == 1  # no retry
    assert any(e.get("event") == "models_loaded" and len(e["models"]) == 3 for e in lines)
    assert not any("data_b64" in line for line in log_path.read_text().splitlines())  # uploads stay out of logs
    assert queueing.live_workers(conn) == {}  # a stopped worker unpublishes its models


def test_worker_without_checkpoints_exits_with_status_1(conn, tmp_path: Path) -> None:
    env = worker_env(tmp_path / "empty", "none")
    done = subprocess.run([sys.executable, "-m", "worker", "--burst"], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 1 and b"no checkpoint could be loaded" in done.stderr


@pytest.mark.slow
def test_a_killed_workers_job_is_retried_by_another_worker(conn, ckpt_dir: Path, tmp_path: Path) -> None:
    """SIGKILL the worker running a job: a second worker's maintenance pass re-enqueues the job (one retry
    left) and runs it; SIGTERM during that job is a warm shutdown: the job finishes, then the worker exits."""
    from rq import Retry
    from rq.job import JobStatus

    queue_name = "killed"
    env = worker_env(ckpt_dir, queue_name)
    fast = ["--heartbeat", "1", "--heartbeat-grace", "1", "--maintenance-interval", "1", "--allow-function", SLOW_JOB]
    first = start_worker(env, *fast, "--name", "first", log_path=tmp_path / "first.log")
    second = None
    try:
        watch = [(first, tmp_path / "first.log")]
        wait_for(lambda: "first" in queueing.live_workers(conn, queue_name), 60, "the first worker", watch=watch)
        queue = queueing.make_queue(conn, queue_name)
        job = queue.enqueue_call(
            func=SLOW_JOB, args=({"seconds": 6},), timeout=60, result_ttl=600, failure_ttl=600, retry=Retry(max=1)
        )
        wait_for(lambda: job.get_status() == JobStatus.STARTED, 30, "the first worker to start the job", watch=watch)
        job.refresh()
        assert job.worker_name == "first"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        second = start_worker(env, *fast, "--name", "second", log_path=tmp_path / "second.log")
        wait_for(
            lambda: job.get_status() == JobStatus.STARTED and job.refresh() is None and job.worker_name == "second",
            60,
            "the second worker to take the job over",
            watch=[(second, tmp_path / "second.log")],
        )
        time.sleep(3)  # past the registry entry's first expiry (heartbeat 1 s + grace 1 s): heartbeats renewed it
        entries = conn.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
        assert len(entries) == 1 and entries[0][0].decode().startswith(job.id) and entries[0][1] > time.time()
        live = queueing.live_workers(conn, queue_name)
        assert set(live["second"]["models"]) == {SPEECH, SPEECH_RNN, HAND} and live["second"]["device"] == "cpu"
        second.send_signal(signal.SIGTERM)  # warm shutdown: the job finishes first
        assert second.wait(timeout=30) == 0, (tmp_path / "second.log").read_text()
        assert job.get_status() == JobStatus.FINISHED, (tmp_path / "second.log").read_text()
        assert job.return_value()["json"]["pid"] == second.pid
        assert job.retries_left == 0
        assert "second" not in queueing.live_workers(conn, queue_name)
    finally:
        for proc in (first, second):
            kill(proc)


def test_an_abandoned_job_without_retries_fails_with_its_error_recorded(conn) -> None:
    """What a live worker's maintenance pass does to the job of a dead worker once its heartbeats stop."""
    from rq.job import JobStatus

    queue = queueing.make_queue(conn, "abandoned")
    job_id = queueing.enqueue(queue, "list_models", {}, 60, 600, 600, 0)
    # The job starts on "dead", which then sends no heartbeat: as if SIGKILLed.
    model_worker(conn, "dead", "abandoned").prepare_execution(take_job(conn, queue))
    started = queue.started_job_registry
    assert started.get_job_ids(cleanup=False) == [job_id]
    live = model_worker(conn, "live", "abandoned")
    live.clean_registries()
    assert started.get_job_ids(cleanup=False) == [job_id]  # its entry has not expired yet
    time.sleep(2.2)
    live.clean_registries()
    job = queueing.fetch_job(conn, job_id)
    assert job.get_status() == JobStatus.FAILED and started.get_job_ids(cleanup=False) == []
    assert job.get_meta()["error"]["type"] == "AbandonedJobError"
    error = queueing.job_error(job)
    assert error["type"] == "AbandonedJobError" and error["status"] == 500 and "killed or lost" in error["message"]
    job.meta.pop("error")  # as when another client's registry call failed the job: read from the result instead
    job.save_meta()
    assert queueing.job_error(job) == error


def test_live_workers_reads_the_published_index_not_the_keyspace(conn) -> None:
    """Published models are found through queueing.MODELS_INDEX_KEY (one SMEMBERS, one MGET, whatever else Redis
    holds); an expired publication (a dead worker) is not live and leaves the index; a withdrawn one is gone."""
    for i in range(300):  # other keys (jobs, results): no reader walks them
        conn.set(f"rq:job:filler-{i}", "x")
    queueing.publish_models(conn, "a", json.dumps({"models": ["m"], "queue": "q1"}), 60)
    queueing.publish_models(conn, "b", json.dumps({"models": ["n"], "queue": "q2"}), 60)
    assert set(queueing.live_workers(conn)) == {"a", "b"}
    assert queueing.live_workers(conn, "q1") == {"a": {"models": ["m"], "queue": "q1"}}
    conn.delete(queueing.models_key("b"))  # its TTL ran out: the worker died without withdrawing
    assert set(queueing.live_workers(conn)) == {"a"}
    assert conn.smembers(queueing.MODELS_INDEX_KEY) == {b"a"}
    queueing.publish_models(conn, "b", json.dumps({"models": ["n"], "queue": "q2"}), 60)  # back (a heartbeat)
    assert set(queueing.live_workers(conn)) == {"a", "b"}
    queueing.withdraw_models(conn, "a")
    assert set(queueing.live_workers(conn)) == {"b"} and not conn.exists(queueing.models_key("a"))
    conn.set(queueing.models_key("c"), "not json")
    conn.sadd(queueing.MODELS_INDEX_KEY, "c")
    assert set(queueing.live_workers(conn)) == {"b"}


def test_a_worker_that_publishes_while_a_reader_prunes_keeps_its_place(conn) -> None:
    """The race a reader's MGET and its removal leave: the worker publishes again in between (its SADD finds its
    name still there); the removal must not take it out, since its key exists again."""
    queueing.publish_models(conn, "w", json.dumps({"models": ["m"], "queue": "q"}), 60)
    conn.delete(queueing.models_key("w"))  # expired
    real_mget = conn.mget

    def mget_then_publish(keys):
        values = real_mget(keys)  # the reader sees the key missing ...
        queueing.publish_models(conn, "w", json.dumps({"models": ["m"], "queue": "q"}), 60)  # ... it comes back
        return values

    conn.mget = mget_then_publish
    try:
        assert queueing.live_workers(conn) == {}
    finally:
        del conn.mget
    assert set(queueing.live_workers(conn)) == {"w"}  # still in the index


def test_publishing_inside_a_pipeline_joins_it(conn) -> None:
    pipe = conn.pipeline()
    queueing.publish_models(pipe, "p", json.dumps({"models": [], "queue": "q"}), 60)
    assert queueing.live_workers(conn) == {}  # nothing sent yet
    pipe.execute()
    assert set(queueing.live_workers(conn)) == {"p"}
