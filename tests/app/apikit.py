"""Helpers for the API tests: tiny checkpoints, inputs, and servers run as subprocesses.

Only the standard library and tinyckpt (the shared kit, torch-free at the top) at the top: torch is imported
inside the functions that need it, so that the Redis-mode tests can check that the API itself never imports it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import tinyckpt
from tinyckpt import HAND, SPEECH, SPEECH_RNN, STROKES, strokes_json  # noqa: F401 (the tests import them from here)
from tinyckpt import tone_wav as wav  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/13"  # the API tests' own database: emptied before and after
# Mixture-output (GMM) checkpoints: the sampling path of the shipped handwriting default (write_gmm_checkpoints).
SPEECH_GMM, HAND_GMM = "speech-vrnn-gmm", "hand-vrnn-gmm"
# Small limits for the TestClient apps, so that the 413 paths are cheap to reach.
MAX_UPLOAD = 256 * 1024
MAX_BODY = 512 * 1024


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


# Subprocesses --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a server or worker subprocess: none of this machine's service settings leak in."""
    drop = {"REDIS_URL", "API_KEYS", "CHECKPOINT_DIR", "QUEUE_NAME", "HOST", "PORT", "DEVICE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **extra)
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=60.0):
    """-> (status, headers, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, obj: dict, headers: dict[str, str] | None = None):
    return http("POST", url, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def wait_until(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0, status: int = 200) -> None:
    """Poll `url` until it answers `status`; fail with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            last = http("GET", url, timeout=5)
            if last[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} in {timeout} s (last: {last}):\n{log.read_text()[-4000:]}")


def redis_db():
    """A client of the API tests' database (13), emptied before and after, locked against concurrent runs."""
    from rediskit import redis_db as shared

    return shared(REDIS_URL)
