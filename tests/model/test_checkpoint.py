"""Checkpoints round-trip exactly and never unpickle; broken files get errors that name them."""

from __future__ import annotations

import json

import pytest
import torch
from modelkit import build, exploit_pickle, make_x, perturb

from model import CheckpointError, load_checkpoint, read_metadata, save_checkpoint


def test_save_load_gives_identical_outputs(tmp_path, kind):
    model, cfg = build(kind)
    model = perturb(model, 0.1)
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"dataset": "unit", "norm": {"std": 2.0}})
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == cfg
    assert meta["dataset"] == "unit" and meta["norm"] == {"std": 2.0}
    assert meta["name"] == cfg.name and meta["params"] == sum(p.numel() for p in model.parameters())
    assert "created" in meta and "code_version" in meta
    x = make_x(cfg, 2, 5)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(loaded(x, generator=g()).elbo, model(x, generator=g()).elbo)
    assert torch.equal(loaded.sample(2, 4, generator=g()), model.sample(2, 4, generator=g()))


def test_paths_without_suffix_and_json_path_name_the_same_checkpoint(tmp_path):
    model, _ = build(("rnn", "gauss", "speech"))
    written = save_checkpoint(model, tmp_path / "demo")
    assert written == tmp_path / "demo.safetensors"
    assert (tmp_path / "demo.json").exists()
    assert load_checkpoint(tmp_path / "demo.json")[0].config == model.config
    assert read_metadata(tmp_path / "demo")["config"] == model.config.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


def test_metadata_cannot_override_the_config(tmp_path):
    model, _ = build(("vrnn", "gmm", "speech"))
    save_checkpoint(model, tmp_path / "m.safetensors", metadata={"config": {"family": "rnn"}})
    assert load_checkpoint(tmp_path / "m.safetensors")[0].config == model.config


def test_a_pickle_renamed_safetensors_is_refused_without_running_it(tmp_path):
    model, _ = build(("vrnn", "gauss", "speech"))
    save_checkpoint(model, tmp_path / "evil.safetensors")
    marker = tmp_path / "pwned"
    (tmp_path / "evil.safetensors").write_bytes(exploit_pickle(marker))
    with pytest.raises(CheckpointError, match=r"evil\.safetensors"):
        load_checkpoint(tmp_path / "evil.safetensors")
    assert not marker.exists()
    torch.save({"w": torch.zeros(1)}, tmp_path / "evil.safetensors")  # a torch pickle zip, same story
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "evil.safetensors")


def test_broken_checkpoints_give_errors_naming_the_file(tmp_path):
    model, _ = build(("vrnn", "gauss", "speech"))
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a valid safetensors file"):
        load_checkpoint(path)

    path.write_bytes(data)
    meta_path = tmp_path / "m.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"m\.json: not readable JSON"):
        load_checkpoint(path)

    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "h_dim": 99}}))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_checkpoint(path)

    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "family": "gru"}}))
    with pytest.raises(CheckpointError, match="family must be one of"):
        load_checkpoint(path)

    meta_path.write_text(json.dumps({"weights": "elsewhere"}))
    with pytest.raises(CheckpointError, match="no 'config'"):
        load_checkpoint(path)

    meta_path.unlink()
    with pytest.raises(CheckpointError, match=r"m\.json: missing"):
        load_checkpoint(path)

    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_non_finite_weights_are_refused(tmp_path):
    model, _ = build(("rnn", "gauss", "speech"))
    with torch.no_grad():
        model.rnn.weight_hh[0, 0] = float("nan")
    path = save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="non-finite weights in"):
        load_checkpoint(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
