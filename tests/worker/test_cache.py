"""worker.cache: every checkpoint loaded once, failures recorded per file, defaults, locks, the process cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from workerkit import HAND, SPEECH, SPEECH_RNN, write_checkpoint, write_checkpoints

from worker import cache as cache_module
from worker.cache import ModelCache, get_cache, set_cache
from worker.contract import JobInputError, UnknownModelError


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("good"))


@pytest.fixture
def broken_dir(good_dir: Path, tmp_path: Path) -> Path:
    """The good checkpoints plus broken ones: truncated weights, bad JSON, JSON without weights, a resume file."""
    d = tmp_path / "ckpts"
    shutil.copytree(good_dir, d)
    src = d / f"{SPEECH}.safetensors"
    (d / "truncated.safetensors").write_bytes(src.read_bytes()[:100])
    shutil.copy(d / f"{SPEECH}.json", d / "truncated.json")
    shutil.copy(src, d / "badjson.safetensors")
    (d / "badjson.json").write_text("{not json")
    shutil.copy(d / f"{HAND}.json", d / "noweights.json")
    shutil.copy(src, d / f"{SPEECH}.resume.safetensors")  # the trainer's resume state: not a checkpoint
    (d / f"{SPEECH}.log.json").write_text("[]")  # a training log: ignored
    return d


def test_loads_every_checkpoint_with_defaults_and_description(good_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEFAULT_SPEECH_MODEL", raising=False)
    monkeypatch.delenv("DEFAULT_HANDWRITING_MODEL", raising=False)
    cache = ModelCache(good_dir, device="cpu")
    assert cache.names == sorted([SPEECH, SPEECH_RNN, HAND])
    assert cache.failed == {}
    # Without settings, a VRNN is preferred over the RNN that sorts first by file name.
    assert cache.defaults == {"speech": SPEECH, "handwriting": HAND}
    model, meta, name = cache.get(None, "speech")
    assert name == SPEECH and meta["config"]["family"] == "vrnn" and not model.training
    desc = cache.describe()
    assert desc["failed"] == {} and desc["device"] == "cpu"
    assert [m["name"] for m in desc["models"]] == cache.names
    row = next(m for m in desc["models"] if m["name"] == SPEECH)
    keys = {"name", "display_name", "modality", "family", "output", "sample_rate", "frame_size", "params"}
    assert keys | {"metrics", "dataset", "created"} <= set(row)
    assert row["display_name"] == "VRNN-GMM" and row["modality"] == "speech" and row["sample_rate"] == 16000
    assert row["frame_size"] == 200 and row["params"] > 0 and row["metrics"] == {"test_elbo": -1.0}
    hand = next(m for m in desc["models"] if m["name"] == HAND)
    assert hand["sample_rate"] is None and hand["frame_size"] == 3
    json.dumps(desc, allow_nan=False)  # JSON-safe


def test_default_models_from_the_environment(good_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEFAULT_SPEECH_MODEL", SPEECH)
    cache = ModelCache(good_dir, device="cpu")
    assert cache.get(None, "speech")[2] == SPEECH and cache.warnings == []
    monkeypatch.setenv("DEFAULT_SPEECH_MODEL", SPEECH_RNN)  # any loaded model of the modality may be chosen
    assert ModelCache(good_dir, device="cpu").defaults["speech"] == SPEECH_RNN
    monkeypatch.setenv("DEFAULT_SPEECH_MODEL", HAND)  # the wrong modality: warned, the preferred one serves
    monkeypatch.setenv("DEFAULT_HANDWRITING_MODEL", "nope")
    cache = ModelCache(good_dir, device="cpu")
    assert cache.defaults == {"speech": SPEECH, "handwriting": HAND}
    assert len(cache.warnings) == 2 and "DEFAULT_HANDWRITING_MODEL=nope is not loaded" in cache.warnings[1]


def test_broken_checkpoints_are_recorded_and_the_others_serve(broken_dir: Path) -> None:
    cache = ModelCache(broken_dir, device="cpu")
    assert cache.names == sorted([SPEECH, SPEECH_RNN, HAND])
    assert set(cache.failed) == {"truncated", "badjson", "noweights"}
    assert "truncated.safetensors" in cache.failed["truncated"]
    assert "badjson.json" in cache.failed["badjson"] and "JSON" in cache.failed["badjson"]
    assert "noweights.safetensors: missing" in cache.failed["noweights"]
    assert cache.describe()["failed"] == cache.failed
    with pytest.raises(UnknownModelError, match="failed to load"):
        cache.get("truncated", "speech")
    model, _, name = cache.get(SPEECH, "speech")  # the others keep serving
    assert name == SPEECH
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 3, 200)).elbo).all()


def test_get_errors_and_latent_choice(good_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEFAULT_SPEECH_MODEL", raising=False)
    cache = ModelCache(good_dir, device="cpu")
    with pytest.raises(UnknownModelError, match=r"no model named 'nope'; the loaded speech models are"):
        cache.get("nope", "speech")
    with pytest.raises(JobInputError, match="is a handwriting model, not a speech one"):
        cache.get(HAND, "speech")
    with pytest.raises(JobInputError, match="checkpoint name"):
        cache.get(123, "speech")  # type: ignore[arg-type]
    with pytest.raises(JobInputError, match="no latent variables"):
        cache.get(SPEECH_RNN, latent=True)
    # The speech default is the RNN; asking for latent variables picks the VRNN instead.
    assert cache.get(None, "speech", latent=True)[2] == SPEECH
    assert cache.lock(SPEECH) is cache.lock(SPEECH) and cache.lock(SPEECH) is not cache.lock(HAND)
    only_speech = tmp_path / "only"
    only_speech.mkdir()
    write_checkpoint(only_speech / "s.safetensors", "speech")
    (only_speech / "bad name.safetensors").write_bytes(b"x")
    other = ModelCache(only_speech, device="cpu")
    assert "rename it" in other.failed["bad name"]
    with pytest.raises(UnknownModelError, match="no handwriting model is loaded"):
        other.get(None, "handwriting")


def test_missing_directory_gives_an_empty_cache(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "absent", device="cpu")
    assert len(cache) == 0 and "does not exist" in cache.warnings[0]
    with pytest.raises(UnknownModelError, match="no speech model is loaded"):
        cache.get(None, "speech")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(good_dir: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        ModelCache(good_dir, device="cuda")
    assert ModelCache(good_dir, device="auto").device == "cpu"


def test_process_cache_is_created_once_from_the_environment(good_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHECKPOINT_DIR", str(good_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    saved = cache_module._cache
    set_cache(None)
    try:
        first = get_cache()
        assert first is get_cache() and first.directory == good_dir and len(first) == 3
        set_cache(None)
        assert get_cache() is not first
    finally:
        set_cache(saved)


def test_text_checkpoints_load_beside_the_others_and_are_never_a_default(good_dir: Path, tmp_path, monkeypatch) -> None:
    """A text-conditioned checkpoint (model.train --condition text) loads as a TextVRNN; requests without text
    never get it, and a setting that names it falls back to the preferred unconditional model with a warning."""
    from tinyckpt import TEXT, TEXT_ALPHABET, write_tiny_text_checkpoint

    from model.conditional import TextVRNN
    from model.inference import InferenceError, load

    d = tmp_path / "ckpts"
    shutil.copytree(good_dir, d)
    write_tiny_text_checkpoint(d / f"{TEXT}.safetensors")
    write_tiny_text_checkpoint(d / "aaa-text-rnn.safetensors", family="rnn")  # sorts first: not preferred
    monkeypatch.setenv("DEFAULT_HANDWRITING_MODEL", TEXT)
    cache = ModelCache(d, device="cpu")
    assert cache.failed == {} and TEXT in cache.names
    assert cache.defaults == {"speech": SPEECH, "handwriting": HAND} and cache.text_default == TEXT
    assert any(f"DEFAULT_HANDWRITING_MODEL={TEXT} writes given text only" in w for w in cache.warnings)
    model, meta, name = cache.get(None, "handwriting", text=True)
    assert isinstance(model, TextVRNN) and name == TEXT and meta["config"]["alphabet"] == TEXT_ALPHABET
    assert cache.get(None, "handwriting")[2] == HAND and cache.get(None, "handwriting", latent=True)[2] == HAND
    with pytest.raises(JobInputError, match="send 'text'"):
        cache.get(TEXT, "handwriting")
    with pytest.raises(JobInputError, match="conditioned on text"):
        cache.get(TEXT, latent=True)
    with pytest.raises(JobInputError, match=r"does not take text.*aaa-text-rnn, hand-text"):
        cache.get(HAND, "handwriting", text=True)
    rows = {m["name"]: m for m in cache.describe()["models"]}
    assert rows[TEXT]["takes_text"] and rows[TEXT]["alphabet"] == TEXT_ALPHABET and not rows[TEXT]["default"]
    assert not rows[HAND]["takes_text"] and rows[HAND]["alphabet"] is None
    # The command lines' load still refuses a text checkpoint, pointing at the loader that takes it.
    with pytest.raises(InferenceError, match="load_text_checkpoint"):
        load(d / f"{TEXT}.safetensors")


def test_without_an_unconditional_handwriting_model_text_models_stay_out_of_the_defaults(tmp_path) -> None:
    from tinyckpt import TEXT, write_tiny_text_checkpoint

    write_checkpoint(tmp_path / f"{SPEECH}.safetensors", "speech")
    write_tiny_text_checkpoint(tmp_path / f"{TEXT}.safetensors")
    cache = ModelCache(tmp_path, device="cpu")
    assert cache.defaults == {"speech": SPEECH, "handwriting": None} and cache.text_default == TEXT
    with pytest.raises(UnknownModelError, match="no handwriting model is loaded"):
        cache.get(None, "handwriting")
    assert cache.get(None, "handwriting", text=True)[2] == TEXT
