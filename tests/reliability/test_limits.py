"""Every limit a client controls is enforced with a clear 4xx, and uploads are parsed defensively: malformed
WAV/FLAC/XML/JSON, XML entity expansion, NaN and infinite values, and file names chosen by the client (never used
on disk). Embedded mode, FastAPI's TestClient, tiny checkpoints."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
from apikit import HAND, SPEECH, make_settings, write_checkpoints
from fastapi.testclient import TestClient

from app.main import create_app
from worker import limits

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = write_checkpoints(tmp_path_factory.mktemp("limits-checkpoints"))
    settings = make_settings(directory, max_upload_bytes=4 * MIB, max_body_bytes=8 * MIB, max_jobs_per_client=0)
    with TestClient(create_app(settings)) as c:
        yield c


def audio(seconds: float, rate: int, fmt: str = "WAV", subtype: str = "PCM_16", values=None) -> bytes:
    data = np.zeros(int(seconds * rate), dtype=np.float32) if values is None else np.asarray(values, np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def score_file(client, name: str, data: bytes, **fields):
    return client.post("/score", files={"file": (name, data)}, data={"num_samples": "2", **fields})


def detail(r) -> str:
    assert isinstance(r.json()["detail"], str) and r.json()["detail"], r.text
    return r.json()["detail"]


# Sizes and lengths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/generate/speech", {"duration_s": limits.MAX_DURATION_S + 0.01}, "duration_s"),
        ("/generate/speech", {"duration_s": 0}, "duration_s"),
        ("/generate/handwriting", {"steps": limits.MAX_STEPS + 1}, "steps"),
        ("/generate/handwriting", {"steps": 0}, "steps"),
        ("/generate/handwriting", {"steps": 1.5}, "steps"),
        ("/score", {"data_b64": "AAAA", "num_samples": limits.MAX_NUM_SAMPLES + 1}, "num_samples"),
        ("/score", {"data_b64": "AAAA", "num_samples": 0}, "num_samples"),
        ("/score", {"data_b64": "AAAA", "model": "x" * (limits.MAX_MODEL_NAME_CHARS + 1)}, "model"),
    ],
)
def test_generation_length_and_num_samples_are_bounded(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422 and field in detail(r)


def test_num_samples_in_a_multipart_form_is_bounded_too(client):
    r = score_file(client, "a.wav", audio(0.1, 16000), num_samples=str(limits.MAX_NUM_SAMPLES + 1))
    assert r.status_code == 422 and "num_samples" in detail(r)


def test_bodies_over_max_body_bytes_are_413_in_every_form(client):
    big = b"x" * (8 * MIB + 1)
    for path in ("/generate/speech", "/score", "/analyze/latent"):
        r = client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "MAX_BODY_BYTES" in detail(r)
    r = client.post("/score", files={"file": ("a.wav", big)})
    assert r.status_code == 413


def test_audio_longer_than_the_limit_is_413_before_decoding(client, monkeypatch):
    """The header's length decides: the samples of a too-long recording are never decoded (spied on the decoders,
    which the embedded job threads of this process call)."""
    import model.inference

    decoded: list[str] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            decoded.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(model.inference, "read_input", spy("read_input", model.inference.read_input))
    monkeypatch.setattr(sf, "read", spy("sf.read", sf.read))
    assert score_file(client, "short.wav", audio(0.5, 16000), model=SPEECH).status_code == 200
    assert "read_input" in decoded and "sf.read" in decoded  # the spies see an accepted file being decoded
    decoded.clear()
    long = audio(limits.MAX_AUDIO_SECONDS + 1, 1000)  # 61 s at 1 kHz: small in bytes, long in time
    r = score_file(client, "long.wav", long, model=SPEECH)
    assert r.status_code == 413 and f"{limits.MAX_AUDIO_SECONDS:g} s" in detail(r)
    r = client.post("/generate/speech", json={"model": SPEECH, "prime": base64.b64encode(long).decode()})
    assert r.status_code == 413
    assert decoded == []


@pytest.mark.parametrize("rate", [limits.MIN_AUDIO_SAMPLE_RATE - 1, limits.MAX_AUDIO_SAMPLE_RATE + 1])
def test_audio_sample_rates_outside_the_limits_are_422(client, rate):
    r = score_file(client, "odd.wav", audio(0.05, rate), model=SPEECH)
    assert r.status_code == 422 and "sample rate" in detail(r) and "16000" in detail(r)


def test_stroke_counts_over_the_limit_are_413(client):
    points = [[i, i % 7] for i in range(limits.MAX_HANDWRITING_POINTS + 1)]
    r = score_file(client, "many.json", json.dumps([points]).encode(), model=HAND)
    assert r.status_code == 413 and str(limits.MAX_HANDWRITING_POINTS) in detail(r)
    prime = base64.b64encode(json.dumps([points]).encode()).decode()
    r = client.post("/generate/handwriting", json={"model": HAND, "steps": 5, "prime": prime})
    assert r.status_code == 413


# Malformed files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("torn.wav", audio(0.5, 16000)[:60]),  # a header that promises more data than there is
        ("junk.wav", b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + bytes(range(256)) * 4),
        ("zero-channels.wav", b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x00\x00" + b"\x00" * 20),
        ("junk.flac", b"fLaC" + bytes(range(256)) * 8),
        ("torn.flac", audio(0.5, 16000, "FLAC")[:100]),
        ("empty.wav", audio(0.0, 16000)),
        ("short.wav", audio(0.001, 16000)),  # less than one frame
    ],
)
def test_malformed_audio_is_a_clear_4xx(client, name, data):
    r = score_file(client, name, data, model=SPEECH)
    assert r.status_code in (413, 415, 422), (r.status_code, r.text)
    assert "upload" in detail(r) or "frame" in detail(r)


@pytest.mark.parametrize(
    "text",
    [
        "<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='1' y='2'",  # not closed
        "<WhiteboardCaptureSession></WhiteboardCaptureSession>",  # no strokes
        "<a><b>",
        "<?xml version='1.0'?><StrokeSet><Stroke><Point x='a' y='b' time='c'/></Stroke></StrokeSet>",
        "[[[1, 2], [3",
        '{"strokes": 1}',
        "[[1, 2, 3]]",
        "[]",
    ],
)
def test_malformed_strokes_are_a_clear_4xx(client, text):
    name = "line.xml" if text.startswith("<") else "line.json"
    r = score_file(client, name, text.encode(), model=HAND)
    assert r.status_code in (415, 422), (r.status_code, r.text)
    detail(r)


def test_xml_entity_expansion_is_refused_quickly(client):
    laughs = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE s [{laughs}]><StrokeSet><Stroke><Point x="&l9;" y="1"/></Stroke></StrokeSet>'
    )
    started = time.monotonic()
    r = score_file(client, "bomb.xml", bomb.encode(), model=HAND)
    assert r.status_code in (415, 422) and time.monotonic() - started < 5, r.text
    detail(r)


def test_xml_external_entities_are_never_resolved(client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-123")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<StrokeSet><Stroke><Point x="&x;" y="1"/><Point x="2" y="3"/></Stroke></StrokeSet>'
    )
    r = score_file(client, "xxe.xml", xxe.encode(), model=HAND)
    assert r.status_code in (415, 422) and "TOP-SECRET" not in r.text


@pytest.mark.parametrize(
    "text",
    [
        "[[[0, 0], [NaN, 1], [2, 2]]]",
        "[[[0, 0], [Infinity, 1], [2, 2]]]",
        "[[[0, 0], [-Infinity, 1], [2, 2]]]",
        "[[[0, 0], [1e400, 1], [2, 2]]]",
        '<StrokeSet><Stroke><Point x="0" y="0"/><Point x="nan" y="1"/><Point x="2" y="2"/></Stroke></StrokeSet>',
        '<StrokeSet><Stroke><Point x="0" y="0"/><Point x="inf" y="1"/><Point x="2" y="2"/></Stroke></StrokeSet>',
    ],
)
def test_non_finite_stroke_values_are_422(client, text):
    name = "line.xml" if text.startswith("<") else "line.json"
    for path in ("/score", "/analyze/latent"):
        r = client.post(path, files={"file": (name, text.encode())}, data={"model": HAND})
        assert r.status_code == 422, (path, r.status_code, r.text)
        detail(r)


def test_non_finite_arrays_and_samples_are_422(client):
    buf = io.BytesIO()
    np.save(buf, np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0], [1.0, np.inf, 1.0]]))
    r = score_file(client, "line.npy", buf.getvalue(), model=HAND)
    assert r.status_code == 422, r.text
    wave = np.zeros(1600, dtype=np.float32)
    wave[100], wave[200] = np.nan, np.inf
    r = score_file(client, "nan.wav", audio(0, 16000, subtype="FLOAT", values=wave), model=SPEECH)
    assert r.status_code == 422, r.text
    detail(r)


class _Touch:
    """Unpickling one calls open(path, "w"): what any pickle in an upload could do, were it loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_npy_is_refused_without_being_run(client, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    evil = buf.getvalue()
    # The payload works: loading it with pickles allowed (in another process) creates the marker.
    load = "import io, sys, numpy as np; np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=True)"
    subprocess.run([sys.executable, "-c", load], input=evil, check=True, timeout=120)
    assert marker.exists()
    marker.unlink()
    for r in (
        score_file(client, "evil.npy", evil, model=HAND),
        client.post("/analyze/latent", files={"file": ("evil.npy", evil)}),
        client.post("/generate/handwriting", json={"steps": 5, "prime": base64.b64encode(evil).decode()}),
    ):
        assert r.status_code in (415, 422), r.text
        detail(r)
    assert not marker.exists()


# File names --------------------------------------------------------------------------------------------------


def test_uploads_are_never_written_under_a_client_chosen_name(client, tmp_path, monkeypatch):
    """Every file the process opens while serving uploads with hostile names is recorded by an audit hook: none
    carries the name the client chose (the upload is parsed in memory)."""
    marker = f"clientname-{uuid.uuid4().hex}"
    opened: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event in ("open", "os.rename", "shutil.copyfile", "os.mkdir") and args:
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one goes quiet after the test
    monkeypatch.chdir(tmp_path)
    try:
        names = [f"../../{marker}.wav", f"/tmp/{marker}.wav", f"..\\..\\{marker}.json", f"{marker}.xml"]
        bodies = [audio(0.1, 16000), audio(0.1, 16000), json.dumps([[[0, 0], [1, 1]]]).encode(), b"<a/>"]
        for name, body in zip(names, bodies, strict=True):
            r = client.post("/score", files={"file": (name, body)}, data={"num_samples": "2"})
            assert r.status_code < 500, r.text
            r = client.post("/analyze/latent", json={"data_b64": base64.b64encode(body).decode(), "filename": name})
            assert r.status_code < 500, r.text
    finally:
        active[0] = False
    assert not [path for path in opened if marker in path]
    assert not list(tmp_path.rglob(f"*{marker}*")) and not list((tmp_path.parent.parent).glob(f"*{marker}*"))
