"""model.fused: the whole sampling step in one native call.

Each step is checked against an independent reference written here with the model's own modules and PyTorch's
arithmetic (the same normals and uniforms in, the same frame and state out, to float32 rounding), for every family,
output, modality and mode; the draw against its distribution (component frequencies against the softmax by a
chi-square test, the pen bit's rate, the offsets' moments and correlation); and for the property the service relies
on: a row's sample is bit for bit the same alone, in a batch of rows (`RowGenerators`) and in the engine, and the same
seed gives the same bytes. Where the library does not run (no compiler, another CPU), the samplers fall back to the
stepper, which tests/model/test_stepper.py checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from modelkit import ALL_KINDS, build, perturb, reference_draw, small_config
from scipy import stats

from model import fused, native
from model.checkpoint import load_checkpoint
from model.conditional import TextVRNN
from model.distributions import RowGenerators
from model.engine import SamplingEngine
from model.fused import CHUNK, FusedSampler, row_addresses
from model.stepper import Stepper

ROOT = Path(__file__).resolve().parents[2]
MODES = ["sample", "component-mean", "mean"]

needs_native = pytest.mark.skipif(native.library() is None, reason=f"native products unavailable: {native.status()}")


def reference_step(model, h, c, normals, uniforms, mode, temperature, bias):
    """One step of every row from (h, c) with the kernel's random numbers, in PyTorch: (frames written, h', c')."""
    cfg = model.config
    pz, nx = None, normals
    if model.phi_z is not None:
        nz, nx = normals[:, : cfg.z_dim], normals[:, cfg.z_dim :]
        if model.prior is not None:
            mu, std = model.prior(h)
            z = mu + std * nz
        else:
            z = nz
        pz = model.phi_z(z)
        params = model.decoder(pz, h)
    else:
        params = model.decoder(h)
    fed, written = reference_draw(model, params, nx, uniforms, mode, temperature, bias)
    px = model.phi_x(fed)
    h2, c2 = model.rnn(px if pz is None else torch.cat([px, pz], -1), (h, c))
    return written, h2, c2


def one_step(sampler, h, c, normals, uniforms, settings):
    """The kernel's step of every row (h, c updated in place): the frames (B, D)."""
    out = torch.empty(h.shape[0], 1, sampler.x_dim)
    sampler.call(h, c, 1, row_addresses(normals), row_addresses(uniforms), row_addresses(out), sampler.arrays(settings))
    return out[:, 0]


