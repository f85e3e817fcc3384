"""The OpenAPI document of /score and /analyze/latent states every constraint the routes enforce (formats, sizes,
bounds, patterns, enums, media types, error answers) with this app's values; and the documented bounds are the
enforced ones: a value at a bound is accepted, one just outside it is a 4xx. Embedded mode, tiny checkpoints."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest
from apikit import HAND, MAX_BODY, MAX_UPLOAD, SPEECH, STROKES, make_settings, write_checkpoint, write_checkpoints
from fastapi.testclient import TestClient

from app.main import create_app
from worker import limits

PATHS = ("/score", "/analyze/latent")
LONG_NAME = "L" * limits.MAX_MODEL_NAME_CHARS  # a checkpoint whose name is as long as a name may be
ODD_NAME = "A.b_c-9"  # every kind of character the name pattern allows
ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = write_checkpoints(tmp_path_factory.mktemp("openapi-checkpoints"))
    for name in (LONG_NAME, ODD_NAME):
        write_checkpoint(directory / f"{name}.safetensors", "handwriting")
    return directory


@pytest.fixture(scope="module")
def api(checkpoints):
    with TestClient(create_app(make_settings(checkpoints, max_jobs_per_client=0, max_queued_jobs=1000))) as c:
        assert {m["name"] for m in c.get("/models").json()["models"]} >= {LONG_NAME, ODD_NAME, HAND}
        yield c


@pytest.fixture(scope="module")
def spec(api) -> dict:
    return api.get("/openapi.json").json()


def body_schemas(spec: dict, path: str) -> tuple[dict, dict]:
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    return content["multipart/form-data"]["schema"], content["application/json"]["schema"]


def string_branch(schema: dict) -> dict:
    """The string schema of an optional field (anyOf [string, null]), or the field's schema."""
    return next((b for b in schema.get("anyOf", ()) if b.get("type") == "string"), schema)


