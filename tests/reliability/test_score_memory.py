"""One request cannot take a worker's memory: `score` and `analyze_latent` on the largest upload the limits allow
(60 s of speech, 20,000 pen points) at the largest K (num_samples = 200), run in a subprocess whose address space
is capped a little above what the loaded worker already maps. They give a result (or a 4xx error), never a
MemoryError or a crash: the importance samples run a few time steps at a time (model.defaults.NO_GRAD_CHUNK_BYTES).

Before the chunks, the same calls asked torch for K x T decoder rows at once (about 10 GB for these tiny GMM
checkpoints, 30 GB for the shipped speech-vrnn-gmm)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker import limits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HEADROOM_MB = 1024  # address space the jobs may add to the loaded worker's

CHILD = textwrap.dedent(
    """
    import base64, json, resource, sys
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from model.render import wav_bytes
    from worker import jobs, limits
    from worker.cache import ModelCache, set_cache
    from worker.contract import JobInputError

    set_cache(ModelCache(sys.argv[1], "cpu"))
    rate = 16000
    t = np.arange(round(limits.MAX_AUDIO_SECONDS * rate)) / rate
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(t))
    speech = wav_bytes(0.3 * np.sin(2 * np.pi * 220 * t) + noise, rate)
    pen = np.cumsum(np.random.default_rng(1).normal(0, 3, (limits.MAX_HANDWRITING_POINTS, 2)), 0).round(1).tolist()
    strokes = json.dumps([pen[i : i + 50] for i in range(0, len(pen), 50)]).encode()
    uploads = {"speech-gmm": (speech, "long.wav"), "hand-gmm": (strokes, "long.json")}
    jobs.score({"model": "speech-gmm", "data_b64": base64.b64encode(speech[:20000]).decode(), "filename": "a.wav"})

    def vm_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    loaded = vm_kib("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (loaded * 1024 + int(sys.argv[2]) * 2**20, resource.RLIM_INFINITY))
    out = {"loaded_mb": loaded // 1024}
    for name, (data, filename) in uploads.items():
        params = {"model": name, "data_b64": base64.b64encode(data).decode(), "filename": filename}
        for kind in ("score", "analyze_latent"):
            extra = {"num_samples": limits.MAX_NUM_SAMPLES} if kind == "score" else {}
            try:
                result = getattr(jobs, kind)({**params, **extra})["json"]
                out[f"{name} {kind}"] = {k: result[k] for k in ("frames", "elbo", "log_likelihood") if k in result}
            except JobInputError as e:  # a 4xx: allowed, though not expected here
                out[f"{name} {kind}"] = {"error": type(e).__name__, "message": str(e)}
    out["peak_mb"] = vm_kib("VmPeak") // 1024
    print(json.dumps(out))
    """
)


def test_the_largest_score_and_analysis_fit_in_bounded_memory(tmp_path):
    from tinyckpt import tiny_config, write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "speech-gmm.safetensors", tiny_config("speech", output="gmm"))
    write_tiny_checkpoint(tmp_path / "hand-gmm.safetensors", tiny_config("handwriting", output="gmm"))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(HEADROOM_MB)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(out))
    frames = round(limits.MAX_AUDIO_SECONDS * 16000 / 200)
    assert out["speech-gmm score"]["frames"] == frames
    assert out["speech-gmm analyze_latent"]["frames"] == frames
    assert out["hand-gmm score"]["frames"] == limits.MAX_HANDWRITING_POINTS
    assert out["hand-gmm analyze_latent"]["frames"] == limits.MAX_HANDWRITING_POINTS
    for name in ("speech-gmm score", "hand-gmm score"):
        assert out[name]["log_likelihood"] >= out[name]["elbo"], out[name]
    assert out["peak_mb"] <= out["loaded_mb"] + HEADROOM_MB
