"""Embedded mode with batching: concurrent requests for the text model (the service's default handwriting request,
a line made up by its word model, and lines of given text, several lines, a style, JSON, a cap) share the text
model's engine (model.engine.TextEngine) and each still gets, byte for byte, what it gets alone without batching.

The shipped text checkpoint with its word model and styles, and the shipped unconditional handwriting model beside
it, as the service runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from apikit import make_settings
from fastapi.testclient import TestClient
from servicekit import ROOT
from test_api_batching import concurrently

from app.main import create_app
from model import native

TEXT, HAND = "handwriting-text-vrnn-gmm", "handwriting-vrnn-gmm"

REQUESTS = [("/generate/handwriting", {"seed": s}) for s in range(4)]  # the default: a made-up line
REQUESTS += [
    ("/generate/handwriting", {"text": "hello world", "seed": 5}),
    ("/generate/handwriting", {"text": "two\nlines", "seed": 6, "temperature": 0.8}),
    ("/generate/handwriting", {"text": "in a style", "style": "w030", "seed": 7}),
    ("/generate/handwriting?format=json", {"text": "as json", "seed": 8, "bias": 1.0}),
    ("/generate/handwriting", {"text": "a line cut short", "steps": 40, "seed": 9}),
    ("/generate/handwriting", {"seed": 0}),  # a seed twice: the same bytes twice
    ("/generate/handwriting", {"model": HAND, "steps": 100, "seed": 3}),  # the unconditional engine beside it
]

pytestmark = pytest.mark.skipif(native.library() is None, reason=f"no native library: {native.status()}")


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("shipped-text")
    for name, suffixes in (
        (TEXT, (".safetensors", ".json", ".styles.json", ".wordlm.json")),
        (HAND, (".safetensors", ".json")),
    ):
        for suffix in suffixes:
            (directory / f"{name}{suffix}").symlink_to(ROOT / "checkpoints" / f"{name}{suffix}")
    return directory


@pytest.fixture(scope="module")
def alone(shipped_dir) -> list[tuple[int, bytes, str]]:
    with TestClient(create_app(make_settings(shipped_dir, batch_max=1))) as c:
        out = []
        for url, body in REQUESTS:
            r = c.post(url, json=body)
            out.append((r.status_code, r.content, r.headers.get("x-seed", "")))
        assert c.app.state.backend.batching() == {}
    assert all(status == 200 for status, _, _ in out), [o[1][:200] for o in out if o[0] != 200]
    return out


def test_concurrent_text_requests_share_the_text_engine_and_get_their_solo_bytes(shipped_dir, alone):
    settings = make_settings(shipped_dir, batch_max=8, batch_wait_ms=300, max_jobs_per_client=0)
    with TestClient(create_app(settings)) as c:
        got = concurrently(c, REQUESTS)
        for (url, body), want, have in zip(REQUESTS, alone, got, strict=True):
            assert have[0] == 200, (url, body, have[1][:300])
            assert have[1] == want[1], f"{url} {body}: batched bytes differ from the unbatched ones"
        assert got[0][1] == got[-2][1]
        stats = c.app.state.backend.batching()
        assert stats[TEXT]["requests"] == len(REQUESTS) - 1 and stats[HAND]["requests"] == 1
        assert max(stats[TEXT]["batch_sizes"]) > 1, stats[TEXT]["batch_sizes"]  # lines of several requests per step
        # bad text is refused as before, through the engine
        r = c.post("/generate/handwriting", json={"text": "naïve ☃"})
        assert r.status_code == 422 and "cannot write" in r.json()["detail"]
        assert c.post("/generate/handwriting", json={"text": "hello", "seed": 5}).status_code == 200
