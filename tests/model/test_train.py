"""Training and evaluation through their command lines, on small generated corpora."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from modelkit import tiny_training, write_tones

from model import ModelConfig, load_checkpoint
from model import train as train_mod
from model.evaluate import main as evaluate_main

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    return write_tones(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="module")
def trained(speech_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "v.safetensors"
    run(
        "model.train", "--data", str(speech_dir), "--preset", "speech-demo", "--family", "vrnn", "--output", "gauss",
        "--out", str(out), "--max-steps", "6", "--eval-every", "3", "--batch-size", "8", "--h-dim", "32",
        "--mlp-width", "32", "--z-dim", "8", "--test-samples", "8", "--no-progress",
    )  # fmt: skip
    return out


def test_training_writes_a_loadable_checkpoint_with_metadata_and_logs(trained):
    model, meta = load_checkpoint(trained)
    assert model.config.name == "VRNN-Gauss" and model.config.h_dim == 32
    assert meta["normalisation"]["modality"] == "speech" and meta["sample_rate"] == 16000
    assert meta["dataset"]["split_sizes"]["train"] > 0 and meta["dataset"]["chunk_seconds"] == 0.5
    assert meta["training"]["steps"] == 6 and meta["training"]["finished"]
    m = meta["metrics"]
    assert m["num_samples"] == 8 and not m["exact"]
    assert m["test_log_likelihood"] >= m["test_elbo"]  # the IS estimate sits above the bound
    assert np.isfinite(m["raw"]["log_likelihood"])
    stem = trained.with_suffix("")
    rows = (stem.parent / (stem.name + ".log.csv")).read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3  # header + evaluations at steps 3 and 6
    assert (stem.parent / (stem.name + ".curves.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((stem.parent / (stem.name + ".log.json")).read_text())["config"]["family"] == "vrnn"


def test_resume_continues_from_the_saved_step(trained, speech_dir):
    args = [
        "--data", str(speech_dir), "--preset", "speech-demo", "--family", "vrnn", "--output", "gauss", "--out",
        str(trained), "--max-steps", "9", "--eval-every", "3", "--batch-size", "8", "--h-dim", "32", "--mlp-width",
        "32", "--z-dim", "8", "--test-samples", "2", "--no-progress", "--resume",
    ]  # fmt: skip
    proc = run("model.train", *args)
    assert "resuming" in proc.stderr and "at step 6" in proc.stderr
    assert load_checkpoint(trained)[1]["training"]["steps"] == 9


def test_evaluate_prints_table_1(trained, speech_dir, capsys):
    assert evaluate_main([str(trained), "--data", str(speech_dir), "--num-samples", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == trained.stem and rows[0]["sequences"] > 0
    assert rows[0]["log_likelihood"] >= rows[0]["elbo"]
    assert evaluate_main([str(trained), "--data", str(speech_dir), "--split", "valid"]) == 0
    assert ">=" in capsys.readouterr().out


def test_evaluate_rejects_bad_checkpoints(tmp_path, speech_dir, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert evaluate_main([str(bad), "--data", str(speech_dir)]) == 2
    assert "bad" in capsys.readouterr().err


def test_bad_options_exit_2_with_a_message(tmp_path, speech_dir):
    base = ["--data", str(speech_dir), "--out", str(tmp_path / "x.safetensors")]
    for extra, message in [
        (["--preset", "speech-demo", "--bogus"], "unrecognized arguments"),
        (["--preset", "iam-ondb", "--modality", "speech"], "is for handwriting"),
        (["--family", "vrnn"], "--modality is required"),
        (["--preset", "speech-demo", "--lr", "-1"], "must be positive"),
    ]:
        proc = run("model.train", *base, *extra, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("model.train", "--data", str(empty), "--preset", "speech-demo", "--out", str(tmp_path / "y.safetensors"),
               check=False)  # fmt: skip
    assert proc.returncode == 2 and "no .wav, .flac files" in proc.stderr and "Traceback" not in proc.stderr


def test_gradients_are_clipped_between_backward_and_step(speech_dir, tmp_path, monkeypatch):
    """The known bug of a popular VRNN: clipping after optimizer.step(). Here the order is checked."""
    calls: list[str] = []
    real_clip, real_step = torch.nn.utils.clip_grad_norm_, torch.optim.Adam.step

    def clip(params, max_norm, *a, **k):
        params = list(params)
        calls.append("clip" if all(p.grad is not None for p in params) else "clip-without-grads")
        return real_clip(params, max_norm, *a, **k)

    def step(self, *a, **k):
        calls.append("step")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    args = tiny_training(speech_dir, tmp_path / "c.safetensors", "--clip-grad", "1e-3", family="rnn", steps=3, every=3)
    assert train_mod.train(args) == 0
    assert calls == ["clip", "step"] * 3


def test_non_finite_loss_stops_with_a_clear_message(speech_dir, tmp_path, capsys):
    extra = ("--lr", "1e6", "--clip-grad", "1e9", "--std-floor", "1e-30")
    args = tiny_training(speech_dir, tmp_path / "n.safetensors", *extra, family="rnn", steps=50)
    assert train_mod.train(args) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "not finite" in err and "lower --lr" in err
    # Whatever was written is whole: the last good weights, or nothing when no evaluation was good.
    if (tmp_path / "n.safetensors").exists():
        load_checkpoint(tmp_path / "n.safetensors")
    else:
        assert "no checkpoint was written" in err


def test_kl_warmup_weights_the_kl_and_logs_the_true_elbo(speech_dir, tmp_path):
    assert [train_mod.kl_weight(s, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert train_mod.kl_weight(0, 0) == 1.0
    out = tmp_path / "w.safetensors"
    assert train_mod.train(tiny_training(speech_dir, out, "--kl-warmup", "4", steps=4)) == 0
    rows = (tmp_path / "w.log.csv").read_text().splitlines()
    weights = [float(r.split(",")[rows[0].split(",").index("kl_weight")]) for r in rows[1:]]
    assert weights == [0.25, 0.5, 0.75, 1.0]
    assert load_checkpoint(out)[1]["training"]["kl_warmup"] == 4


def test_parameter_matching_follows_the_paper():
    """RNN-GMM and VRNNs get the width that matches the RNN-Gauss networks' parameter count."""
    ref = ModelConfig(family="rnn", output="gauss", x_dim=200, z_dim=32, h_dim=256, mlp_layers=1, mlp_width=512)
    target = train_mod.dnn_params(ref)
    for family, output in [("rnn", "gmm"), ("vrnn", "gauss"), ("vrnn", "gmm"), ("vrnn-i", "gauss")]:
        cfg = ModelConfig(**{**ref.to_dict(), "family": family, "output": output})
        width = train_mod.matched_width(cfg, ref)
        got = train_mod.dnn_params(ModelConfig(**{**cfg.to_dict(), "mlp_width": width}))
        step = train_mod.dnn_params(ModelConfig(**{**cfg.to_dict(), "mlp_width": width + 1})) - got
        assert abs(got - target) <= step, (family, output, width)
        assert width < 512  # more networks (or a bigger head) -> narrower layers


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(speech_dir, tmp_path):
    """DistributedDataParallel with gloo: two processes train one model and write one checkpoint."""
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # a free port: a fixed one collided with other runs on the same machine
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, "-m",
        "model.train", "--data", str(speech_dir), "--preset", "speech-demo", "--family", "vrnn", "--output", "gauss",
        "--out", str(out), "--max-steps", "4", "--eval-every", "2", "--batch-size", "4", "--h-dim", "16",
        "--mlp-width", "16", "--z-dim", "4", "--test-samples", "2", "--no-progress", "--threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    _, meta = load_checkpoint(out)
    assert meta["training"]["steps"] == 4 and np.isfinite(meta["metrics"]["test_elbo"])
