"""Named styles through the API: POST /generate/handwriting {"text", "style"} primes a text model with one of the
lines shipped beside its checkpoint (NAME.styles.json, model.styles), byte for byte as sending that line as `prime`
with its text as `prime_text`; GET /models lists each text model's styles (embedded mode, Redis mode's catalog and
one request through Redis and an in-process RQ worker)."""

from __future__ import annotations

import base64
import json

import pytest
from apikit import HAND, SPEECH, make_settings, write_checkpoints, write_tiny_styles
from fastapi.testclient import TestClient
from tinyckpt import TEXT, write_tiny_text_checkpoint

from app.main import create_app

STYLE_TEXTS = {"w001": "hello world", "w002": "abc"}


@pytest.fixture(scope="module")
def style_dir(tmp_path_factory):
    directory = write_checkpoints(tmp_path_factory.mktemp("style-checkpoints"))
    # Each style's line: the test strokes, scaled by 1 and 1.5 (raw units, as an upload reads them).
    write_tiny_styles(write_tiny_text_checkpoint(directory / f"{TEXT}.safetensors"), STYLE_TEXTS)
    return directory


@pytest.fixture(scope="module")
def sc(style_dir):
    with TestClient(create_app(make_settings(style_dir))) as c:
        yield c


def _write(c, body, fmt="svg"):
    return c.post(f"/generate/handwriting?format={fmt}", json=body)


def _as_prime(directory, name):
    """A style's line and text as a client sends its own: the styles file's offsets as JSON."""
    doc = json.loads((directory / f"{TEXT}.styles.json").read_text())["styles"][name]
    return {"prime": base64.b64encode(json.dumps(doc["offsets"]).encode()).decode(), "prime_text": doc["text"]}


def test_models_lists_each_text_models_styles(sc):
    models = {m["name"]: m for m in sc.get("/models").json()["models"]}
    assert models[TEXT]["styles"] == ["w001", "w002"]
    for name in (HAND, SPEECH):
        assert models[name]["styles"] is None  # only text models have styles


@pytest.mark.parametrize("fmt", ["svg", "json"])
@pytest.mark.parametrize("style", ["w001", "w002"])
def test_a_style_gives_the_bytes_of_its_line_sent_as_prime(sc, style_dir, style, fmt):
    body = {"text": "hello\nworld", "seed": 5, "steps": 30, "bias": 0.5}
    r = _write(sc, {**body, "style": style}, fmt)
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == TEXT and r.headers["x-seed"] == "5"
    primed = _write(sc, {**body, **_as_prime(style_dir, style)}, fmt)
    assert primed.status_code == 200, primed.text
    assert r.content == primed.content
    assert _write(sc, {**body, "style": style}, fmt).content == r.content  # the same seed: the same bytes


def test_styles_change_the_writing(sc):
    body = {"text": "hello", "seed": 2, "steps": 25}
    plain, w1, w2 = (
        _write(sc, {**body, **extra}, "json").json()["offsets"] for extra in ({}, {"style": "w001"}, {"style": "w002"})
    )
    assert w1 != plain and w2 != w1


@pytest.mark.parametrize(
    "body, words",
    [
        ({"style": "w001", "steps": 5}, ["'style'", "send 'text'"]),
        ({"text": "hello", "style": "w009"}, ["no style 'w009'", "w001, w002", "'prime'"]),
        (
            {"text": "hello", "style": "w001", "prime_text": "abc"},
            ["remove 'style'", "remove 'prime' and 'prime_text'"],
        ),
        ({"text": "hello", "style": "-w1"}, ["'style'", "a style name such as 'w058'"]),
        ({"text": "hello", "style": "w" * 65}, ["'style' must have at most 64 characters"]),
        ({"text": "hello", "style": ""}, ["'style' is empty"]),
        ({"text": "hello", "style": 7}, ["'style'", "a style name"]),
        ({"text": "hello", "style": "w001", "model": HAND}, ["does not take text"]),
    ],
)
def test_style_errors_are_422_saying_what_to_change(sc, body, words):
    r = _write(sc, body)
    assert r.status_code == 422, r.text
    for w in words:
        assert w in r.json()["detail"]


def test_a_style_with_a_prime_is_422(sc, style_dir):
    r = _write(sc, {"text": "hello", "style": "w001", **_as_prime(style_dir, "w001")})
    assert r.status_code == 422 and "send one of them" in r.json()["detail"]


def test_the_openapi_document_has_the_style_field(sc):
    post = sc.get("/openapi.json").json()["paths"]["/generate/handwriting"]["post"]
    field = post["requestBody"]["content"]["application/json"]["schema"]["properties"]["style"]
    assert field["anyOf"][0]["maxLength"] == 64 and "GET /models" in field["description"]


def test_redis_modes_catalog_lists_the_styles_without_torch(style_dir, tmp_path):
    from app.catalog import read_catalog

    models = {m["name"]: m for m in read_catalog(style_dir)["models"]}
    assert models[TEXT]["styles"] == ["w001", "w002"] and models[HAND]["styles"] is None
    # A broken styles file: no names (the workers, which check it in full, publish what they loaded).
    for path in style_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / f"{TEXT}.styles.json").write_text("{broken")
    assert {m["name"]: m for m in read_catalog(tmp_path)["models"]}[TEXT]["styles"] == []


def test_a_style_through_redis_gives_the_embedded_bytes(style_dir, sc):
    """A style request queued on Redis and run by an in-process RQ worker; /models there lists what it published."""
    pytest.importorskip("redis")
    from apikit import through_redis

    body = {"text": "hello", "seed": 9, "steps": 20, "style": "w002"}
    listed, result, cache = through_redis(
        style_dir, "vrnn-api-styles", body, {"models": [TEXT], "styles": {TEXT: ["w002"]}}
    )
    assert listed[TEXT]["styles"] == ["w002"]  # the workers' word over the catalog's
    assert listed[TEXT]["text_default"] is True and listed[TEXT]["default"] is False
    assert cache.style_names()[TEXT] == ["w001", "w002"]
    assert result.status_code == 200 and result.content == _write(sc, body).content
