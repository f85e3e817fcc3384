"""worker.cache: a text checkpoint's named styles (NAME.styles.json) load with it; a file that is too large or broken
is left out with a warning (the model still serves, without styles), as other checkpoint problems are."""

from __future__ import annotations

import json

import pytest
from tinyckpt import TEXT, TEXT_ALPHABET, write_tiny_text_checkpoint
from workerkit import HAND, b64, strokes_json, write_checkpoints

from model.data import read_handwriting
from model.styles import MAX_STYLES_BYTES, make_style, write_styles
from worker.cache import ModelCache
from worker.contract import JobInputError
from worker.jobs import Jobs


def _dir(tmp_path, styles_text: str | bytes | None):
    write_checkpoints(tmp_path)
    ckpt = write_tiny_text_checkpoint(tmp_path / f"{TEXT}.safetensors")
    path = tmp_path / f"{TEXT}.styles.json"
    if isinstance(styles_text, str):
        path.write_text(styles_text)
    elif isinstance(styles_text, bytes):
        path.write_bytes(styles_text)
    return ckpt


def test_styles_load_beside_their_text_model(tmp_path):
    ckpt = _dir(tmp_path, None)
    write_styles(ckpt, [make_style("w7", "w7", "hello", read_handwriting(strokes_json()), TEXT_ALPHABET)])
    cache = ModelCache(tmp_path, device="cpu")
    assert cache.warnings == [] and cache.style_names() == {TEXT: ["w7"]}
    models = {m["name"]: m for m in cache.describe()["models"]}
    assert models[TEXT]["styles"] == ["w7"] and models[HAND]["styles"] is None
    assert cache.style(TEXT, "w7").text == "hello"
    with pytest.raises(JobInputError, match=r"no style 'w8'; pick one of its styles: w7"):
        cache.style(TEXT, "w8")


def test_a_text_model_without_styles_lists_none_and_refuses_a_style(tmp_path):
    _dir(tmp_path, None)
    jobs = Jobs(ModelCache(tmp_path, device="cpu"))
    assert {m["name"]: m for m in jobs.list_models()["json"]["models"]}[TEXT]["styles"] == []
    with pytest.raises(JobInputError, match=r"has no named styles.*remove 'style'"):
        jobs.generate_handwriting({"text": "hello", "style": "w1"})
    # the model still writes, and primes with an upload
    assert jobs.generate_handwriting({"text": "hello", "seed": 1, "steps": 5})["headers"]["X-Model"] == TEXT
    primed = {"text": "hello", "seed": 1, "steps": 5, "prime_b64": b64(strokes_json()), "prime_text": "abc"}
    assert jobs.generate_handwriting(primed)["headers"]["X-Model"] == TEXT


@pytest.mark.parametrize(
    "content, words",
    [
        (b" " * (MAX_STYLES_BYTES + 1), f"more than the {MAX_STYLES_BYTES}"),
        ("{broken", "not valid JSON"),
        (
            '{"format_version": 1, "styles": {"w1": {"writer": "w1", "text": "zz", "offsets": [[0,0,1],[1,1,1]]}}}',
            "'z'",
        ),
    ],
)
def test_a_too_large_or_broken_styles_file_is_a_warning_and_the_model_serves(tmp_path, content, words):
    _dir(tmp_path, content)
    cache = ModelCache(tmp_path, device="cpu")
    assert TEXT in cache and cache.failed == {} and cache.style_names() == {TEXT: []}
    (warning,) = cache.warnings
    assert f"checkpoint {TEXT}: its styles are not loaded" in warning and words in warning
    assert str(tmp_path / f"{TEXT}.styles.json") in warning
    assert Jobs(cache).generate_handwriting({"text": "hello", "seed": 1, "steps": 5})["headers"]["X-Model"] == TEXT


def test_a_styles_file_is_not_mistaken_for_a_checkpoint(tmp_path):
    ckpt = _dir(tmp_path, None)
    write_styles(ckpt, [make_style("w7", "w7", "hello", read_handwriting(strokes_json()), TEXT_ALPHABET)])
    cache = ModelCache(tmp_path, device="cpu")
    assert f"{TEXT}.styles" not in cache.failed and f"{TEXT}.styles" not in cache
    assert json.loads((tmp_path / f"{TEXT}.styles.json").read_text())["format_version"] == 1
