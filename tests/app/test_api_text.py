"""Text-conditioned handwriting through the API ("write this text"): a tiny random text checkpoint beside the
unconditional ones, embedded mode (and one request through Redis and an in-process RQ worker)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from apikit import HAND, SPEECH, make_settings, redis_db, strokes_json, wav, write_checkpoints
from fastapi.testclient import TestClient
from tinyckpt import TEXT, TEXT_ALPHABET, write_tiny_text_checkpoint

from app.main import create_app

B64_STROKES = base64.b64encode(strokes_json()).decode()


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    directory = write_checkpoints(tmp_path_factory.mktemp("text-checkpoints"))
    write_tiny_text_checkpoint(directory / f"{TEXT}.safetensors")
    return directory


@pytest.fixture(scope="module")
def tc(text_dir):
    with TestClient(create_app(make_settings(text_dir))) as c:
        yield c


def _write(c, body, fmt="svg"):
    return c.post(f"/generate/handwriting?format={fmt}", json=body)


def test_models_says_which_take_text_and_their_alphabet(tc):
    models = {m["name"]: m for m in tc.get("/models").json()["models"]}
    assert models[TEXT]["takes_text"] is True and models[TEXT]["alphabet"] == TEXT_ALPHABET
    assert models[TEXT]["default"] is False  # never the default of a request without text
    assert models[TEXT]["text_default"] is True and not any(m["text_default"] for n, m in models.items() if n != TEXT)
    for name in (HAND, SPEECH):
        assert models[name]["takes_text"] is False and models[name]["alphabet"] is None
    assert tc.get("/models").json()["failed"] == {}


def test_text_gives_stacked_lines_in_one_svg_reproducibly(tc):
    body = {"text": "hello\nworld", "seed": 3, "steps": 40, "bias": 1.0, "color": "navy"}
    r = _write(tc, body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["x-model"] == TEXT and r.headers["x-seed"] == "3"
    assert r.text.startswith("<?xml") and 'stroke="navy"' in r.text and "<path" in r.text
    assert _write(tc, body).content == r.content  # the same seed: the same bytes
    assert _write(tc, {**body, "seed": 4}).content != r.content
    # Both lines are in it: one <path> per stroke of each line (a line's last stroke ends with it).
    lines = _write(tc, body, "json").json()["offsets"]
    strokes = sum(sum(p[2] for p in line[:-1]) + 1 for line in lines)
    assert r.text.count("<path") == strokes


def test_text_as_json_gives_each_line_and_its_offsets(tc):
    r = _write(tc, {"text": "hello world\nabc", "seed": 1, "steps": 30}, "json")
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == TEXT and j["seed"] == 1 and j["texts"] == ["hello world", "abc"]
    assert j["max_steps"] == 30 and len(j["offsets"]) == 2 and len(j["finished"]) == 2
    for line in j["offsets"]:
        assert 1 <= len(line) <= 30 and all(len(p) == 3 and p[2] in (0, 1) for p in line)
    again = _write(tc, {"text": "hello world\nabc", "seed": 1, "steps": 30}, "json")
    assert again.content == r.content
    # Without steps, the model's cap: 40 pen steps per character of the longest line.
    free = _write(tc, {"text": "ab", "seed": 1}, "json").json()
    assert free["max_steps"] is None and 1 <= len(free["offsets"][0]) <= 80


def test_unknown_characters_are_422_naming_them(tc):
    r = _write(tc, {"text": "hello\nwörld?", "steps": 5})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "'ö'" in detail and "'?'" in detail and "'text'" in detail and "remove or replace" in detail
    r = _write(tc, {"text": "hello", "prime": B64_STROKES, "prime_text": "xyz", "steps": 5})
    assert r.status_code == 422 and "'prime_text'" in r.json()["detail"] and "'x'" in r.json()["detail"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("\n".join(["a"] * 11), "at most 10"),
        ("a" * 101, "at most 100"),
        ("hello\n\nworld", "line 2 is empty"),
        ("hello\n", "line 2 is empty"),
        ("   ", "line 1 is empty"),
        ("", "line 1 is empty"),
        (7, "'text' must be"),
    ],
)
def test_text_bounds_are_422_saying_what_to_change(tc, text, words):
    r = _write(tc, {"text": text})
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_ten_lines_of_a_hundred_characters_are_accepted(tc):
    text = "\n".join(["abc de"[: 1 + i % 6] * (100 // (1 + i % 6)) for i in range(10)])
    r = _write(tc, {"text": text, "steps": 2, "seed": 0}, "json")
    assert r.status_code == 200 and len(r.json()["offsets"]) == 10


def test_text_with_an_unconditional_model_and_the_reverse_are_422(tc):
    r = _write(tc, {"text": "hello", "model": HAND})
    assert r.status_code == 422
    assert "does not take text" in r.json()["detail"] and TEXT in r.json()["detail"]
    r = _write(tc, {"model": TEXT, "steps": 5})
    assert r.status_code == 422 and "send 'text'" in r.json()["detail"] and HAND in r.json()["detail"]
    r = _write(tc, {"text": "hello", "model": SPEECH})
    assert r.status_code == 422 and "speech model" in r.json()["detail"]
    # Scoring and latent analysis do not take text.
    for url in ("/score", "/analyze/latent"):
        r = tc.post(url, json={"data_b64": B64_STROKES, "model": TEXT})
        assert r.status_code == 422 and "conditioned on text" in r.json()["detail"]


def test_without_a_text_model_text_is_404_saying_what_to_change(client):
    r = client.post("/generate/handwriting", json={"text": "hello"})
    assert r.status_code == 404
    assert "remove 'text'" in r.json()["detail"] and "--condition text" in r.json()["detail"]


def test_requests_without_text_are_unchanged_beside_a_text_model(tc, client):
    """The default models stay the unconditional ones and give the bytes they give without a text model loaded."""
    for url, body in (
        ("/generate/handwriting", {"steps": 40, "seed": 5}),
        ("/generate/handwriting?format=json", {"steps": 20, "seed": 2, "bias": 0.5}),
        ("/generate/speech", {"duration_s": 0.1, "seed": 1}),
        ("/score", {"data_b64": B64_STROKES}),
    ):
        with_text, without = tc.post(url, json=body), client.post(url, json=body)
        assert with_text.status_code == 200 and with_text.content == without.content
        assert with_text.headers["x-model"] == without.headers["x-model"] != TEXT


def test_priming_needs_the_primed_lines_text(tc):
    body = {"text": "hello", "seed": 2, "steps": 25, "prime": B64_STROKES}
    r = _write(tc, body)
    assert r.status_code == 422 and "prime_text" in r.json()["detail"] and "remove 'prime'" in r.json()["detail"]
    primed = _write(tc, {**body, "prime_text": "abc"}, "json")
    assert primed.status_code == 200, primed.text
    assert _write(tc, {**body, "prime_text": "abc"}, "json").content == primed.content
    plain = _write(tc, {"text": "hello", "seed": 2, "steps": 25}, "json")
    assert primed.json()["offsets"] != plain.json()["offsets"]  # the prime changes the writing
    assert _write(tc, {**body, "prime_text": "abc"}).status_code == 200  # and as SVG
    r = _write(tc, {"text": "hello", "prime_text": "abc"})
    assert r.status_code == 422 and "send that line as 'prime'" in r.json()["detail"]
    r = _write(tc, {"prime_text": "abc", "steps": 5})
    assert r.status_code == 422 and "send 'text'" in r.json()["detail"]
    r = _write(tc, {**body, "prime_text": "a" * 100})
    assert r.status_code == 422 and "at most 99 characters" in r.json()["detail"]


def test_the_openapi_document_has_the_new_fields(tc):
    post = tc.get("/openapi.json").json()["paths"]["/generate/handwriting"]["post"]
    fields = post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert fields["text"]["anyOf"][0]["maxLength"] == 1009 and "takes_text" in fields["text"]["description"]
    assert fields["prime_text"]["anyOf"][0]["maxLength"] == 99


def test_text_through_redis_gives_the_embedded_bytes(text_dir, tc):
    """One text request queued on Redis and run by an in-process RQ worker on the same checkpoints."""
    pytest.importorskip("redis")
    from apikit import REDIS_URL
    from rq import SimpleWorker

    from worker import queueing
    from worker.cache import ModelCache, set_cache

    settings = make_settings(text_dir, redis_url=REDIS_URL, queue_name="vrnn-api-text", sync_wait_s=0.2)
    body = {"text": "hello\nworld", "seed": 9, "steps": 20, "prime": B64_STROKES, "prime_text": "abc"}
    with redis_db() as db:
        set_cache(ModelCache(text_dir, device="cpu"))
        try:
            queue = queueing.make_queue(db, "vrnn-api-text")
            w = SimpleWorker([queue], connection=db, serializer=queueing.SERIALIZER)
            queueing.publish_models(db, w.name, json.dumps({"models": [TEXT], "queue": "vrnn-api-text"}), 60)
            w.register_birth()
            with TestClient(create_app(settings)) as c:
                jobs = [
                    c.post(f"/generate/handwriting?format={f}", json=body, headers={"Prefer": "respond-async"})
                    for f in ("svg", "json")
                ]
                assert [j.status_code for j in jobs] == [202, 202]
                w.register_death()
                w.work(burst=True)
                results = [c.get(f"/jobs/{j.json()['id']}/result") for j in jobs]
        finally:
            set_cache(None)
    for result, fmt in zip(results, ("svg", "json"), strict=True):
        assert result.status_code == 200 and result.headers["x-model"] == TEXT and result.headers["x-seed"] == "9"
        assert result.content == _write(tc, body, fmt).content


# Scoring and latent analysis given the text of a handwriting upload ----------------------------------------------


def _direct(text_dir, text):
    """The tiny text model loaded apart from the service, and the upload in its normalised space."""
    from model import inference
    from model.conditional import load_text_checkpoint

    model, meta = load_text_checkpoint(text_dir / f"{TEXT}.safetensors")
    x = inference.normalised(meta, inference.read_input(meta, strokes_json()), "cpu")
    return model, x


def test_score_with_text_is_the_models_conditional_likelihood(tc, text_dir):
    import torch

    from model import inference

    r = tc.post("/score", json={"data_b64": B64_STROKES, "text": "hello"})
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == TEXT
    j = r.json()
    assert j["model"] == TEXT and j["text"] == "hello" and j["conditional"] is True
    assert j["exact"] is False and j["num_samples"] == 40 and j["frames"] == len(j["per_frame"])
    # The same numbers straight from the model: the IS-40 estimate and the ELBO with the scorer's seed (0).
    model, x = _direct(text_dir, "hello")
    # (TextVRNN.log_likelihood takes the log-mean-exp in float32, the service in float64: float32 rounding apart.)
    direct = model.log_likelihood(x, ["hello"], None, 40, torch.Generator().manual_seed(0))
    assert j["log_likelihood"] == pytest.approx(float(direct[0]), rel=1e-6)
    elbo, ll = inference.elbo_and_likelihood(model, x, None, 40, torch.Generator().manual_seed(0), ["hello"])
    assert (j["elbo"], j["log_likelihood"]) == (float(elbo[0]), float(ll[0]))
    assert j["elbo"] <= j["log_likelihood"]
    with torch.no_grad():
        out = model(x, ["hello"], None, generator=torch.Generator().manual_seed(0))
    assert j["per_frame"] == pytest.approx((-(out.nll + out.kl))[0].tolist(), abs=1e-4)
    # Another text, another score; the same text, the same bytes (multipart or JSON, white space folded).
    other = tc.post("/score", json={"data_b64": B64_STROKES, "text": "world"}).json()
    assert other["text"] == "world" and other["log_likelihood"] != j["log_likelihood"]
    form = tc.post("/score", files={"file": ("line.json", strokes_json())}, data={"text": "  hello "})
    assert form.status_code == 200 and form.content == r.content
    k8 = tc.post("/score", json={"data_b64": B64_STROKES, "text": "hello", "num_samples": 8, "model": TEXT}).json()
    assert k8["num_samples"] == 8 and k8["log_likelihood"] == pytest.approx(
        float(model.log_likelihood(x, ["hello"], None, 8, torch.Generator().manual_seed(0))[0]), rel=1e-6
    )


def test_analysis_with_text_gives_the_attention_on_each_character(tc, text_dir):
    r = tc.post("/analyze/latent", json={"data_b64": B64_STROKES, "text": "he llo"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == TEXT and j["text"] == "he llo" and j["conditional"] is True
    assert j["characters"] == list("he llo") and "phi" in j["units"]
    frames = j["frames"]
    assert len(j["kl"]) == len(j["delta_mu"]) == len(j["kl_per_dim"]) == frames and j["delta_mu"][0] == 0
    assert len(j["phi"]) == frames and all(len(row) == 6 for row in j["phi"])
    assert all(sum(row) > 0 for row in j["phi"])
    model, x = _direct(text_dir, "he llo")
    direct = model.analyze(x, ["he llo"])
    assert np.allclose(j["phi"], direct.phi[0].numpy(), rtol=0, atol=1e-4)
    assert j["kl"] == pytest.approx(direct.kl[0].tolist(), abs=1e-4)
    assert [sum(row) for row in j["kl_per_dim"]] == pytest.approx(j["kl"], abs=1e-3)
    form = tc.post("/analyze/latent", files={"file": ("line.json", strokes_json())}, data={"text": "he llo"})
    assert form.content == r.content
    # The PNG: Figure 2 with the attention panel under it (a taller figure than without text).
    png = tc.post("/analyze/latent?format=png", json={"data_b64": B64_STROKES, "text": "he llo"})
    plain = tc.post("/analyze/latent?format=png", json={"data_b64": B64_STROKES})
    assert png.status_code == plain.status_code == 200 and png.content.startswith(b"\x89PNG")
    height = int.from_bytes(png.content[20:24], "big")
    assert height > int.from_bytes(plain.content[20:24], "big") and png.headers["x-model"] == TEXT


@pytest.mark.parametrize("url", ["/score", "/analyze/latent"])
def test_text_on_uploads_refuses_what_it_cannot_read(tc, url):
    def post(**body):
        r = tc.post(url, json={"data_b64": B64_STROKES, **body})
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    detail = post(text="hellö wörld?")
    assert "'ö'" in detail and "'?'" in detail and "'text'" in detail and "remove or replace" in detail
    detail = post(model=TEXT)
    assert "send 'text'" in detail and "conditioned on text" in detail
    detail = post(model=HAND, text="hello")
    assert "does not take text" in detail and "remove 'text'" in detail and TEXT in detail
    detail = post(data_b64=base64.b64encode(wav(0.2)).decode(), text="hello")
    assert "'text'" in detail and "speech" in detail and "remove 'text'" in detail
    detail = post(data_b64=base64.b64encode(wav(0.2)).decode(), text="hello", model=SPEECH)
    assert "is speech; remove 'text'" in detail
    assert "one line" in post(text="hello\nworld")
    assert "at most 100 characters" in post(text="a" * 101)
    assert "is empty" in post(text="   ")
    form = tc.post(url, files={"file": ("line.json", strokes_json())}, data={"text": "xyz"})
    assert form.status_code == 422 and "'x'" in form.json()["detail"]


def test_score_and_analysis_without_text_are_unchanged_beside_a_text_model(tc, client):
    for url, body in (
        ("/score", {"data_b64": B64_STROKES, "num_samples": 5}),
        ("/analyze/latent", {"data_b64": B64_STROKES}),
        ("/analyze/latent?format=png", {"data_b64": B64_STROKES}),
    ):
        with_text, without = tc.post(url, json=body), client.post(url, json=body)
        assert with_text.status_code == 200 and with_text.content == without.content
        assert with_text.headers["x-model"] == HAND
        assert "conditional" not in with_text.text[:2000] or url.endswith("png")


def test_the_openapi_document_has_text_for_uploads(tc):
    paths = tc.get("/openapi.json").json()["paths"]
    for url in ("/score", "/analyze/latent"):
        content = paths[url]["post"]["requestBody"]["content"]
        for media in ("application/json", "multipart/form-data"):
            field = content[media]["schema"]["properties"]["text"]
            assert field["anyOf"][0]["maxLength"] == 100 and "takes_text" in field["description"]


def test_scoring_and_analysis_with_text_through_redis_give_the_embedded_bytes(text_dir, tc):
    pytest.importorskip("redis")
    from apikit import REDIS_URL
    from rq import SimpleWorker

    from model.runtime import threads_for
    from worker import queueing
    from worker.cache import ModelCache, set_cache

    queue_name = "vrnn-api-text-read"
    settings = make_settings(text_dir, redis_url=REDIS_URL, queue_name=queue_name, sync_wait_s=0.2)
    calls = [
        ("/score", {"data_b64": B64_STROKES, "text": "hello", "num_samples": 6}),
        ("/analyze/latent", {"data_b64": B64_STROKES, "text": "hello"}),
        ("/analyze/latent?format=png", {"data_b64": B64_STROKES, "text": "hello"}),
    ]
    with redis_db() as db:
        set_cache(ModelCache(text_dir, device="cpu"))
        try:
            queue = queueing.make_queue(db, queue_name)
            w = SimpleWorker([queue], connection=db, serializer=queueing.SERIALIZER)
            queueing.publish_models(db, w.name, json.dumps({"models": [TEXT], "queue": queue_name}), 60)
            w.register_birth()
            with TestClient(create_app(settings)) as c:
                jobs = [c.post(url, json=body, headers={"Prefer": "respond-async"}) for url, body in calls]
                assert [j.status_code for j in jobs] == [202, 202, 202]
                w.register_death()
                # As a worker process does at start (worker/__main__: set_threads), the thread count the embedded
                # job threads use: a product's rounding may depend on it (it does on some CPUs), the bytes must not.
                threads = torch.get_num_threads()
                torch.set_num_threads(threads_for(0, make_settings(text_dir).embedded_workers))
                try:
                    w.work(burst=True)
                finally:
                    torch.set_num_threads(threads)
                results = [c.get(f"/jobs/{j.json()['id']}/result") for j in jobs]
        finally:
            set_cache(None)
    for result, (url, body) in zip(results, calls, strict=True):
        assert result.status_code == 200 and result.headers["x-model"] == TEXT
        assert result.content == tc.post(url, json=body).content


def test_bias_defaults_to_the_text_bias_with_text_and_to_the_handwriting_bias_without(tc):
    """An omitted bias is model.defaults.TEXT_BIAS with text and HANDWRITING_BIAS without (the most legible settings
    measured); the API's copies of the numbers (worker.contract: it does not import the model package) are the
    same."""
    from model import defaults
    from worker import contract

    assert contract.TEXT_BIAS == defaults.TEXT_BIAS > 0
    assert contract.HANDWRITING_BIAS == defaults.HANDWRITING_BIAS > 0
    text = {"text": "hello", "seed": 4}
    assert _write(tc, text).content == _write(tc, {**text, "bias": defaults.TEXT_BIAS}).content
    assert _write(tc, text).content != _write(tc, {**text, "bias": 0}).content
    plain = {"model": HAND, "seed": 4, "steps": 30}
    assert _write(tc, plain).content == _write(tc, {**plain, "bias": defaults.HANDWRITING_BIAS}).content
    assert _write(tc, plain).content != _write(tc, {**plain, "bias": 0}).content
