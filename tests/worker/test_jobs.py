"""worker.jobs: each job's result, seeds, and every kind of bad input (docs/SERVICE.md is the contract)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from workerkit import HAND, IAM_XML, SPEECH, SPEECH_RNN, b64, strokes_json, wav, write_checkpoints

from model.data.handwriting import offsets_to_strokes
from worker import jobs, limits
from worker.cache import ModelCache, set_cache
from worker.contract import InputTooLargeError, JobInputError, UnknownModelError, UnsupportedMediaError

PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """The process-wide cache the jobs use: the tiny checkpoints, speech default = the VRNN."""
    from worker import cache as cache_module

    saved = cache_module._cache
    c = ModelCache(write_checkpoints(tmp_path_factory.mktemp("ckpts")), device="cpu", default_speech=SPEECH)
    set_cache(c)
    yield c
    set_cache(saved)


def body(result: dict) -> bytes:
    return base64.b64decode(result["body_b64"])


def read_wav(result: dict) -> tuple[np.ndarray, int]:
    assert result["media_type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(body(result)), dtype="float32")
    info = sf.info(io.BytesIO(body(result)))
    assert info.channels == 1 and info.subtype == "PCM_16"
    return data, rate


# Generation ----------------------------------------------------------------------------------------


def test_generate_speech_wav_at_the_models_rate_and_exact_length() -> None:
    r = jobs.generate_speech({"duration_s": 0.3, "seed": 3})
    data, rate = read_wav(r)
    assert rate == 16000 and len(data) == 4800  # 0.3 s exactly: 24 whole frames
    assert r["headers"] == {"X-Model": SPEECH, "X-Seed": "3", "X-Output": "sample", "X-Sample-Rate": "16000"}
    assert jobs.generate_speech({"duration_s": 0.3, "seed": 3, "mean": True})["headers"]["X-Output"] == "mean"
    json.dumps(r)  # JSON-safe, as RQ's JSON serializer needs


@pytest.mark.parametrize(("job", "params"), [("generate_speech", {"duration_s": 0.3}), ("generate_handwriting", {})])
def test_a_model_that_samples_nan_fails_its_job_instead_of_returning_silence(monkeypatch, job, params) -> None:
    """The component draw does not check its probabilities (distributions._multinomial), and a WAV would turn NaN
    into silence: the job checks what the model produced."""
    from model import inference

    real = inference.generate

    def nan_generate(*args, **kwargs):
        return [np.full_like(a, np.nan) for a in real(*args, **kwargs)]

    monkeypatch.setattr(inference, "generate", nan_generate)
    with pytest.raises(FloatingPointError, match="non-finite"):
        getattr(jobs, job)({**params, "seed": 3})


def test_seeds_give_identical_bytes_and_a_drawn_seed_is_reported() -> None:
    a = jobs.generate_speech({"duration_s": 0.1, "seed": 7, "temperature": 0.8})
    b = jobs.generate_speech({"duration_s": 0.1, "seed": 7, "temperature": 0.8})
    c = jobs.generate_speech({"duration_s": 0.1, "seed": 8, "temperature": 0.8})
    assert a == b and a["body_b64"] != c["body_b64"]
    drawn = jobs.generate_speech({"duration_s": 0.1, "model": SPEECH_RNN})
    seed = int(drawn["headers"]["X-Seed"])
    assert 0 <= seed <= limits.MAX_SEED and drawn["headers"]["X-Model"] == SPEECH_RNN
    assert jobs.generate_speech({"duration_s": 0.1, "model": SPEECH_RNN, "seed": seed}) == drawn
    h1 = jobs.generate_handwriting({"steps": 40, "seed": 5, "bias": 0.5})
    assert h1 == jobs.generate_handwriting({"steps": 40, "seed": 5, "bias": 0.5})


def test_same_seed_from_a_thread_pool_gives_the_same_bytes() -> None:
    params = {"duration_s": 0.1, "seed": 11}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: jobs.generate_speech(dict(params)), range(4)))
    assert all(r == results[0] for r in results)


def test_generate_speech_continues_a_prime() -> None:
    r = jobs.generate_speech({"duration_s": 0.2, "seed": 1, "prime_b64": b64(wav(0.1, rate=8000))})
    data, rate = read_wav(r)
    assert rate == 16000 and len(data) == 3200


def test_generate_handwriting_svg_and_json() -> None:
    r = jobs.generate_handwriting({"steps": 60, "seed": 2, "color": "navy", "stroke_width": 3})
    assert r["media_type"] == "image/svg+xml" and r["headers"]["X-Model"] == HAND and r["headers"]["X-Seed"] == "2"
    root = ET.fromstring(body(r).decode("utf-8"))
    j = jobs.generate_handwriting({"steps": 60, "seed": 2, "format": "json"})
    assert j["media_type"] == "application/json" and j["headers"]["X-Output"] == "sample"
    offsets = j["json"]["offsets"]
    assert len(offsets) == 60 and all(len(row) == 3 and row[2] in (0, 1) for row in offsets)
    # The SVG draws the same sample: one non-empty <path> per stroke (the JSON's pen-up bits end strokes), in the
    # requested colour and width.
    strokes = offsets_to_strokes(np.asarray(offsets, dtype=np.float64))
    paths = list(root.iter(f"{SVG}path"))
    assert root.tag == f"{SVG}svg" and len(strokes) >= 1
    assert len(paths) == len(strokes) and all(p.get("d", "").startswith("M") for p in paths)
    (group,) = root.iter(f"{SVG}g")
    assert group.get("stroke") == "navy" and float(group.get("stroke-width")) > 0
    primed = jobs.generate_handwriting({"steps": 20, "seed": 2, "format": "json", "prime_b64": b64(IAM_XML)})
    assert len(primed["json"]["offsets"]) == 20
    json.dumps(j, allow_nan=False)


# Scoring and analysis -----------------------------------------------------------------------------


def test_score_vrnn_is_estimate_and_rnn_exact() -> None:
    r = jobs.score({"data_b64": b64(wav(0.25)), "filename": "a.wav", "num_samples": 8})
    s = r["json"]
    assert r["headers"] == {"X-Model": SPEECH} and s["model"] == SPEECH and s["family"] == "vrnn"
    assert s["modality"] == "speech" and s["output"] == "gmm" and s["space"] == "normalised"
    assert s["exact"] is False and s["num_samples"] == 8 and s["frames"] == 20 and len(s["per_frame"]) == 20
    assert math.isfinite(s["elbo"]) and math.isfinite(s["log_likelihood"])
    assert s["log_likelihood"] >= s["elbo"]  # the IS estimate and the ELBO come from the same draws
    assert s["nats_per_frame"] == pytest.approx(s["log_likelihood"] / 20)
    jac = -200 * math.log(0.1)  # the normalisation's log-Jacobian per frame (std 0.1)
    assert s["raw"]["log_likelihood"] == pytest.approx(s["log_likelihood"] + 20 * jac)
    assert s["raw"]["elbo"] == pytest.approx(s["elbo"] + 20 * jac)
    assert jobs.score({"data_b64": b64(wav(0.25)), "num_samples": 8}) == r  # deterministic, sniffed as speech
    exact = jobs.score({"data_b64": b64(wav(0.25)), "model": SPEECH_RNN})["json"]
    assert exact["exact"] is True and exact["elbo"] == exact["log_likelihood"]
    assert sum(exact["per_frame"]) == pytest.approx(exact["log_likelihood"], abs=1e-2)
    json.dumps(r, allow_nan=False)


def test_score_handwriting_by_suffix_and_by_content() -> None:
    by_name = jobs.score({"data_b64": b64(strokes_json()), "filename": "line.json", "num_samples": 4})["json"]
    by_content = jobs.score({"data_b64": b64(strokes_json()), "num_samples": 4})["json"]
    assert by_name == by_content and by_name["model"] == HAND and by_name["frames"] == 9
    xml = jobs.score({"data_b64": "data:text/xml;base64," + b64(IAM_XML), "num_samples": 4})["json"]
    assert xml["frames"] == 5 and xml["log_likelihood"] >= xml["elbo"]


def test_analyze_latent_json_and_png() -> None:
    r = jobs.analyze_latent({"data_b64": b64(wav(0.25)), "filename": "a.wav"})
    a = r["json"]
    assert r["headers"] == {"X-Model": SPEECH} and a["frames"] == 20
    assert len(a["kl"]) == len(a["delta_mu"]) == len(a["kl_per_dim"]) == 20 and len(a["kl_per_dim"][0]) == 4
    assert a["delta_mu"][0] == 0 and all(k >= 0 for k in a["kl"]) and a["space"] == "normalised"
    png = jobs.analyze_latent({"data_b64": b64(strokes_json()), "format": "png"})
    assert png["media_type"] == "image/png" and body(png).startswith(PNG) and png["headers"]["X-Model"] == HAND


def test_list_models() -> None:
    r = jobs.list_models({})
    assert r["media_type"] == "application/json" and r["json"]["failed"] == {}
    assert sorted(m["name"] for m in r["json"]["models"]) == sorted([SPEECH, SPEECH_RNN, HAND])
    assert jobs.list_models(None) == r


# The child process of the test below: runs every job that takes an upload once to import everything, then again
# under an audit hook (PEP 578) recording each write to the file system a Python process can make: open() or
# Path.write_* for writing (the "open" event with a write mode), os.open with write flags, tempfile, mkdir, rename,
# remove, copy. Then it checks that the hook catches each of those ways (the guard is live), and lists the files
# that appeared meanwhile under its working, temporary and home folders (writes from C code raise no event).
_NO_DISK_CHILD = r"""
import json, os, sys, tempfile
from pathlib import Path

