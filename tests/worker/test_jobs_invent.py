"""worker.jobs: a handwriting request without text, with a text model that has a word model (NAME.wordlm.json), writes
a line that model makes up: the same seed gives the same text and the same bytes; the text fits `steps`; it is the
line the text model writes when it is sent that text; and every other request keeps its unconditional line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tinyckpt import TEXT, write_tiny_text_checkpoint
from workerkit import HAND, b64, strokes_json, write_checkpoints

from model.data import read_handwriting
from model.styles import make_style, write_styles
from model.wordlm import count_lines, wordlm_path, write_wordlm
from worker.cache import ModelCache
from worker.contract import JobInputError
from worker.jobs import Jobs

PLAIN = "hand-text2"  # a second text model, without a word model (after TEXT in load order: TEXT is the default)
LINES = ["hello world", "a red door", "old bread", "hello old world", "a cold lord"]
PACE = 4.0  # steps per character


def _write(d):
    write_checkpoints(d)
    ckpt = write_tiny_text_checkpoint(d / f"{TEXT}.safetensors")
    write_tiny_text_checkpoint(d / f"{PLAIN}.safetensors", seed=1)
    lm = count_lines(LINES, corpus="unit", split="train")
    lm.steps_per_char = PACE
    write_wordlm(ckpt, lm)
    write_styles(ckpt, [make_style("w7", "w7", "hello", read_handwriting(strokes_json()), " abcdehlorw")])
    return d


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return Jobs(ModelCache(_write(tmp_path_factory.mktemp("invent")), device="cpu"))


def test_no_text_writes_a_made_up_line_named_in_x_text(jobs):
    r = jobs.generate_handwriting({"seed": 3})
    h = r["headers"]
    assert h["X-Model"] == TEXT and h["X-Seed"] == "3" and r["media_type"] == "image/svg+xml"
    words = h["X-Text"].split()
    assert words and set(words) <= {w for line in LINES for w in line.split()}
    again = jobs.generate_handwriting({"seed": 3})
    assert again["headers"]["X-Text"] == h["X-Text"] and again["body_b64"] == r["body_b64"]
    texts = {jobs.generate_handwriting({"seed": s, "steps": 20})["headers"]["X-Text"] for s in range(12)}
    assert len(texts) > 2


def test_it_is_the_line_the_model_writes_when_sent_that_text(jobs):
    made = jobs.generate_handwriting({"seed": 5, "steps": 40})
    text = made["headers"]["X-Text"]
    sent = jobs.generate_handwriting({"seed": 5, "steps": 40, "text": text})
    assert sent["body_b64"] == made["body_b64"] and "X-Text" not in sent["headers"]
    doc = jobs.generate_handwriting({"seed": 5, "steps": 40, "format": "json"})["json"]
    assert doc["invented"] is True and doc["texts"] == [text] and doc["max_steps"] == 40
    sent_doc = jobs.generate_handwriting({"seed": 5, "steps": 40, "format": "json", "text": text})["json"]
    assert doc["offsets"] == sent_doc["offsets"] and "invented" not in sent_doc


@pytest.mark.parametrize("steps", [8, 13, 30, 700])
def test_the_line_fits_its_steps(jobs, steps):
    for seed in range(6):
        h = jobs.generate_handwriting({"seed": seed, "steps": steps})["headers"]
        assert h["X-Model"] == TEXT and len(h["X-Text"]) <= steps / PACE


def test_too_few_steps_for_a_word_sample_an_unconditional_line_unless_a_text_model_is_asked_for(jobs):
    h = jobs.generate_handwriting({"seed": 1, "steps": 3})["headers"]
    assert h["X-Model"] == HAND and "X-Text" not in h
    with pytest.raises(JobInputError, match=r"steps=3 leave no room for a word.*at least 4 steps, or send 'text'"):
        jobs.generate_handwriting({"seed": 1, "steps": 3, "model": TEXT})
    with pytest.raises(JobInputError, match=r"steps=3 leave no room"):
        jobs.generate_handwriting({"seed": 1, "steps": 3, "style": "w7"})


def test_a_named_text_model_makes_its_line_up_and_one_without_a_word_model_needs_text(jobs):
    assert jobs.generate_handwriting({"seed": 2, "model": TEXT})["headers"]["X-Text"]
    with pytest.raises(JobInputError, match=rf"model '{PLAIN}' writes a given text and has no word model.*send 'text'"):
        jobs.generate_handwriting({"seed": 2, "model": PLAIN})


def test_an_unconditional_model_a_prime_or_a_style_keep_their_meaning(jobs):
    h = jobs.generate_handwriting({"seed": 2, "model": HAND, "steps": 30})["headers"]
    assert h["X-Model"] == HAND and "X-Text" not in h
    primed = jobs.generate_handwriting({"seed": 2, "steps": 30, "prime_b64": b64(strokes_json())})["headers"]
    assert primed["X-Model"] == HAND and "X-Text" not in primed
    styled = jobs.generate_handwriting({"seed": 2, "style": "w7"})
    plain = jobs.generate_handwriting({"seed": 2})
    assert styled["headers"]["X-Text"] == plain["headers"]["X-Text"]  # the same line, in the style of w7
    assert styled["body_b64"] != plain["body_b64"]
    with pytest.raises(JobInputError, match="'prime_text' is the text of a primed line"):
        jobs.generate_handwriting({"seed": 2, "prime_text": "hello"})


def test_models_say_which_text_model_makes_lines_up(jobs):
    models = {m["name"]: m for m in jobs.list_models()["json"]["models"]}
    assert models[TEXT]["invents_text"] is True and models[PLAIN]["invents_text"] is False
    assert models[HAND]["invents_text"] is None
    assert jobs.cache.inventors() == [TEXT]


def test_without_a_word_model_no_text_is_an_unconditional_line(tmp_path):
    d = _write(tmp_path)
    wordlm_path(d / f"{TEXT}.safetensors").unlink()
    jobs = Jobs(ModelCache(d, device="cpu"))
    h = jobs.generate_handwriting({"seed": 1, "steps": 30})["headers"]
    assert h["X-Model"] == HAND and "X-Text" not in h
    with pytest.raises(JobInputError, match="'style' is the style to write 'text' in"):
        jobs.generate_handwriting({"seed": 1, "style": "w7"})


def test_a_broken_word_model_is_a_warning_and_the_model_writes_given_text(tmp_path):
    d = _write(tmp_path)
    path = wordlm_path(d / f"{TEXT}.safetensors")
    doc = json.loads(path.read_text())
    doc["words"][0] = "zebra"
    path.write_text(json.dumps(doc))
    cache = ModelCache(d, device="cpu")
    (warning,) = cache.warnings
    assert f"checkpoint {TEXT}: its word model is not loaded" in warning and str(path) in warning and "'z'" in warning
    jobs = Jobs(cache)
    assert "X-Text" not in jobs.generate_handwriting({"seed": 1, "steps": 30})["headers"]
    assert jobs.generate_handwriting({"seed": 1, "steps": 30, "text": "hello"})["headers"]["X-Model"] == TEXT


def test_the_made_up_line_does_not_depend_on_the_pen_draws(jobs):
    # the text comes from its own stream of the seed: temperature and bias change the ink, not the words
    a = jobs.generate_handwriting({"seed": 9, "format": "json"})["json"]
    b = jobs.generate_handwriting({"seed": 9, "format": "json", "temperature": 0.5, "bias": 3})["json"]
    assert a["texts"] == b["texts"]
    assert not np.array_equal(np.asarray(a["offsets"][0]), np.asarray(b["offsets"][0]))


@pytest.mark.parametrize("steps", [40, 700])
def test_the_command_lines_invent_writes_the_services_bytes(jobs, steps, tmp_path, capsys):
    import base64

    from model.sample import main

    path = next(p for p in jobs.cache.directory.iterdir() if p.name == f"{TEXT}.safetensors")
    assert main([str(path), "--invent", "--out", str(tmp_path / "x.svg"), "--seed", "6", "--steps", str(steps)]) == 0
    served = jobs.generate_handwriting({"seed": 6, "steps": steps})
    assert repr(served["headers"]["X-Text"]) in capsys.readouterr().out
    assert (tmp_path / "x.svg").read_bytes() == base64.b64decode(served["body_b64"])
