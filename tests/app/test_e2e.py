"""The service as it is deployed: real `python -m app` processes on free ports, one in embedded mode and one in
Redis mode (database 13) with a real `python -m worker`, started together so that their start-ups overlap.
The two modes give the same bytes for the same seed."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from apikit import HAND, REDIS_URL, SPEECH, child_env, redis_db, strokes_json, wav
from servicekit import free_port, start, stop, wait_until

httpx = pytest.importorskip("httpx")
redis = pytest.importorskip("redis")

pytestmark = pytest.mark.slow

QUEUE = "vrnn-e2e"


@pytest.fixture(scope="module")
def servers(checkpoint_dir, tmp_path_factory):
    with redis_db():
        yield from _servers(checkpoint_dir, tmp_path_factory)


def _servers(checkpoint_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("e2e-logs")
    ports = {"embedded": free_port(), "redis": free_port()}
    common = {"CHECKPOINT_DIR": str(checkpoint_dir), "EMBEDDED_WORKERS": "1"}
    redis_env = {"REDIS_URL": REDIS_URL, "QUEUE_NAME": QUEUE, "SYNC_WAIT_S": "30", **common}
    procs = {
        "embedded": start(["-m", "app", "--port", str(ports["embedded"])], child_env(**common), logs / "embedded.log"),
        "worker": start(["-m", "worker", "--device", "cpu"], child_env(**redis_env), logs / "worker.log"),
        "redis": start(["-m", "app", "--port", str(ports["redis"])], child_env(**redis_env), logs / "redis.log"),
    }
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    try:
        for mode in ("embedded", "redis"):  # ready: models loaded / a worker with models is up
            wait_until(urls[mode] + "/readyz", procs[mode], logs / f"{mode}.log")
        yield {"urls": urls, "procs": procs, "logs": logs}
    finally:
        stop(*procs.values())


def generate_all(base: str) -> dict[str, bytes]:
    with httpx.Client(base_url=base, timeout=60) as c:
        out = {}
        r = c.post("/generate/speech", json={"model": SPEECH, "duration_s": 0.5, "seed": 123})
        assert r.status_code == 200, r.text
        out["speech"] = r.content
        r = c.post("/generate/handwriting", json={"model": HAND, "steps": 80, "seed": 9, "bias": 0.5})
        assert r.status_code == 200, r.text
        out["svg"] = r.content
        r = c.post("/score", files={"file": ("tone.wav", wav(0.25))}, data={"model": SPEECH, "num_samples": "4"})
        assert r.status_code == 200, r.text
        out["score"] = r.content
        r = c.post("/analyze/latent", files={"file": ("line.json", strokes_json())})
        assert r.status_code == 200, r.text
        out["latent"] = r.content
    return out


def test_embedded_and_redis_modes_give_the_same_bytes(servers):
    embedded = generate_all(servers["urls"]["embedded"])
    via_redis = generate_all(servers["urls"]["redis"])
    assert embedded == via_redis
    assert embedded["speech"][:4] == b"RIFF" and len(embedded["speech"]) == 44 + 2 * 8000
    assert ET.fromstring(embedded["svg"]).tag == "{http://www.w3.org/2000/svg}svg"


def test_redis_mode_jobs_errors_and_no_torch(servers):
    base = servers["urls"]["redis"]
    with httpx.Client(base_url=base, timeout=60) as c:
        body = {"model": SPEECH, "seed": 5, "duration_s": 0.25}
        r = c.post("/generate/speech", json=body, headers={"Prefer": "respond-async"})
        assert r.status_code == 202
        location = r.headers["location"]
        deadline = time.monotonic() + 30
        while True:
            polled = c.get(location)
            assert polled.status_code == 200, polled.text
            state = polled.json()
            if state["status"] in ("finished", "failed"):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["status"] == "finished"
        result = c.get(location + "/result")
        sync = c.post("/generate/speech", json=body)
        assert result.status_code == 200 and result.content == sync.content
        # The worker's errors come back as the synchronous answers: 404 unknown model, 422 bad input, 415.
        assert c.post("/generate/speech", json={"model": "nope"}).status_code == 404
        r = c.post("/generate/handwriting", json={"color": "url(#x)"})
        assert r.status_code == 422 and "color" in r.json()["detail"]
        r = c.post("/score", files={"file": ("a.wav", wav(0.1))}, data={"model": HAND})
        assert r.status_code == 415
        assert {m["name"] for m in c.get("/models").json()["models"]} >= {SPEECH, HAND}
        assert 'vrnn_job_duration_seconds_count{kind="generate_speech",status="finished"}' in c.get("/metrics").text
    # The Redis-mode API process never loaded PyTorch's library; the worker did.
    maps = Path(f"/proc/{servers['procs']['redis'].pid}/maps")
    if maps.exists():
        assert "libtorch" not in maps.read_text()
        assert "libtorch" in Path(f"/proc/{servers['procs']['worker'].pid}/maps").read_text()


def test_embedded_server_serves_the_page_docs_and_health(servers):
    base = servers["urls"]["embedded"]
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/").headers["content-type"].startswith("text/html")
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").json()["info"]["title"] == "VRNN service"
        r = c.post("/generate/speech", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
