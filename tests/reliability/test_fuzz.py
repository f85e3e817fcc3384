"""Property-based fuzzing of the HTTP contract with schemathesis: cases generated from the app's own OpenAPI
document (valid and invalid bodies, query strings, headers, paths) against the ASGI app on tiny checkpoints, in
embedded mode with Gauss-output and with mixture-output (GMM) default models, and in Redis mode (a private
redis-server, a real `python -m worker`) with GMM defaults. No answer may be a 5xx. Hypothesis also sends valid
generate requests with every temperature and bias the document allows, subnormal floats included: each must be a
200 (issue 8: a temperature of 5e-324 was a 500 on GMM models). Examples are bounded so that each run takes well
under a minute."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import relkit
from apikit import HAND_GMM, SPEECH_GMM, make_settings, write_checkpoints, write_gmm_checkpoints
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servicekit import kill, wait_for

from app.main import create_app
from worker import limits

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30  # per operation and phase


# The schemas are loaded when the module is collected; the checkpoints are written (and removed) by the fixture.
# Gauss outputs (speech-vrnn, speech-rnn, hand-vrnn) in one folder, mixture outputs (speech-vrnn-gmm, hand-vrnn-gmm,
# the defaults there: the sampling path of the shipped handwriting default) in another.
BASE = Path(tempfile.gettempdir()) / f"vrnn-fuzz-checkpoints-{os.getpid()}"
CHECKPOINTS, GMM_CHECKPOINTS = BASE / "gauss", BASE / "gmm"
QUEUE = "vrnn-fuzz"


def fuzz_settings(directory: Path, **overrides):
    values = dict(
        sync_wait_s=5,
        max_queued_jobs=10_000,  # generated requests come fast: backpressure (503) is not what is tested here
        max_jobs_per_client=0,
        api_keys="",
    )
    return make_settings(directory, **{**values, **overrides})


APP = create_app(fuzz_settings(CHECKPOINTS))
GMM_APP = create_app(fuzz_settings(GMM_CHECKPOINTS))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
gmm_schema = schemathesis.openapi.from_asgi("/openapi.json", GMM_APP)  # Redis mode: its cases, another app
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a failure here is reproducible
)


@pytest.fixture(scope="module", autouse=True)
def running_apps():
    write_checkpoints(CHECKPOINTS)
    write_gmm_checkpoints(GMM_CHECKPOINTS)
    # Runs the lifespans: checkpoints loaded, job threads started. Schemathesis also starts (and, after each test,
    # stops) the lifespan of an app it calls, which replaces app.state.backend: the property tests below call an app
    # of their own.
    try:
        with TestClient(APP), TestClient(GMM_APP), TestClient(create_app(fuzz_settings(GMM_CHECKPOINTS))) as gmm:
            yield {"gmm": gmm}
    finally:
        shutil.rmtree(BASE, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_app(running_apps, tmp_path_factory):
    """The API in Redis mode on the GMM checkpoints, with a real worker (which picks the GMM defaults) behind it.
    SYNC_WAIT_S is long, so that every answer is the job's own and never a 202 that would hide a failure."""
    tmp = tmp_path_factory.mktemp("fuzz-redis")
    with relkit.redis_server(tmp / "redis") as server:
        env = relkit.service_env(GMM_CHECKPOINTS, server.url, QUEUE_NAME=QUEUE)
        worker = relkit.spawn("worker", env, tmp / "worker.log", *relkit.FAST_WORKER)
        try:
            values = dict(redis_url=server.url, queue_name=QUEUE, sync_wait_s=60)
            fuzzed, app = (create_app(fuzz_settings(GMM_CHECKPOINTS, **values)) for _ in range(2))  # as above
            with TestClient(app) as c:
                try:
                    wait_for(lambda: c.get("/readyz").status_code == 200, 120, "the worker to be ready")
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{(tmp / 'worker.log').read_text()[-4000:]}") from None
                yield fuzzed, c
        finally:
            kill(worker)


def check(case, response) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )


@schema.parametrize()
@FUZZ
def test_no_server_errors(case):
    check(case, case.call())


@gmm_schema.parametrize()
@FUZZ
def test_no_server_errors_on_gmm_models(case):
    check(case, case.call())


@gmm_schema.parametrize()
@FUZZ
def test_no_server_errors_in_redis_mode(case, redis_app):
    check(case, case.call(app=redis_app[0]))


# Sampling knobs ------------------------------------------------------------------------------------------------
# The schema-driven cases above rarely reach a model: most carry some other invalid field (a prime of "", a random
# model name). These send valid requests only, with every temperature and bias the document allows, subnormal
# floats included (where the old maths divided logits by T into inf, and the 500 of issue 8 came from).

TINIEST = 5e-324  # the smallest positive double: above the exclusive minimum 0, so accepted
temperatures = st.floats(min_value=TINIEST, max_value=limits.MAX_TEMPERATURE, allow_subnormal=True)
biases = st.floats(min_value=0.0, max_value=limits.MAX_BIAS, allow_subnormal=True)
seeds = st.integers(0, limits.MAX_SEED)
speech_bodies = st.fixed_dictionaries(
    {"temperature": temperatures, "duration_s": st.sampled_from([0.05, 0.1]), "seed": seeds},
    optional={"mean": st.booleans()},
)
handwriting_bodies = st.fixed_dictionaries(
    {"temperature": temperatures, "steps": st.integers(1, 20), "seed": seeds}, optional={"bias": biases}
)
sample_requests = st.one_of(
    st.tuples(st.just("/generate/speech"), speech_bodies),
    st.tuples(st.just("/generate/handwriting"), handwriting_bodies),
)
KNOBS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def sample_examples(test):
    """The issue's requests, and the other ends of the ranges, on top of the generated ones."""
    for temperature, bias in [(TINIEST, 0.0), (1e-300, limits.MAX_BIAS), (1e-45, TINIEST), (5.0, limits.MAX_BIAS)]:
        body = {"temperature": temperature, "steps": 12, "seed": 1, "bias": bias}
        test = example(request=("/generate/handwriting", body))(test)
    test = example(request=("/generate/speech", {"temperature": TINIEST, "duration_s": 0.05, "seed": 1}))(test)
    return example(request=("/generate/speech", {"temperature": 1e-300, "duration_s": 0.05, "mean": False}))(test)


def check_sample(c: TestClient, request, models: tuple[str, str]) -> None:
    path, body = request
    r = c.post(path, json=body)
    assert r.status_code == 200, f"POST {path} {body} -> {r.status_code}: {r.text[:500]}"
    assert r.headers["x-model"] in models


@KNOBS
@sample_examples
@given(request=sample_requests)
def test_every_accepted_temperature_and_bias_samples_on_gmm_models(running_apps, request):
    check_sample(running_apps["gmm"], request, (SPEECH_GMM, HAND_GMM))


@KNOBS
@sample_examples
@given(request=sample_requests)
def test_every_accepted_temperature_and_bias_samples_in_redis_mode(redis_app, request):
    check_sample(redis_app[1], request, (SPEECH_GMM, HAND_GMM))
