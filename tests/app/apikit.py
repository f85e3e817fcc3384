"""Helpers for the API tests: tiny checkpoints, inputs, settings, and the environment of their subprocesses
(started, stopped and polled with scripts/servicekit.py).

Only the standard library, tinyckpt and servicekit (the shared kits, torch-free) at the top: torch is imported
inside the functions that need it, so that the Redis-mode tests can check that the API itself never imports it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import servicekit
import tinyckpt
from servicekit import tone_wav as wav  # noqa: F401 (the tests import these from here)
from tinyckpt import HAND, SPEECH, SPEECH_RNN, STROKES, strokes_json  # noqa: F401

REDIS_URL = "redis://127.0.0.1:6379/13"  # the API tests' own database: emptied before and after
# Mixture-output (GMM) checkpoints: the sampling path of the shipped handwriting default (write_gmm_checkpoints).
SPEECH_GMM, HAND_GMM = "speech-vrnn-gmm", "hand-vrnn-gmm"
# Small limits for the TestClient apps, so that the 413 paths are cheap to reach.
MAX_UPLOAD = 256 * 1024
MAX_BODY = 512 * 1024


@contextlib.contextmanager
def jobs_held(monkeypatch) -> Iterator[None]:
    """Every job waits to start its work until the block ends: the jobs a test submits inside it are still running
    or waiting when it counts them, however fast sampling is."""
    from worker.jobs import Jobs

    release, run = threading.Event(), Jobs.run
    monkeypatch.setattr(Jobs, "run", lambda self, kind, params: release.wait(60) and run(self, kind, params))
    try:
        yield
    finally:
        release.set()


def make_settings(checkpoint_dir: Path, **overrides):
    """Embedded-mode Settings on `checkpoint_dir` with small limits; `overrides` by field name."""
    from app.settings import Settings

    values = dict(
        redis_url=None,
        checkpoint_dir=checkpoint_dir,
        max_upload_bytes=MAX_UPLOAD,
        max_body_bytes=MAX_BODY,
        embedded_workers=2,
        api_keys="",
    )
    values.update(overrides)
    return Settings(**values)


def write_checkpoint(path: Path, modality: str, family: str = "vrnn", output: str = "gauss") -> Path:
    """A freshly initialised tiny model, saved with the trainer's metadata."""
    return tinyckpt.write_tiny_checkpoint(path, tinyckpt.tiny_config(modality, family, output), dataset="api-test")


def write_checkpoints(directory: Path) -> Path:
    """speech-vrnn, speech-rnn and hand-vrnn in `directory`."""
    return tinyckpt.write_checkpoints(directory, dataset="api-test")


def write_gmm_checkpoints(directory: Path) -> Path:
    """speech-vrnn-gmm and hand-vrnn-gmm (2-component mixture outputs) in `directory`: alone there, they are the
    defaults of their modality, so requests without a model sample a mixture."""
    directory.mkdir(parents=True, exist_ok=True)
    write_checkpoint(directory / f"{SPEECH_GMM}.safetensors", "speech", output="gmm")
    write_checkpoint(directory / f"{HAND_GMM}.safetensors", "handwriting", output="gmm")
    return directory


def child_env(**extra: str) -> dict[str, str]:
    """servicekit.child_env for the tests' servers and workers: one thread each (the cores are shared), no DEVICE."""
    return servicekit.child_env(drop=("DEVICE",), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def redis_db():
    """A client of the API tests' database (13), emptied before and after, locked against concurrent runs."""
    from rediskit import redis_db as shared

    return shared(REDIS_URL)


def write_tiny_styles(checkpoint: Path, texts: dict[str, str], alphabet: str = tinyckpt.TEXT_ALPHABET) -> Path:
    """NAME.styles.json beside a tiny text checkpoint (model.styles): one style per name in `texts` (its writer the
    name), the test strokes (STROKES) with that text, scaled by 1, 1.5, 2, ... in the order given so that each style
    writes differently (as tests/app/test_api_styles.py's)."""
    import numpy as np

    from model.data import read_handwriting
    from model.styles import make_style, write_styles

    styles = []
    for i, (name, text) in enumerate(texts.items()):
        offsets = read_handwriting(strokes_json())
        offsets[:, :2] *= np.float32(1 + 0.5 * i)
        styles.append(make_style(name, name, text, offsets, alphabet))
    return write_styles(checkpoint, styles)


def through_redis(directory: Path, queue_name: str, body: dict, published: dict) -> tuple[dict, object, object]:
    """POST /generate/handwriting `body` to an API in Redis mode whose queue an in-process RQ worker drains, after
    publishing that worker's models as `worker/__main__` does, with `published` over the cache's own description ->
    (GET /models by name, the job's result response, the worker's ModelCache)."""
    import json

    from fastapi.testclient import TestClient
    from rq import SimpleWorker

    from app.main import create_app
    from worker import queueing
    from worker.cache import ModelCache, set_cache

    settings = make_settings(directory, redis_url=REDIS_URL, queue_name=queue_name, sync_wait_s=0.2)
    with redis_db() as db:
        cache = ModelCache(directory, device="cpu")
        set_cache(cache)
        try:
            queue = queueing.make_queue(db, queue_name)
            w = SimpleWorker([queue], connection=db, serializer=queueing.SERIALIZER)
            info = {"models": cache.names, "queue": queue_name, "defaults": cache.defaults}
            info |= {"text_default": cache.text_default, **published}
            queueing.publish_models(db, w.name, json.dumps(info), 60)
            w.register_birth()
            with TestClient(create_app(settings)) as c:
                listed = {m["name"]: m for m in c.get("/models").json()["models"]}
                job = c.post("/generate/handwriting", json=body, headers={"Prefer": "respond-async"})
                assert job.status_code == 202, job.text
                w.register_death()
                w.work(burst=True)
                result = c.get(f"/jobs/{job.json()['id']}/result")
        finally:
            set_cache(None)
    return listed, result, cache
