"""Every temperature and bias the API accepts gives a sample, on mixture-output (GMM) checkpoints as well as
Gauss ones: a tiny or subnormal temperature is the T -> 0 limit, never a 500 (issue 8, hole 3); out of range is a
422 that names the field and the range. Embedded mode, FastAPI's TestClient, tiny checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from apikit import HAND, HAND_GMM, SPEECH, SPEECH_GMM

from worker import limits

TINY = [5e-324, 1e-300, 1e-45, 1e-30]


@pytest.fixture(params=["gmm", "gauss"])
def setup(request):
    """(client, speech model, handwriting model) for each output kind."""
    if request.param == "gmm":
        return request.getfixturevalue("gmm_client"), SPEECH_GMM, HAND_GMM
    return request.getfixturevalue("client"), SPEECH, HAND


@pytest.mark.parametrize("temperature", [*TINY, limits.MAX_TEMPERATURE])
def test_tiny_and_largest_temperatures_generate_speech(setup, temperature):
    client, speech, _ = setup
    r = client.post(
        "/generate/speech", json={"model": speech, "duration_s": 0.05, "seed": 1, "temperature": temperature}
    )
    assert r.status_code == 200, r.text
    wave, rate = sf.read(io.BytesIO(r.content))
    assert rate == 16000 and len(wave) == 800 and np.isfinite(wave).all()


@pytest.mark.parametrize("bias", [0.0, 5e-324, limits.MAX_BIAS])
@pytest.mark.parametrize("temperature", [*TINY, limits.MAX_TEMPERATURE])
def test_tiny_and_largest_temperatures_and_biases_generate_handwriting(setup, temperature, bias):
    client, _, hand = setup
    body = {"model": hand, "steps": 12, "seed": 1, "temperature": temperature, "bias": bias}
    r = client.post("/generate/handwriting?format=json", json=body)
    assert r.status_code == 200, r.text
    offsets = np.array(r.json()["offsets"], dtype=float)
    assert offsets.shape == (12, 3) and np.isfinite(offsets).all()
    r = client.post("/generate/handwriting", json=body)
    assert r.status_code == 200 and r.text.lstrip().startswith("<"), r.text


def test_the_issues_requests_on_the_default_models_are_200(gmm_client):
    """The report, verbatim: no model named, so the default (here a VRNN-GMM of each modality) samples."""
    r = gmm_client.post("/generate/handwriting", json={"temperature": 5e-324, "steps": 30})
    assert r.status_code == 200 and r.headers["x-model"] == HAND_GMM, r.text
    r = gmm_client.post("/generate/speech", content=b'{"temperature": 5e-324, "duration_s": 0.05}')
    assert r.status_code == 200 and r.headers["x-model"] == SPEECH_GMM, r.text


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/generate/speech", {"temperature": 0}, "temperature", "above 0"),
        ("/generate/speech", {"temperature": -5e-324}, "temperature", "above 0"),
        ("/generate/speech", {"temperature": limits.MAX_TEMPERATURE * (1 + 1e-15)}, "temperature", "5"),
        ("/generate/handwriting", {"temperature": 0.0}, "temperature", "above 0"),
        ("/generate/handwriting", {"temperature": 1e308}, "temperature", "5"),
        ("/generate/handwriting", {"bias": -5e-324}, "bias", "0"),
        ("/generate/handwriting", {"bias": limits.MAX_BIAS + 1e-9}, "bias", "10"),
    ],
)
def test_out_of_range_temperatures_and_biases_are_422_saying_the_range(gmm_client, path, body, field, words):
    r = gmm_client.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert field in detail and words in detail, detail


def test_the_bounds_are_documented_in_the_openapi_document(gmm_client):
    paths = gmm_client.get("/openapi.json").json()["paths"]
    body = {p: paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"] for p in paths if "/gen" in p}
    assert set(body) == {"/generate/speech", "/generate/handwriting"}
    for schema in body.values():
        temperature = schema["properties"]["temperature"]
        assert temperature["exclusiveMinimum"] == 0 and temperature["maximum"] == limits.MAX_TEMPERATURE
        assert f"at most {limits.MAX_TEMPERATURE:g}" in temperature["description"]
    bias = body["/generate/handwriting"]["properties"]["bias"]
    number = next(s for s in bias.get("anyOf", [bias]) if s.get("type") == "number")  # optional: number or null
    assert (
        number["minimum"] == 0
        and number["maximum"] == limits.MAX_BIAS
        and f"{limits.MAX_BIAS:g}" in bias["description"]
    )
    assert "for a line of text" in bias["description"]  # the default differs with text, and says so
