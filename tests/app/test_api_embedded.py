"""The HTTP API in embedded mode (jobs run in-process) through FastAPI's TestClient, on tiny checkpoints."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import soundfile as sf
from apikit import HAND, MAX_BODY, MAX_UPLOAD, SPEECH, SPEECH_RNN, jobs_held, make_settings, strokes_json, wav
from fastapi.testclient import TestClient

from app.backends import QueueFullError, UnavailableError
from app.deps import get_backend
from app.main import create_app

SVG = "{http://www.w3.org/2000/svg}"
PNG = b"\x89PNG\r\n\x1a\n"


def speech(client: TestClient, **params: Any):
    return client.post("/generate/speech", json={"model": SPEECH, "duration_s": 0.25, **params})


def poll(client: TestClient, location: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(location).json()
        if state["status"] in ("finished", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{location} did not finish in {timeout} s")


# Happy paths ---------------------------------------------------------------------------------------------------


def test_generate_speech_is_a_wav_of_the_asked_length(client):
    r = speech(client, seed=7, duration_s=0.5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert (r.headers["x-model"], r.headers["x-seed"], r.headers["x-output"]) == (SPEECH, "7", "sample")
    assert r.headers["x-job-id"]
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 8000, "PCM_16")
    mean = speech(client, seed=7, mean=True)
    assert mean.status_code == 200 and mean.headers["x-output"] == "mean"


def test_the_same_seed_gives_the_same_bytes(client):
    a, b, c = speech(client, seed=11), speech(client, seed=11), speech(client, seed=12)
    assert a.content == b.content != c.content
    drawn = speech(client)  # no seed: one is drawn and reported
    again = speech(client, seed=int(drawn.headers["x-seed"]))
    assert drawn.content == again.content
    h1 = client.post("/generate/handwriting", json={"steps": 40, "seed": 5})
    h2 = client.post("/generate/handwriting", json={"steps": 40, "seed": 5})
    assert h1.status_code == 200 and h1.content == h2.content


def test_generate_handwriting_svg_and_json(client):
    r = client.post("/generate/handwriting", json={"steps": 60, "seed": 1, "bias": 1.0, "color": "navy"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert (r.headers["x-model"], r.headers["x-seed"]) == (HAND, "1")
    root = ET.fromstring(r.content)
    assert root.tag == f"{SVG}svg" and root.findall(f".//{SVG}path")
    j = client.post("/generate/handwriting?format=json", json={"steps": 60, "seed": 1})
    assert j.status_code == 200 and j.headers["content-type"] == "application/json"
    offsets = j.json()["offsets"]
    assert len(offsets) == 60 and all(len(row) == 3 and row[2] in (0, 1) for row in offsets)


def test_score_an_upload_or_base64(client):
    audio = wav(0.25)
    r = client.post(
        "/score", files={"file": ("tone.wav", audio, "audio/wav")}, data={"model": SPEECH, "num_samples": 8}
    )
    assert r.status_code == 200, r.text
    s = r.json()
    assert r.headers["x-model"] == SPEECH and s["model"] == SPEECH and s["family"] == "vrnn"
    assert s["frames"] == 20 and len(s["per_frame"]) == 20 and s["num_samples"] == 8 and not s["exact"]
    assert all(math.isfinite(s[k]) for k in ("elbo", "log_likelihood", "nats_per_frame"))
    assert s["log_likelihood"] >= s["elbo"]
    assert s["space"] == "normalised" and math.isfinite(s["raw"]["log_likelihood"])
    same = client.post("/score", json={"model": SPEECH, "num_samples": 8, "data_b64": base64.b64encode(audio).decode()})
    assert same.status_code == 200 and same.json() == s
    exact = client.post("/score", files={"file": ("tone.wav", audio)}, data={"model": SPEECH_RNN}).json()
    assert exact["exact"] and exact["log_likelihood"] == exact["elbo"]
    # Without a model, the input's modality picks the default: strokes go to the handwriting model.
    hw = client.post("/score", files={"file": ("line.json", strokes_json(), "application/json")})
    assert hw.status_code == 200 and hw.json()["model"] == HAND and hw.json()["log_likelihood"] >= hw.json()["elbo"]


def test_analyze_latent_json_and_png(client):
    audio = wav(0.25)
    r = client.post("/analyze/latent", files={"file": ("tone.wav", audio)}, data={"model": SPEECH})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["frames"] == 20 and len(a["kl"]) == len(a["delta_mu"]) == len(a["kl_per_dim"]) == 20
    png = client.post("/analyze/latent?format=png", json={"data_b64": base64.b64encode(strokes_json()).decode()})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG) and png.headers["x-model"] == HAND


def test_async_job_polls_to_the_same_body(client):
    sync = speech(client, seed=21)
    body = {"model": SPEECH, "duration_s": 0.25, "seed": 21}
    r = client.post("/generate/speech", json=body, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/jobs/{job_id}" and r.headers["preference-applied"] == "respond-async"
    assert r.json()["kind"] == "generate_speech" and r.json()["status"] in ("queued", "started", "finished")
    state = poll(client, r.headers["location"])
    assert state["status"] == "finished" and state["error"] is None
    assert state["enqueued_at"].endswith("Z") and state["started_at"] and state["ended_at"]
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200 and result.content == sync.content
    assert result.headers["x-seed"] == "21" and result.headers["x-job-id"] == job_id
    # A failed job says why, and its result is the error the synchronous call gives.
    bad = client.post("/generate/speech", json={"model": "nope"}, headers={"Prefer": "respond-async"})
    state = poll(client, bad.headers["location"])
    assert state["status"] == "failed" and state["error_status"] == 404 and "nope" in state["error"]
    assert client.get(f"/jobs/{bad.json()['id']}/result").status_code == 404


# Backends that are busy or not up, faked ---------------------------------------------------------------------


class FakeBackend:
    """Jobs that never finish (or cannot be queued)."""

    mode = "embedded"

    def __init__(self, refuse: Exception | None = None):
        self.refuse = refuse

    def submit(self, kind, params, client=None):
        if self.refuse:
            raise self.refuse
        return "job-1"

    def status(self, job_id):
        return {"id": job_id, "kind": "score", "status": "started", "enqueued_at": None, "started_at": None}

    def wait(self, job_id, timeout):
        return self.status(job_id)

    def wait_result(self, job_id, timeout):
        return self.wait(job_id, timeout), None

    def result(self, job_id):
        from app.backends import JobPendingError

        raise JobPendingError(self.status(job_id))


@pytest.fixture()
def fake_client(checkpoint_dir):
    app = create_app(make_settings(checkpoint_dir, sync_wait_s=0.1, retry_after_s=7))
    with TestClient(app) as c:
        yield app, c


def test_a_slow_sync_call_falls_back_to_202_and_pending_results_are_202(fake_client):
    app, c = fake_client
    app.dependency_overrides[get_backend] = lambda: FakeBackend()
    r = c.post("/generate/speech", json={})
    assert r.status_code == 202 and r.headers["location"] == "/jobs/job-1" and r.json()["status"] == "started"
    pending = c.get("/jobs/job-1/result")
    assert pending.status_code == 202 and pending.headers["retry-after"] and pending.headers["location"]


@pytest.mark.parametrize("refusal", [QueueFullError("100 jobs are waiting"), UnavailableError("no worker")])
def test_a_full_queue_or_no_worker_is_503_with_retry_after(fake_client, refusal):
    app, c = fake_client
    app.dependency_overrides[get_backend] = lambda: FakeBackend(refusal)
    r = c.post("/generate/handwriting", json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "7" and "retry later" in r.json()["detail"]


def test_the_embedded_queue_is_bounded(checkpoint_dir, monkeypatch):
    app = create_app(make_settings(checkpoint_dir, embedded_workers=1, max_queued_jobs=1, batch_max=1))
    with TestClient(app) as c:
        async_ = {"Prefer": "respond-async"}
        body = {"model": SPEECH, "duration_s": 20.0, "seed": 1}
        with jobs_held(monkeypatch):  # (no job finishes while the requests come in)
            answers = [c.post("/generate/speech", json=body, headers=async_).status_code for _ in range(6)]
        # One running, one waiting, then refused (the second may be refused too, if the first has not started).
        assert answers[0] == 202 and answers.count(202) <= 2 and 503 in answers


# Every 4xx -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{bad json", "not valid JSON"),
        (b'{"duration_s": 100}', "'duration_s'"),
        (b'{"duration_s": NaN}', "'duration_s'"),
        (b'{"temperature": 0}', "'temperature'"),
        (b'{"seed": -1}', "'seed'"),
        (b'{"seed": "seven"}', "'seed'"),
        (b'{"mean": "perhaps"}', "'mean'"),
        (b'{"durationn_s": 1}', "'durationn_s' is not a parameter"),
        (b"[1, 2]", "JSON object"),
        (b'{"prime": "not base64!"}', "'prime' is not valid base64"),
        (b'{"prime": "aGVsbG8gd29ybGQ="}', "prime"),  # valid base64 of text, not audio
    ],
)
def test_invalid_speech_requests_are_422_saying_what_to_change(client, body, words):
    r = client.post("/generate/speech", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (415, 422), r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/generate/handwriting", {"steps": 0}, "steps"),
        ("/generate/handwriting", {"steps": 3001}, "steps"),
        ("/generate/handwriting", {"bias": -1}, "bias"),
        ("/generate/handwriting", {"bias": 10.5}, "bias"),
        ("/generate/handwriting", {"temperature": 0}, "temperature"),
        ("/generate/handwriting", {"temperature": 5.5}, "temperature"),
        ("/generate/speech", {"temperature": -5e-324}, "temperature"),
        ("/generate/handwriting", {"stroke_width": 50}, "stroke_width"),
        ("/generate/handwriting", {"color": "url(javascript:x)"}, "color"),
        ("/generate/handwriting?format=pdf", {}, "format"),
        ("/score", {"data_b64": "AAAA", "num_samples": 1000}, "num_samples"),
        ("/score", {"num_samples": 4}, "data_b64"),
        ("/analyze/latent?format=gif", {"data_b64": "AAAA"}, "format"),
    ],
)
@pytest.mark.parametrize("output", ["gauss", "gmm"])
def test_out_of_range_fields_are_422(request, output, url, body, field):
    client = request.getfixturevalue("gmm_client" if output == "gmm" else "client")
    r = client.post(url, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_unknown_models_are_404(client):
    assert speech(client, model="no-such-model").status_code == 404
    r = client.post("/score", files={"file": ("a.wav", wav(0.1))}, data={"model": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_wrong_inputs_for_the_model_are_4xx(client):
    # An RNN has no latent variables to analyse; audio is not handwriting.
    r = client.post("/analyze/latent", files={"file": ("a.wav", wav(0.1))}, data={"model": SPEECH_RNN})
    assert r.status_code == 422 and "latent" in r.json()["detail"]
    r = client.post("/score", files={"file": ("a.wav", wav(0.1))}, data={"model": HAND})
    assert r.status_code == 415 and "handwriting" in r.json()["detail"]
    r = client.post("/score", files={"file": ("line.json", b"[[[1, 2], [3")}, data={"model": HAND})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_garbage_uploads_and_wrong_media_types_are_415(client):
    r = client.post("/score", files={"file": ("x.bin", bytes(range(256)) * 4, "application/octet-stream")})
    assert r.status_code == 415 and "WAV" in r.json()["detail"]
    r = client.post("/generate/speech", content=b"duration_s=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post("/score", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/analyze/latent", json={"data_b64": base64.b64encode(b"just text, no strokes").decode()})
    assert r.status_code == 415


def test_too_large_bodies_and_uploads_are_413(client):
    big = b"RIFF" + bytes(MAX_UPLOAD + 10)
    r = client.post("/score", files={"file": ("big.wav", big)})
    assert r.status_code == 413 and "MAX_UPLOAD_BYTES" in r.json()["detail"]
    r = client.post("/score", json={"data_b64": base64.b64encode(big).decode()})
    assert r.status_code == 413
    # A declared Content-Length over the limit is refused before the body is read ...
    r = client.post("/generate/speech", content=b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "MAX_BODY_BYTES" in r.json()["detail"]

    # ... and a chunked body (no Content-Length) is counted as it streams in.
    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    r = client.post("/generate/speech", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/generate/speech", json={"prime": base64.b64encode(big).decode()[: MAX_BODY - 100]})
    assert r.status_code == 413 and "prime" in r.json()["detail"]


def test_unknown_jobs_are_404(client):
    for url in ("/jobs/no-such-job", "/jobs/no-such-job/result", "/jobs/" + "x" * 300):
        r = client.get(url)
        assert r.status_code == 404 and "no job" in r.json()["detail"]


def test_api_keys(checkpoint_dir):
    app = create_app(make_settings(checkpoint_dir, api_keys="k-one, k-two"))
    assert "k-one" not in repr(app.state.settings)
    with TestClient(app) as c:
        for url in ("/models", "/jobs/x"):
            r = c.get(url)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "ApiKey"
            assert c.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/models", headers={"X-API-Key": "k-two"}).status_code == 200
        # Refused before the body is even read: no 413 or 422 for the unauthenticated.
        r = c.post("/generate/speech", content=b"{bad", headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and "k-one" not in r.text
        r = c.post("/score", files={"file": ("a.wav", wav(0.1))}, headers={"X-API-Key": "k-one"})
        assert r.status_code == 200
        for url in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
            assert c.get(url).status_code == 200, url


@pytest.mark.parametrize("output", ["gauss", "gmm"])
def test_bad_input_never_gives_a_500(request, output):
    """A few garbage bodies, media types and uploads at every POST endpoint: all 4xx, none a 500 (or a 200 for the
    extreme but valid ones), on Gauss and on mixture-output (GMM) default models."""
    import random

    client = request.getfixturevalue("gmm_client" if output == "gmm" else "client")

    rng = random.Random(0)
    noise = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (1, 17, 300, 5000)]
    bodies = [
        *noise,
        b"",
        b"null",
        b"0",
        b'"text"',
        b"[" * 5000,
        b'{"model": 12}',
        b'{"model": "../../etc/passwd"}',
        b'{"seed": 1e400}',
        b'{"temperature": 5e-324, "duration_s": 0.05}',  # subnormal: the T -> 0 limit, a 200 for speech
        b'{"temperature": 5e-324, "bias": 10, "steps": 20}',  # and for handwriting
        b'{"seed": 99999999999999999999999}',
        b'{"duration_s": "1"}',
        b'{"data_b64": 5}',
        b'{"data_b64": "UklGRg=="}',
        b'{"data_b64": "' + base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEjunk") + b'"}',
        b'{"data_b64": "' + base64.b64encode(b"<not xml") + b'"}',
        b'{"data_b64": "' + base64.b64encode(b"\x93NUMPYgarbage") + b'"}',
        b'{"data_b64": "' + base64.b64encode(b'{"strokes": 1}') + b'"}',
        b'{"prime": "' + base64.b64encode(b"fLaC\x00\x00garbage") + b'"}',
        '{"color": "\u00e9\u00e9"}'.encode(),
        b"\xff\xfe\x00{",
    ]
    media = ["application/json", "text/plain", "multipart/form-data", "multipart/form-data; boundary=x", "", "a/b"]
    urls = ["/generate/speech", "/generate/handwriting", "/score", "/analyze/latent", "/analyze/latent?format=png"]
    seen = set()
    for url in urls:
        for i, body in enumerate(bodies):
            headers = {"Content-Type": media[i % len(media)]} if media[i % len(media)] else {}
            r = client.post(url, content=body, headers=headers)
            seen.add(r.status_code)
            assert 400 <= r.status_code < 500 or r.status_code == 200, (url, body[:40], r.status_code, r.text)
            assert r.status_code == 200 or isinstance(r.json()["detail"], str)
    for upload in [*noise, b"RIFF\x10\x00\x00\x00WAVEfmt ", b"<?xml version='1.0'?><a/>", b"[[[1, 2]]]", b"{}"]:
        for url in urls[2:]:
            r = client.post(
                url, files={"file": ("upload", upload)}, data={"num_samples": "2"} if "score" in url else {}
            )
            assert 400 <= r.status_code < 500 or r.status_code == 200, (url, upload[:40], r.status_code, r.text)
    r = client.post("/score", files={"other": ("a.wav", wav(0.1))})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    assert {413, 415, 422} >= seen - {200, 404}


# Models, health, metrics, docs, page -----------------------------------------------------------------------------


def test_models_lists_loaded_and_failed_checkpoints(checkpoint_dir, tmp_path):
    listing = TestClient(create_app(make_settings(checkpoint_dir)))
    with listing as c:
        body = c.get("/models").json()
    names = {m["name"]: m for m in body["models"]}
    assert set(names) == {SPEECH, SPEECH_RNN, HAND} and body["failed"] == {}
    assert names[SPEECH]["modality"] == "speech" and names[SPEECH]["sample_rate"] == 16000
    assert names[HAND]["family"] == "vrnn" and names[SPEECH_RNN]["latent"] is False

    broken = tmp_path / "ckpts"
    broken.mkdir()
    (broken / "speech.safetensors").write_bytes((checkpoint_dir / f"{SPEECH}.safetensors").read_bytes())
    (broken / "speech.json").write_bytes((checkpoint_dir / f"{SPEECH}.json").read_bytes())
    (broken / "torn.safetensors").write_bytes(b"not a safetensors file")
    (broken / "torn.json").write_bytes((checkpoint_dir / f"{SPEECH}.json").read_bytes())
    with TestClient(create_app(make_settings(broken))) as c:
        body = c.get("/models").json()
        assert [m["name"] for m in body["models"]] == ["speech"] and "torn" in body["failed"]
        ready = c.get("/readyz").json()
        assert (ready["ready"], ready["mode"], ready["reasons"]) == (True, "embedded", []) and "torn" in ready["failed"]
        assert c.post("/generate/speech", json={"model": "torn"}).status_code == 404


def test_health_and_readiness(client, tmp_path):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    with TestClient(create_app(make_settings(tmp_path / "empty"))) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["ready"] is False and "no model" in r.json()["reasons"][0]
        assert c.post("/generate/speech", json={}).status_code == 404  # no speech model: said so, not a 500


def test_metrics(client):
    assert speech(client, seed=1).status_code == 200
    client.get("/jobs/unknown")
    text = client.get("/metrics").text
    assert 'vrnn_http_requests_total{method="POST",route="/generate/speech",status="200"}' in text
    assert 'vrnn_http_requests_total{method="GET",route="/jobs/{job_id}",status="404"}' in text
    assert 'vrnn_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/generate/speech"}' in text
    assert 'vrnn_job_duration_seconds_count{kind="generate_speech",status="finished"}' in text
    assert 'vrnn_jobs_submitted_total{kind="generate_speech"}' in text
    assert "vrnn_queue_depth 0.0" in text


def test_openapi_declares_binary_responses(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    content = paths["/generate/speech"]["post"]["responses"]["200"]["content"]
    assert content["audio/wav"]["schema"]["format"] == "binary"
    hw = paths["/generate/handwriting"]["post"]
    assert "image/svg+xml" in hw["responses"]["200"]["content"]
    assert hw["requestBody"]["content"]["application/json"]["schema"]["properties"]["steps"]["maximum"] == 3000
    assert "image/png" in paths["/analyze/latent"]["post"]["responses"]["200"]["content"]
    assert set(paths["/score"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    for code in ("202", "413", "415", "422", "503"):
        assert code in paths["/score"]["post"]["responses"]
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_docs_load_nothing_from_outside(client):
    """Swagger UI is served from the vendored bundle: /docs works on a machine without internet."""
    html = client.get("/docs")
    assert html.status_code == 200 and "/openapi.json" in html.text
    urls = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)', html.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for u in urls:
        assert client.get(u).status_code == 200, u
    assert "SwaggerUIBundle" in client.get("/static/swagger/swagger-ui-bundle.js").text


def test_index_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
