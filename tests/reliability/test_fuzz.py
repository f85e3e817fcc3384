"""Property-based fuzzing of the HTTP contract with schemathesis: cases generated from the app's own OpenAPI
document (valid and invalid bodies, query strings, headers, paths) against the ASGI app in embedded mode on tiny
checkpoints. No answer may be a 5xx. Examples are bounded so that the whole run takes well under a minute."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import relkit  # noqa: F401 (puts the API tests' helpers on the path)
from apikit import make_settings, write_checkpoints
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from app.main import create_app

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30  # per operation and phase


# The schema is loaded when the module is collected; the checkpoints are written (and removed) by the fixture.
CHECKPOINTS = Path(tempfile.gettempdir()) / f"vrnn-fuzz-checkpoints-{os.getpid()}"
APP = create_app(
    make_settings(
        CHECKPOINTS,
        sync_wait_s=5,
        max_queued_jobs=10_000,  # generated requests come fast: backpressure (503) is not what is tested here
        max_jobs_per_client=0,
        api_keys="",
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def running_app():
    write_checkpoints(CHECKPOINTS)
    try:
        with TestClient(APP):  # runs the lifespan: checkpoints loaded, job threads started
            yield APP
    finally:
        shutil.rmtree(CHECKPOINTS, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a failure here is reproducible
)
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )
