"""Graceful shutdown of the API: SIGTERM to `python -m app` (uvicorn, embedded mode) while a synchronous request
is in flight: the request gets its full answer, then the server exits 0. (A worker's warm shutdown during a job is
in test_worker_faults.py.)"""

from __future__ import annotations

import signal
import threading
import time

import pytest
import relkit
from apikit import SPEECH, write_checkpoints
from servicekit import free_port, http, kill, post_json, wait_for, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_lets_an_in_flight_request_finish(tmp_path):
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    port = free_port()
    env = relkit.service_env(checkpoints, None, delay=2.0, EMBEDDED_WORKERS="1")
    api = relkit.spawn("app", env, tmp_path / "api.log", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(base + "/readyz", api, tmp_path / "api.log", timeout=60)
        answers: list = []
        request = threading.Thread(
            target=lambda: answers.append(post_json(base + "/generate/speech", {"model": SPEECH, "duration_s": 0.1}))
        )
        request.start()
        submitted = 'vrnn_jobs_submitted_total{kind="generate_speech"} 1.0'
        wait_for(  # the request is in: its job (2 s) has been submitted
            lambda: submitted in http("GET", base + "/metrics")[2].decode(),
            30,
            "the request's job",
            step=0.05,
        )
        api.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        request.join(timeout=30)
        status, _, body = answers[0]
        assert status == 200 and body[:4] == b"RIFF", (status, body[:300])
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught (exit status -SIGTERM).
        assert api.wait(timeout=30) in (0, -signal.SIGTERM)
        log = (tmp_path / "api.log").read_text()
        assert "Application shutdown complete" in log and log.index("POST /generate/speech") < log.index(
            "Application shutdown complete"
        )
        print(f"uvicorn SIGTERM -> in-flight request answered, server exited {time.monotonic() - sent:.1f} s later")
    finally:
        kill(api)
