"""Made-up lines through the API: POST /generate/handwriting without text, where the default text model has a word
model (NAME.wordlm.json, model.wordlm), writes a line of that model's words and names it in X-Text; GET /models says
which text models make lines up (embedded mode, Redis mode's catalog, and one request through Redis and an in-process
RQ worker, byte for byte as embedded)."""

from __future__ import annotations

import pytest
from apikit import HAND, make_settings, write_checkpoints
from fastapi.testclient import TestClient
from tinyckpt import TEXT, write_tiny_text_checkpoint

from app.main import create_app
from model.wordlm import count_lines, write_wordlm

LINES = ["hello world", "a red door", "old bread"]
WORDS = {w for line in LINES for w in line.split()}


@pytest.fixture(scope="module")
def invent_dir(tmp_path_factory):
    directory = write_checkpoints(tmp_path_factory.mktemp("invent-checkpoints"))
    lm = count_lines(LINES)
    lm.steps_per_char = 3.0
    write_wordlm(write_tiny_text_checkpoint(directory / f"{TEXT}.safetensors"), lm)
    return directory


@pytest.fixture(scope="module")
def ic(invent_dir):
    with TestClient(create_app(make_settings(invent_dir))) as c:
        yield c


def test_no_text_writes_a_made_up_line_and_says_which(ic):
    r = ic.post("/generate/handwriting", json={"seed": 4, "steps": 60})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml") and r.headers["x-model"] == TEXT
    assert set(r.headers["x-text"].split()) <= WORDS and len(r.headers["x-text"]) <= 20
    again = ic.post("/generate/handwriting", json={"seed": 4, "steps": 60})
    assert again.content == r.content and again.headers["x-text"] == r.headers["x-text"]
    sent = ic.post("/generate/handwriting", json={"seed": 4, "steps": 60, "text": r.headers["x-text"]})
    assert sent.content == r.content and "x-text" not in sent.headers
    doc = ic.post("/generate/handwriting?format=json", json={"seed": 4, "steps": 60}).json()
    assert doc["invented"] is True and doc["texts"] == [r.headers["x-text"]]


def test_an_unconditional_model_still_draws_a_free_line(ic):
    r = ic.post("/generate/handwriting", json={"seed": 4, "steps": 60, "model": HAND})
    assert r.status_code == 200 and r.headers["x-model"] == HAND and "x-text" not in r.headers
    short = ic.post("/generate/handwriting", json={"seed": 4, "steps": 2})  # too few steps for a word
    assert short.status_code == 200 and short.headers["x-model"] == HAND


def test_a_text_model_asked_for_too_few_steps_is_422_saying_how_many(ic):
    r = ic.post("/generate/handwriting", json={"seed": 4, "steps": 2, "model": TEXT})
    assert r.status_code == 422 and "at least 3 steps, or send 'text'" in r.json()["detail"]


def test_models_and_the_openapi_document_say_it(ic, invent_dir):
    from app.catalog import read_catalog

    models = {m["name"]: m for m in ic.get("/models").json()["models"]}
    assert models[TEXT]["invents_text"] is True and models[HAND]["invents_text"] is None
    catalog = {m["name"]: m for m in read_catalog(invent_dir)["models"]}
    assert catalog[TEXT]["invents_text"] is True and catalog[HAND]["invents_text"] is None
    post = ic.get("/openapi.json").json()["paths"]["/generate/handwriting"]["post"]
    assert "X-Text" in post["responses"]["200"]["headers"]
    assert (
        "makes up a line"
        in post["requestBody"]["content"]["application/json"]["schema"]["properties"]["text"]["description"]
    )


def test_a_made_up_line_through_redis_gives_the_embedded_bytes(invent_dir, ic):
    pytest.importorskip("redis")
    from apikit import through_redis

    body = {"seed": 11, "steps": 45}
    listed, result, _ = through_redis(invent_dir, "vrnn-api-invent", body, {"inventors": []})  # as if its file were bad
    assert listed[TEXT]["invents_text"] is False  # the workers' word over the catalog's
    embedded = ic.post("/generate/handwriting", json=body)
    assert result.status_code == 200 and result.content == embedded.content
    assert result.headers["x-text"] == embedded.headers["x-text"]