@needs_native
@pytest.mark.parametrize("kind", ALL_KINDS, ids="-".join)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers", [1, 2, 4])
def test_each_step_is_the_modules_step_with_the_same_numbers(kind, mode, layers):
    model, cfg = build(kind, seed=4, mlp_layers=layers)  # (4: the most the kernel takes)
    perturb(model.eval(), 0.4)
    sampler = FusedSampler(model)
    g = torch.Generator().manual_seed(1)
    rows = 5
    h = torch.randn(rows, cfg.h_dim, generator=g)
    c = torch.randn(rows, cfg.h_dim, generator=g)
    settings = [(mode, 0.8, 0.5), (mode, 1.0, 0.0), (mode, 1.3, 2.0), (mode, 0.5, 0.0), (mode, 1.0, 1.0)]
    with torch.no_grad():
        for _ in range(12):
            normals, uniforms = sampler.randoms(g, rows, 1)
            want, h_want, c_want = reference_step(model, h, c, normals[:, 0], uniforms[:, 0], mode, 1.0, 0.0)
            # (the reference takes one setting: run it per row for the others)
            for r, (_, t, b) in enumerate(settings):
                one = reference_step(model, h[r : r + 1], c[r : r + 1], normals[r : r + 1, 0],
                                     uniforms[r : r + 1, 0], mode, t, b)  # fmt: skip
                want[r], h_want[r], c_want[r] = one[0][0], one[1][0], one[2][0]
            got = one_step(sampler, h, c, normals, uniforms, [fused.FusedSampler.settings(*s) for s in settings])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(h, h_want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(c, c_want, rtol=1e-4, atol=1e-5)


@needs_native
@pytest.mark.parametrize("name", ["handwriting-vrnn-gmm", "speech-vrnn-gmm", "speech-rnn-gauss"])
def test_a_shipped_models_steps_are_the_modules_steps(name):
    model, _ = load_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors")
    model.eval()
    sampler = FusedSampler(model)
    g = torch.Generator().manual_seed(3)
    h, c = torch.zeros(3, model.config.h_dim), torch.zeros(3, model.config.h_dim)
    with torch.no_grad():
        for _ in range(15):
            normals, uniforms = sampler.randoms(g, 3, 1)
            want, h_want, c_want = reference_step(model, h, c, normals[:, 0], uniforms[:, 0], "sample", 1.0, 1.0)
            got = one_step(sampler, h, c, normals, uniforms, [FusedSampler.settings("sample", 1.0, 1.0)] * 3)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(h, h_want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(c, c_want, rtol=1e-4, atol=1e-5)


def _constant_head_model(kind, k=4):
    """A model whose output head ignores its input: every row's step draws from one known distribution."""
    model, cfg = build(kind, seed=0, n_components=k)
    head = model.decoder.head.hidden_to_params
    with torch.no_grad():
        head.weight.zero_()
        g = torch.Generator().manual_seed(7)
        head.bias.copy_(torch.randn(head.bias.shape, generator=g))
    return model.eval(), cfg


@needs_native
def test_the_draws_follow_their_distribution():
    """Component frequencies against softmax(logits * scale) (chi-square), the pen bit's rate against sigmoid, and
    each component's offsets' means, stds and correlation, over 20000 rows of one step."""
    model, cfg = _constant_head_model(("vrnn", "gmm", "handwriting"))
    sampler = FusedSampler(model)
    params = model.decoder.head.params(model.decoder.head.hidden_to_params.bias.detach()[None])
    rows, bias, temperature = 20000, 0.5, 0.9
    g = torch.Generator().manual_seed(11)
    normals, uniforms = sampler.randoms(g, rows, 1)
    h, c = torch.zeros(rows, cfg.h_dim), torch.zeros(rows, cfg.h_dim)
    draws = [FusedSampler.settings("sample", temperature, bias)] * rows
    component_means = [FusedSampler.settings("component-mean", temperature, bias)] * rows
    with torch.no_grad():
        drawn = one_step(sampler, h.clone(), c.clone(), normals, uniforms, draws)
        means = one_step(sampler, h, c, normals, uniforms, component_means)
    mu = params.mu[0]  # (K, 2)
    which = torch.cdist(means[:, :2], mu).argmin(1)
    probs = F.softmax(params.logits[0] * (1 + bias) / temperature, -1).double()
    counts = torch.bincount(which, minlength=len(probs)).double()
    assert stats.chisquare(counts.numpy(), (probs * rows).numpy()).pvalue > 1e-3
    p_pen = torch.sigmoid(params.pen_logit[0]).item()
    assert abs(drawn[:, 2].mean().item() - p_pen) < 4 * math.sqrt(p_pen * (1 - p_pen) / rows)
    assert set(drawn[:, 2].tolist()) <= {0.0, 1.0}
    factor = temperature * math.exp(-bias)
    for k in range(len(probs)):
        xy = drawn[which == k, :2].double()
        if len(xy) < 500:
            continue
        std = params.std[0, k].double() * factor
        z = (xy - mu[k].double()) / std
        n = len(xy)
        assert (z.mean(0).abs() < 4.5 / math.sqrt(n)).all()
        assert ((z.std(0) - 1).abs() < 6 / math.sqrt(n)).all()
        corr = torch.corrcoef(z.t())[0, 1].item()
        assert abs(corr - params.rho[0, k].item()) < 6 / math.sqrt(n)


@needs_native
def test_the_limits_of_the_settings():
    """A bias of 1e6 draws only the most likely component, with no spread; a temperature so small that the logits'
    scale overflows (inf) takes the limit of the scaled softmax (the largest logit; `distributions._scale_logits`),
    with no spread either; the mean mode gives the mixture's mean."""
    model, cfg = _constant_head_model(("vrnn", "gmm", "speech"))
    sampler = FusedSampler(model)
    params = model.decoder.head.params(model.decoder.head.hidden_to_params.bias.detach()[None])
    rows = 200
    normals, uniforms = sampler.randoms(torch.Generator().manual_seed(2), rows, 1)
    z = torch.zeros(rows, cfg.h_dim)
    sharpest, mean = (
        [FusedSampler.settings("sample", 1.0, 1e6)] * rows,
        [FusedSampler.settings("mean", 1.0, 0.0)] * rows,
    )
    with torch.no_grad():
        sharp = one_step(sampler, z.clone(), z.clone(), normals, uniforms, sharpest)
        mean = one_step(sampler, z.clone(), z.clone(), normals, uniforms, mean)
    top = int(params.logits[0].argmax())
    assert torch.equal(sharp, params.mu[0, top].expand(rows, -1))
    cold = [FusedSampler.settings("sample", 1e-40, 0.0)] * rows
    assert math.isinf(cold[0][2]) or math.isinf(float(torch.tensor(cold[0][2], dtype=torch.float32)))
    with torch.no_grad():
        frozen = one_step(sampler, z.clone(), z.clone(), normals, uniforms, cold)
    assert torch.equal(frozen, params.mu[0, top].expand(rows, -1))
    want = (F.softmax(params.logits[0], -1)[:, None] * params.mu[0]).sum(0)
    torch.testing.assert_close(mean, want.expand(rows, -1), rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("kind", ALL_KINDS, ids="-".join)
def test_a_row_is_its_solo_sample_in_any_batch_and_a_seed_repeats(kind):
    """Rows of a batch and of the engine (joining and leaving at different steps, of different lengths) against their
    solo samples; a shorter sample is the start of a longer one of the same seed (the random numbers come in whole
    chunks)."""
    model, _ = build(kind, seed=2)
    perturb(model.eval(), 0.3)
    steps = CHUNK + 9  # (two chunks of random numbers)
    with torch.inference_mode():
        solo = [model.sample(1, steps, generator=torch.Generator().manual_seed(s), bias=0.5) for s in range(5)]
        again = model.sample(1, steps, generator=torch.Generator().manual_seed(3), bias=0.5)
        rows = RowGenerators([torch.Generator().manual_seed(s) for s in range(5)])
        batch = model.sample(5, steps, generator=rows, bias=0.5)
        engine = SamplingEngine(model, max_batch=3)  # rows join and leave at different steps
        futures = [engine.submit(steps=steps - 7 * s, seed=s, bias=0.5) for s in range(5)]
        engine.run_until_idle()
    assert torch.equal(again, solo[3])
    for s in range(5):
        assert torch.equal(batch[s], solo[s][0]), s
        assert torch.equal(futures[s].result(), solo[s][0, : steps - 7 * s]), s
    assert not torch.equal(solo[0], solo[1])


@needs_native
def test_where_the_fused_step_is_used():
    model, _ = build(("vrnn", "gmm", "handwriting"))
    assert fused.supports(model) and model.samples_paired
    assert SamplingEngine(model).fused is not None
    assert not fused.supports(model.double())  # float64: the stepper
    text = TextVRNN(small_config("vrnn", "gmm", "handwriting", alphabet=" abc", window_components=2))
    assert not fused.supports(text)
    with pytest.raises(ValueError, match="fused"):
        FusedSampler(text)


@needs_native
def test_a_nan_parameter_gives_a_nan_frame_not_a_plausible_one():
    """NaN logits or a NaN pen logit (a broken checkpoint, an overflow) make the row's frame NaN, which the service's
    check of its output rejects, instead of a finite draw from the other components."""
    for kind, column in [(("vrnn", "gmm", "handwriting"), -1), (("vrnn", "gauss", "handwriting"), 5),
                         (("rnn", "gmm", "speech"), -1)]:  # fmt: skip
        model, cfg = _constant_head_model(kind)
        with torch.no_grad():
            model.decoder.head.hidden_to_params.bias[column] = float("nan")
        sampler = FusedSampler(model)
        normals, uniforms = sampler.randoms(torch.Generator().manual_seed(0), 3, 1)
        z = torch.zeros(3, cfg.h_dim)
        with torch.no_grad():
            frame = one_step(
                sampler, z.clone(), z.clone(), normals, uniforms, [FusedSampler.settings("sample", 1, 0)] * 3
            )
        assert torch.isnan(frame).any(dim=1).all(), kind


@needs_native
def test_the_state_is_checked_before_the_kernel_reads_it():
    model, cfg = build(("vrnn", "gauss", "speech"))
    sampler = FusedSampler(model.eval())
    h = torch.zeros(2, cfg.h_dim)
    for bad_h, bad_c, match in [
        (h, h, "two tensors"),
        (h, torch.zeros(3, cfg.h_dim), "two tensors"),
        (torch.zeros(2, cfg.h_dim + 1), torch.zeros(2, cfg.h_dim + 1), "need"),
        (h.double(), h.double(), "need"),
        (torch.zeros(cfg.h_dim, 2).t(), torch.zeros(2, cfg.h_dim), "contiguous"),
    ]:
        with pytest.raises(ValueError, match=match):
            sampler.sample(bad_h, bad_c, 3, None, "sample", 1.0, 0.0)


def test_without_the_library_sampling_takes_the_stepper(monkeypatch):
    monkeypatch.setenv("VRNN_NATIVE", "0")
    native.reset()
    try:
        model, _ = build(("vrnn", "gmm", "handwriting"))
        assert not fused.supports(model)
        assert SamplingEngine(model).fused is None
        calls = []
        original = Stepper.emit
        monkeypatch.setattr(Stepper, "emit", lambda self, *a: calls.append(1) or original(self, *a))
        with torch.inference_mode():
            a = model.sample(1, 5, generator=torch.Generator().manual_seed(0))
        assert len(calls) == 5 and a.shape == (1, 5, 3)
    finally:
        monkeypatch.delenv("VRNN_NATIVE")
        native.reset()
