"""Helpers for the worker tests: tiny checkpoints, test inputs, and a slow job for the worker process tests.

Imports only the standard library at the top: `python -m worker --allow-function workerkit.slow_job`
(with tests/worker on PYTHONPATH) imports this module inside the worker process.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/14"  # the worker tests' own database: emptied before and after
SPEECH, SPEECH_RNN, HAND = "speech-vrnn", "speech-rnn", "hand-vrnn"


def small_config(modality: str, family: str = "vrnn", width: int = 16):
    from tinyckpt import tiny_config

    return tiny_config(modality, family, output="gmm", width=width)


def write_checkpoint(path: Path, modality: str, family: str = "vrnn") -> Path:
    from tinyckpt import write_tiny_checkpoint

    return write_tiny_checkpoint(path, small_config(modality, family))


def write_checkpoints(directory: Path) -> Path:
    """speech-vrnn, speech-rnn and hand-vrnn in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    write_checkpoint(directory / f"{SPEECH}.safetensors", "speech")
    write_checkpoint(directory / f"{SPEECH_RNN}.safetensors", "speech", family="rnn")
    write_checkpoint(directory / f"{HAND}.safetensors", "handwriting")
    return directory


def wav(seconds: float = 0.25, rate: int = 16000) -> bytes:
    from tinyckpt import tone_wav

    return tone_wav(seconds, rate)


STROKES = [[[0, 0], [5, 3], [10, 8], [14, 9]], [[20, 0], [25, 5], [27, 9]], [[30, 2], [31, 2]]]
IAM_XML = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><StrokeSet>'
    '<Stroke><Point x="100" y="200" time="0.1"/><Point x="110" y="190" time="0.2"/><Point x="120" y="195" time="0.3"/>'
    '</Stroke><Stroke><Point x="140" y="200" time="0.5"/><Point x="150" y="180" time="0.6"/></Stroke>'
    "</StrokeSet></WhiteboardCaptureSession>\n"
)


def strokes_json() -> bytes:
    return json.dumps(STROKES).encode()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def slow_job(params: dict[str, Any]) -> dict[str, Any]:
    """A job that sleeps `params["seconds"]` and reports which process ran it (worker process tests only)."""
    seconds = float(params["seconds"])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"media_type": "application/json", "headers": {}, "json": {"pid": os.getpid(), "slept": seconds}}