def strokes_file(size: int) -> bytes:
    """A valid JSON strokes file of exactly `size` bytes (the strokes, then spaces)."""
    data = json.dumps(STROKES).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# The document ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_the_document_states_every_constraint_with_this_apps_values(spec, path):
    operation = spec["paths"][path]["post"]
    assert operation["requestBody"]["required"] is True
    assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    form, body = body_schemas(spec, path)

    # The uploaded file: binary, at most MAX_UPLOAD_BYTES; the base64 form: at most as many characters as the
    # padded base64 of that many bytes.
    file = form["properties"]["file"]
    assert (file["type"], file["format"], file["maxLength"]) == ("string", "binary", MAX_UPLOAD)
    assert form["required"] == ["file"] and form["additionalProperties"] is False
    assert "file" in spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]
    data = body["properties"]["data_b64"]
    assert (data["type"], data["format"], data["contentEncoding"]) == ("string", "byte", "base64")
    assert data["maxLength"] == 4 * math.ceil(MAX_UPLOAD / 3) and data["minLength"] == 1
    assert body["required"] == ["data_b64"] and body["additionalProperties"] is False
    assert string_branch(body["properties"]["filename"])["maxLength"] == limits.MAX_FILENAME_CHARS
    # ... and in words, with the numbers, where a client reads them.
    for text in (operation["requestBody"]["description"], operation["responses"]["413"]["description"]):
        assert str(MAX_UPLOAD) in text and str(MAX_BODY) in text, text
    assert "415" in data["description"] and "WAVE" in file["description"]

    # The model name: as long and of the characters that a loadable checkpoint's name may have.
    for schema in (form, body):
        model = string_branch(schema["properties"]["model"])
        assert (model["minLength"], model["maxLength"]) == (1, limits.MAX_MODEL_NAME_CHARS)
        assert model["pattern"] == limits.MODEL_NAME_PATTERN
        assert "GET /models" in schema["properties"]["model"]["description"]
    from worker.cache import NAME_PATTERN

    assert NAME_PATTERN.pattern == limits.MODEL_NAME_PATTERN  # the same rule the model cache loads by

    # num_samples (score only), the same bounds in both forms.
    if path == "/score":
        for schema in (form, body):
            k = schema["properties"]["num_samples"]
            bounds = (limits.MIN_NUM_SAMPLES, limits.MAX_NUM_SAMPLES)
            assert k["type"] == "integer" and (k["minimum"], k["maximum"]) == bounds
    else:
        assert "num_samples" not in form["properties"] and "num_samples" not in body["properties"]
        (fmt,) = [p for p in operation["parameters"] if p["name"] == "format"]
        assert fmt["in"] == "query" and fmt["schema"]["enum"] == ["json", "png"] and fmt["schema"]["default"] == "json"
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "image/png"}

    # The error answers, each with the error model; 429 and 503 say when to retry.
    for code in ("413", "415", "422", "429", "503"):
        answer = operation["responses"][code]
        assert answer["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, code
    for code in ("429", "503"):
        assert "Retry-After" in operation["responses"][code]["headers"]
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["detail"] and error_body["properties"]["detail"]["type"] == "string"


def test_the_document_follows_the_settings_of_each_app(checkpoints):
    """Not a copy of the defaults: another app's limits give another document, and building it changes no other."""
    small = create_app(make_settings(checkpoints, max_upload_bytes=1000, max_body_bytes=5000)).openapi()
    default = create_app(make_settings(checkpoints)).openapi()
    again = create_app(make_settings(checkpoints, max_upload_bytes=1000, max_body_bytes=5000)).openapi()
    for doc, upload, body_limit in ((small, 1000, 5000), (default, MAX_UPLOAD, MAX_BODY), (again, 1000, 5000)):
        form, body = body_schemas(doc, "/score")
        assert form["properties"]["file"]["maxLength"] == upload
        assert body["properties"]["data_b64"]["maxLength"] == 4 * math.ceil(upload / 3)
        description = doc["paths"]["/score"]["post"]["requestBody"]["description"]
        assert description.count("MAX_UPLOAD_BYTES") == 1 and f"at most {body_limit} bytes" in description


def test_the_json_example_is_accepted(api, spec):
    for path in PATHS:
        example = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert api.post(path, json=example).status_code == 200, path


# The documented bounds are the enforced ones ---------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_the_file_size_bound(api, spec, path):
    form, body = body_schemas(spec, path)
    most = form["properties"]["file"]["maxLength"]
    fields = {"model": HAND}
    assert api.post(path, files={"file": ("line.json", strokes_file(most))}, data=fields).status_code == 200
    r = api.post(path, files={"file": ("line.json", strokes_file(most + 1))}, data=fields)
    assert r.status_code == 413 and str(most) in r.json()["detail"], r.text
    longest = body["properties"]["data_b64"]["maxLength"]
    at_bound = b64(strokes_file(most))
    assert len(at_bound) == longest
    assert api.post(path, json={"data_b64": at_bound, "model": HAND}).status_code == 200
    one_byte_more = b64(strokes_file(most + 1))  # decodes to one byte more than documented
    longer = b64(strokes_file(most + 3))
    assert len(longer) == longest + 4  # the next valid base64 length
    for over, status in ((one_byte_more, 413), (longer, 413), (at_bound + "A", 422), ("", 422)):
        r = api.post(path, json={"data_b64": over, "model": HAND})
        assert r.status_code == status and "data_b64" in r.json()["detail"], (len(over), r.status_code, r.text)


def test_the_num_samples_bounds(api, spec):
    form, body = body_schemas(spec, "/score")
    lo, hi = body["properties"]["num_samples"]["minimum"], body["properties"]["num_samples"]["maximum"]
    assert (form["properties"]["num_samples"]["minimum"], form["properties"]["num_samples"]["maximum"]) == (lo, hi)
    data = b64(json.dumps(STROKES).encode())
    for k, status in ((lo, 200), (hi, 200), (lo - 1, 422), (hi + 1, 422)):
        r = api.post("/score", json={"data_b64": data, "model": HAND, "num_samples": int(k)})
        assert r.status_code == status, (k, r.text)
        if status == 200:
            assert r.json()["num_samples"] == k
        r = api.post("/score", files={"file": ("l.json", json.dumps(STROKES))}, data={"num_samples": str(int(k))})
        assert r.status_code == status, (k, r.text)


@pytest.mark.parametrize("path", PATHS)
def test_the_model_name_bounds_and_pattern(api, spec, path):
    model = string_branch(body_schemas(spec, path)[1]["properties"]["model"])
    pattern, longest = re.compile(model["pattern"]), model["maxLength"]
    data = b64(json.dumps(STROKES).encode())
    assert len(LONG_NAME) == longest and pattern.fullmatch(LONG_NAME) and pattern.fullmatch(ODD_NAME)
    for name in (LONG_NAME, ODD_NAME):
        r = api.post(path, json={"data_b64": data, "model": name})
        assert r.status_code == 200 and r.headers["X-Model"] == name, r.text
    outside = [LONG_NAME + "L", "", "-x", ".hidden", "a b", "x/y", "../etc", "ü", f"{HAND}\n"]
    for name in outside:
        assert len(name) > longest or len(name) < model["minLength"] or not pattern.fullmatch(name), name
        r = api.post(path, json={"data_b64": data, "model": name})
        assert r.status_code == 422 and "model" in r.json()["detail"], (name, r.text)
    # Well-formed, but no checkpoint has it: a 404, not a 422.
    assert api.post(path, json={"data_b64": data, "model": "no-such-model"}).status_code == 404
    multipart = api.post(path, files={"file": ("l.json", json.dumps(STROKES))}, data={"model": "a b"})
    assert multipart.status_code == 422


def test_the_filename_bound(api, spec):
    longest = string_branch(body_schemas(spec, "/score")[1]["properties"]["filename"])["maxLength"]
    data = b64(json.dumps(STROKES).encode())
    name = "l" * (longest - 5) + ".json"
    assert api.post("/score", json={"data_b64": data, "filename": name}).status_code == 200
    assert api.post("/score", json={"data_b64": data, "filename": "l" + name}).status_code == 422


def test_the_format_enum_and_the_media_types(api, spec):
    params = spec["paths"]["/analyze/latent"]["post"]["parameters"]
    enum = next(p for p in params if p["name"] == "format")["schema"]["enum"]
    data = b64(json.dumps(STROKES).encode())
    media = {"json": "application/json", "png": "image/png"}
    for value in enum:
        r = api.post(f"/analyze/latent?format={value}", json={"data_b64": data})
        assert r.status_code == 200 and r.headers["content-type"].startswith(media[value]), (value, r.text)
    for value in ("svg", "PNG ", ""):
        assert api.post(f"/analyze/latent?format={value}", json={"data_b64": data}).status_code == 422, value
    # The documented request media types work (above); an undocumented one is a 415, for both routes.
    for path in PATHS:
        r = api.post(path, content=json.dumps({"data_b64": data}), headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and r.json()["detail"], r.text
        r = api.post(path, content=json.dumps({"data_b64": data}), headers={"Content-Type": "application/x+json"})
        assert r.status_code == 200, r.text  # any application/*+json, as the description says
    # A speech file works through the same documented fields.
    from apikit import wav

    assert api.post("/score", files={"file": ("a.wav", wav(0.1))}, data={"model": SPEECH}).status_code == 200
