"""worker.jobs: score and analyze_latent given the text of a handwriting upload (text-conditioned checkpoints)."""

from __future__ import annotations

import pytest
import torch
from tinyckpt import TEXT, write_tiny_text_checkpoint
from workerkit import HAND, b64, strokes_json, write_checkpoints

from model import inference
from model.conditional import load_text_checkpoint
from worker.cache import ModelCache
from worker.contract import JobInputError, UnknownModelError
from worker.jobs import Jobs

TEXT_RNN = "hand-text-rnn"
DATA = b64(strokes_json())


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    d = write_checkpoints(tmp_path_factory.mktemp("text-ckpts"))
    write_tiny_text_checkpoint(d / f"{TEXT}.safetensors")
    write_tiny_text_checkpoint(d / f"{TEXT_RNN}.safetensors", family="rnn")
    return d


@pytest.fixture(scope="module")
def jobs(text_dir):
    return Jobs(ModelCache(text_dir, device="cpu"))


def _line(text_dir, name):
    model, meta = load_text_checkpoint(text_dir / f"{name}.safetensors")
    return model, inference.normalised(meta, inference.read_input(meta, strokes_json()), "cpu")


def test_the_rnn_family_scores_exactly_given_the_text(jobs, text_dir):
    j = jobs.score({"data_b64": DATA, "text": " hello   world ", "model": TEXT_RNN, "num_samples": 7})["json"]
    assert j["text"] == "hello world" and j["conditional"] is True  # white space folded, as generation does
    assert j["exact"] is True and j["num_samples"] == 1 and j["elbo"] == j["log_likelihood"]
    model, x = _line(text_dir, TEXT_RNN)
    exact = float(model.log_likelihood(x, ["hello world"])[0])
    assert j["log_likelihood"] == pytest.approx(exact, rel=1e-6)
    assert sum(j["per_frame"]) == pytest.approx(exact, abs=1e-3)
    assert jobs.score({"data_b64": DATA, "text": "world", "model": TEXT_RNN})["json"]["log_likelihood"] != j["elbo"]


def test_the_default_text_model_is_the_preferred_vrnn_and_analysis_needs_latents(jobs):
    assert jobs.score({"data_b64": DATA, "text": "hello"})["json"]["model"] == TEXT
    assert jobs.analyze_latent({"data_b64": DATA, "text": "hello"})["json"]["model"] == TEXT
    with pytest.raises(JobInputError, match=rf"no latent variables.*{TEXT}"):
        jobs.analyze_latent({"data_b64": DATA, "text": "hello", "model": TEXT_RNN})


def test_analysis_with_text_without_a_latent_text_model_is_404(tmp_path):
    write_tiny_text_checkpoint(tmp_path / f"{TEXT_RNN}.safetensors", family="rnn")
    jobs = Jobs(ModelCache(tmp_path, device="cpu"))
    assert jobs.score({"data_b64": DATA, "text": "hello"})["json"]["model"] == TEXT_RNN
    with pytest.raises(UnknownModelError, match=r"with latent variables.*remove 'text'"):
        jobs.analyze_latent({"data_b64": DATA, "text": "hello"})


def test_scoring_with_text_runs_under_the_lock_not_in_the_scoring_batcher(text_dir, jobs):
    cache = ModelCache(text_dir, device="cpu", batch_max=4)
    try:
        batched = Jobs(cache)
        with_text = batched.score({"data_b64": DATA, "text": "hello", "num_samples": 5})
        assert f"{TEXT}/score" not in cache.engine_stats()
        assert with_text == jobs.score({"data_b64": DATA, "text": "hello", "num_samples": 5})
        batched.score({"data_b64": DATA, "num_samples": 5})  # without text: the batcher, as before
        assert cache.engine_stats()[f"{HAND}/score"]["requests"] == 1
    finally:
        cache.close()


def test_the_scores_use_the_scorers_seed_whatever_ran_before(jobs):
    params = {"data_b64": DATA, "text": "hello", "num_samples": 4}
    first = jobs.score(params)
    jobs.analyze_latent({"data_b64": DATA, "text": "hello"})
    torch.manual_seed(123)
    assert jobs.score(params) == first


def test_long_lines_run_their_importance_samples_in_groups(jobs, text_dir, monkeypatch):
    import math

    model, x = _line(text_dir, TEXT)
    assert inference.text_samples_per_pass(model, x.shape[1], 5) >= 200  # a short line: all K at once
    assert inference.text_samples_per_pass(model, 20_000, 100) < 200  # the longest upload: in groups
    monkeypatch.setattr(inference, "text_samples_per_pass", lambda model, steps, chars: 3)
    j = jobs.score({"data_b64": DATA, "text": "hello", "num_samples": 8})["json"]
    generator = torch.Generator().manual_seed(0)
    log_w = torch.cat([model.log_weights(x, ["hello"], None, n, generator) for n in (3, 3, 2)]).double()
    assert j["elbo"] == float(log_w.mean(0)[0])
    assert j["log_likelihood"] == float(torch.logsumexp(log_w, 0)[0] - math.log(8))