from workerkit import IAM_XML, SPEECH, b64, wav

from worker import jobs
from worker.cache import ModelCache, set_cache

set_cache(ModelCache(sys.argv[1], device="cpu", default_speech=SPEECH))
watched = [Path(p) for p in sys.argv[2:]]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = {"os.mkdir", "os.rename", "os.link", "os.symlink", "os.truncate", "os.remove", "os.rmdir",
          "shutil.copyfile", "shutil.copytree", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp"}
recorded, phase = [], [None]


def hook(event, args):
    if phase[0] is None:
        return
    if event == "open":
        path, mode, flags = args
        if (any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)):
            recorded.append([phase[0], event, str(path)])
    elif event in EVENTS:
        recorded.append([phase[0], event, str(args[0]) if args else ""])


def run_jobs():
    jobs.score({"data_b64": b64(wav(0.1)), "num_samples": 2})
    jobs.score({"data_b64": b64(IAM_XML), "filename": "../../line.xml", "num_samples": 2})
    jobs.analyze_latent({"data_b64": b64(wav(0.1)), "filename": "/tmp/a.wav"})
    jobs.analyze_latent({"data_b64": b64(IAM_XML), "format": "png"})
    jobs.generate_speech({"duration_s": 0.05, "seed": 0, "prime_b64": b64(wav(0.05))})
    jobs.generate_handwriting({"steps": 10, "seed": 0, "prime_b64": b64(IAM_XML)})


