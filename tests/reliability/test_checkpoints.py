"""A corrupted or truncated checkpoint is reported by /readyz and /models, and the other checkpoints keep
serving: embedded mode (TestClient) and Redis mode (a private redis-server, a real `python -m worker`)."""

from __future__ import annotations

import json
import shutil

import pytest
import relkit
from apikit import HAND, SPEECH, make_settings, write_checkpoints
from fastapi.testclient import TestClient
from servicekit import kill, wait_for

from app.main import create_app

BROKEN = ("truncated", "corrupted", "badmeta")


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """speech-vrnn, speech-rnn and hand-vrnn, plus three broken copies of speech-vrnn: weights cut in half,
    a header whose length field is garbage, and metadata that is not JSON."""
    good = write_checkpoints(tmp_path_factory.mktemp("good-checkpoints"))
    directory = tmp_path_factory.mktemp("mixed-checkpoints")
    for path in good.iterdir():
        shutil.copy(path, directory / path.name)
    weights = (good / f"{SPEECH}.safetensors").read_bytes()
    meta = (good / f"{SPEECH}.json").read_bytes()
    (directory / "truncated.safetensors").write_bytes(weights[: len(weights) // 2])
    (directory / "corrupted.safetensors").write_bytes(b"\xff" * 8 + weights[8:])
    (directory / "badmeta.safetensors").write_bytes(weights)
    for name in ("truncated", "corrupted"):
        (directory / f"{name}.json").write_bytes(meta)
    (directory / "badmeta.json").write_bytes(meta[: len(meta) // 2])
    return directory


def check_reported_and_others_serve(c: TestClient, mode: str) -> None:
    models = c.get("/models")
    assert models.status_code == 200, models.text
    body = models.json()
    assert {m["name"] for m in body["models"]} == {SPEECH, "speech-rnn", HAND}
    assert set(body["failed"]) == set(BROKEN), body["failed"]
    for name in BROKEN:
        assert name in body["failed"][name]  # the reason names the file
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True and ready.json()["mode"] == mode and set(ready.json()["failed"]) == set(BROKEN)
    r = c.post("/generate/speech", json={"model": SPEECH, "duration_s": 0.1, "seed": 1})
    assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text
    r = c.post("/generate/handwriting", json={"steps": 10, "seed": 1})
    assert r.status_code == 200 and r.headers["x-model"] == HAND
    for name in ("truncated", "corrupted"):
        r = c.post("/generate/speech", json={"model": name, "duration_s": 0.1})
        assert r.status_code == 404, r.text
        assert "failed to load" in r.json()["detail"] or "not available" in r.json()["detail"]


def test_embedded_mode_reports_broken_checkpoints_and_serves_the_others(mixed_dir):
    with TestClient(create_app(make_settings(mixed_dir))) as c:
        check_reported_and_others_serve(c, "embedded")


def test_redis_mode_reports_broken_checkpoints_and_serves_the_others(mixed_dir, tmp_path):
    with relkit.redis_server(tmp_path / "redis") as server:
        env = relkit.service_env(mixed_dir, server.url, QUEUE_NAME="vrnn-ckpt")
        worker = relkit.spawn("worker", env, tmp_path / "worker.log", *relkit.FAST_WORKER)
        try:
            settings = make_settings(mixed_dir, redis_url=server.url, queue_name="vrnn-ckpt")
            with TestClient(create_app(settings)) as c:
                wait_for(lambda: c.get("/readyz").status_code == 200, 60, "the worker to be ready")
                check_reported_and_others_serve(c, "redis")
                # What the worker published: the weights it could not load, with the reason.
                published = [json.loads(server.client().get(k)) for k in server.client().scan_iter("vrnn:worker:*")]
                assert "truncated" in published[0]["failed_reasons"] and "badmeta" not in published[0]["models"]
                assert published[0]["text_default"] is None  # no text model among these (GET /models: text_default)
        finally:
            kill(worker)