def files():
    return {str(p) for root in watched for p in root.rglob("*")}


run_jobs()  # every lazy import and cache done before the hook looks
sys.addaudithook(hook)
before = files()
phase[0] = "jobs"
run_jobs()
phase[0] = None
appeared = sorted(files() - before)
canary = watched[0] / "canary"
for name, write in [
    ("open", lambda: open(canary, "wb").close()),
    ("Path.write_bytes", lambda: canary.write_bytes(b"x")),
    ("os.open", lambda: os.close(os.open(canary, os.O_WRONLY))),
    ("tempfile", lambda: os.close(tempfile.mkstemp(dir=watched[0])[0])),
    ("mkdir", lambda: (watched[0] / "d").mkdir()),
]:
    phase[0] = name
    write()
phase[0] = None
print(json.dumps({"recorded": recorded, "appeared": appeared}))
"""


def test_uploads_never_touch_the_disk(cache, tmp_path) -> None:
    """Uploads (data_b64, prime_b64) are parsed in memory: no job writes a file while handling one."""
    here = Path(__file__).resolve().parent
    folders = {name: tmp_path / name for name in ("cwd", "tmp", "home")}
    for folder in folders.values():
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DEFAULT_SPEECH_MODEL", "DEFAULT_HANDWRITING_MODEL")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(here.parents[1]), str(here.parent), str(here)]),
        PYTHONDONTWRITEBYTECODE="1",
        TMPDIR=str(folders["tmp"]),
        HOME=str(folders["home"]),
        MPLCONFIGDIR=str(folders["home"] / "mpl"),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )
    args = [sys.executable, "-c", _NO_DISK_CHILD, str(cache.directory), *(str(f) for f in folders.values())]
    child = subprocess.run(args, cwd=folders["cwd"], env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-4000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert [r for r in report["recorded"] if r[0] == "jobs"] == [], report["recorded"]
    assert report["appeared"] == []
    # The guard is live: it caught every way of writing the child tried afterwards.
    assert {r[0] for r in report["recorded"]} == {"open", "Path.write_bytes", "os.open", "tempfile", "mkdir"}


# Bad input -----------------------------------------------------------------------------------------

GARBAGE = b64(b"\x00\x01 this is neither audio nor strokes \xff" * 4)
PNG_DATA = b64(PNG + b"\x00" * 64)
BAD = [
    # generate_speech
    ("generate_speech", {"duration_s": 0}, JobInputError, "'duration_s' must be a number from 0.05 to 20"),
    ("generate_speech", {"duration_s": 50}, JobInputError, "pick a value in that range"),
    ("generate_speech", {"duration_s": float("nan")}, JobInputError, "'duration_s' must be a finite number"),
    ("generate_speech", {"duration_s": float("inf")}, JobInputError, "finite number"),
    ("generate_speech", {"duration_s": "2"}, JobInputError, "'duration_s' must be a number .* got '2'"),
    ("generate_speech", {"duration_s": True}, JobInputError, "'duration_s' must be a number"),
    ("generate_speech", {"temperature": 0}, JobInputError, "'temperature' must be a number above 0 and at most 5"),
    ("generate_speech", {"temperature": 5.5}, JobInputError, "'temperature' must be a number above 0"),
    ("generate_speech", {"temperature": float("-inf")}, JobInputError, "'temperature' must be a finite number"),
    ("generate_speech", {"seed": -1}, JobInputError, r"'seed' must be a whole number from 0 to 2\*\*63 - 1"),
    ("generate_speech", {"seed": 2**63}, JobInputError, r"'seed' must be a whole number from 0"),
    ("generate_speech", {"seed": 1.5}, JobInputError, "'seed' must be a whole number"),
    ("generate_speech", {"mean": "yes"}, JobInputError, "'mean' must be true or false"),
    ("generate_speech", {"durations": 2}, JobInputError, "'durations' is not a parameter.*the parameters are: model"),
    ("generate_speech", [1, 2], JobInputError, "parameters must be a JSON object"),
    ("generate_speech", {"prime_b64": "not base64!!"}, JobInputError, "'prime_b64' is not valid base64"),
    ("generate_speech", {"prime_b64": "é"}, JobInputError, "'prime_b64' is not valid base64"),
    ("generate_speech", {"prime_b64": 12}, JobInputError, "'prime_b64' must be a base64 string"),
    ("generate_speech", {"prime_b64": ""}, JobInputError, "'prime_b64' is empty"),
    (
        "generate_speech",
        {"prime_b64": GARBAGE},
        UnsupportedMediaError,
        r"the prime: not a readable audio file \(Format",
    ),
    ("generate_speech", {"prime_b64": b64(strokes_json())}, UnsupportedMediaError, "looks like handwriting"),
    ("generate_speech", {"model": HAND}, JobInputError, "is a handwriting model, not a speech one"),
    ("generate_speech", {"model": 5}, JobInputError, "'model' must be a checkpoint name"),
    ("generate_speech", {"model": "x" * 200}, JobInputError, "at most 128 characters"),
    # generate_handwriting
    ("generate_handwriting", {"steps": 0}, JobInputError, "'steps' must be a whole number from 1 to 3000"),
    ("generate_handwriting", {"steps": 3001}, JobInputError, "'steps' must be a whole number from 1 to 3000"),
    ("generate_handwriting", {"steps": 2.5}, JobInputError, "'steps' must be a whole number"),
    ("generate_handwriting", {"bias": -1}, JobInputError, "'bias' must be a number from 0 to 10"),
    ("generate_handwriting", {"bias": float("nan")}, JobInputError, "'bias' must be a finite number"),
    ("generate_handwriting", {"stroke_width": 0}, JobInputError, "'stroke_width' must be a number above 0 and at most"),
    ("generate_handwriting", {"stroke_width": 25}, JobInputError, "'stroke_width' must be a number above 0"),
    ("generate_handwriting", {"color": "red;stroke:url(x)"}, JobInputError, "use #rgb or #rrggbb"),
    ("generate_handwriting", {"color": 3}, JobInputError, "'color' must be a string"),
    ("generate_handwriting", {"format": "png"}, JobInputError, "'format' must be one of 'svg', 'json'"),
    ("generate_handwriting", {"prime_b64": b64(wav())}, UnsupportedMediaError, "looks like speech"),
    ("generate_handwriting", {"prime_b64": b64("[[[1, 2], [3]]]")}, JobInputError, r"stroke 0, point 1"),
    ("generate_handwriting", {"mean": True}, JobInputError, "'mean' is not a parameter"),
    # score
    ("score", {}, JobInputError, "'data_b64' is required"),
    ("score", {"data_b64": b64(wav()), "num_samples": 0}, JobInputError, "'num_samples' must be a whole number"),
    ("score", {"data_b64": b64(wav()), "num_samples": 201}, JobInputError, "from 1 to 200"),
    ("score", {"data_b64": "@@@@"}, JobInputError, "'data_b64' is not valid base64"),
    ("score", {"data_b64": "data:audio/wav,abc"}, JobInputError, "data: URL must be base64"),
    ("score", {"data_b64": GARBAGE}, UnsupportedMediaError, "neither speech audio nor handwriting"),
    ("score", {"data_b64": PNG_DATA, "filename": "x.png"}, UnsupportedMediaError, "'x.png' is neither speech"),
    ("score", {"data_b64": GARBAGE, "filename": "x.wav"}, UnsupportedMediaError, "x.wav: not a readable audio"),
    ("score", {"data_b64": b64(wav()), "model": HAND}, UnsupportedMediaError, "looks like speech but model"),
    ("score", {"data_b64": b64(strokes_json()), "model": SPEECH}, UnsupportedMediaError, "looks like handwriting"),
    ("score", {"data_b64": b64("<a></a>"), "model": HAND}, JobInputError, "no StrokeSet > Stroke > Point"),
    ("score", {"data_b64": b64("[1, 2"), "filename": "l.json"}, JobInputError, "not valid JSON"),
    ("score", {"data_b64": b64(wav(61.0, rate=1000))}, InputTooLargeError, "61.0 s of audio is more than the 60 s"),
    ("score", {"data_b64": b64(wav(1.0, rate=500))}, JobInputError, "sample rate 500 Hz is outside"),
    (
        "score",
        {"data_b64": b64(json.dumps([[1, 1, 0]] * 20001)), "model": HAND},
        InputTooLargeError,
        "20001 pen points is more than the 20000",
    ),
    ("score", {"data_b64": b64(wav()), "filename": 3}, JobInputError, "'filename' must be a string"),
    # analyze_latent
    ("analyze_latent", {"data_b64": b64(wav()), "format": "gif"}, JobInputError, "'format' must be one of 'json'"),
    ("analyze_latent", {"data_b64": b64(wav()), "model": SPEECH_RNN}, JobInputError, "no latent variables"),
    ("analyze_latent", {"data_b64": b64(b"RIFF" + b"\x00" * 40)}, UnsupportedMediaError, "neither speech audio nor"),
    # list_models
    ("list_models", {"x": 1}, JobInputError, "is not a parameter.*the parameters are: none"),
]


@pytest.mark.parametrize(("job", "params", "error", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_job_input_error_with_a_helpful_message(job, params, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        getattr(jobs, job)(params)
    assert isinstance(info.value, JobInputError) and isinstance(info.value, ValueError)


def test_upload_size_limit_is_checked_before_decoding(monkeypatch) -> None:
    """An oversized data_b64 is refused from its length alone: neither the base64 nor the audio is decoded."""
    import model.inference

    calls: list[str] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    payload = {"data_b64": b64(wav(0.25)), "num_samples": 2}
    monkeypatch.setattr(base64, "b64decode", spy("b64decode", base64.b64decode))
    monkeypatch.setattr(model.inference, "read_input", spy("read_input", model.inference.read_input))
    monkeypatch.setattr(sf, "info", spy("sf.info", sf.info))
    jobs.score(payload)  # under the limit: the spies see each decoding step
    assert {"b64decode", "sf.info", "read_input"} <= set(calls), calls
    calls.clear()
    monkeypatch.setattr(limits, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(InputTooLargeError, match="larger than"):
        jobs.score(payload)
    assert calls == []


@pytest.mark.parametrize("job", ["generate_speech", "generate_handwriting", "score", "analyze_latent"])
def test_unknown_model(job) -> None:
    params = {"model": "no-such-model"}
    if job in ("score", "analyze_latent"):
        params["data_b64"] = b64(wav())
    with pytest.raises(UnknownModelError, match="no model named 'no-such-model'; the loaded"):
        getattr(jobs, job)(params)


def test_results_are_json_safe_for_rq(tmp_path: Path) -> None:
    from rq.serializers import JSONSerializer

    r = jobs.generate_handwriting({"steps": 10, "seed": 0, "format": "json"})
    assert JSONSerializer.loads(JSONSerializer.dumps(r)) == r
