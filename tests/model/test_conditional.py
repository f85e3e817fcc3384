"""model.conditional.TextVRNN: conditional likelihoods that are proper (the RNN's density integrates to one over a
grid), the IS estimate above the ELBO, text that matters, padding that does not, sampling that stops by Graves'
rule, priming, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from model import ModelConfig, load_checkpoint, save_checkpoint
from model.checkpoint import CheckpointError
from model.conditional import TextVRNN, load_text_checkpoint
from model.text import UnsupportedCharactersError

ALPHABET = " abcdeh"
KINDS = [(f, o) for f in ("rnn", "vrnn-i", "vrnn") for o in ("gauss", "gmm")]


def tiny(family: str = "vrnn", output: str = "gmm", seed: int = 0, dtype=torch.float64) -> TextVRNN:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        family=family,
        output=output,
        modality="handwriting",
        x_dim=3,
        z_dim=4,
        h_dim=16,
        mlp_layers=1,
        mlp_width=8,
        n_components=3,
        alphabet=ALPHABET,
        window_components=3,
    )
    return TextVRNN(cfg).to(dtype)


def strokes(B: int, T: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 3, generator=g, dtype=dtype)
    x[..., 2] = (torch.rand(B, T, generator=g) < 0.2).to(dtype)
    return x


@pytest.mark.parametrize(("family", "output"), KINDS)
def test_every_kind_trains(family, output):
    m = tiny(family, output)
    out = m(strokes(2, 7), ["abc", "head"], generator=torch.Generator().manual_seed(0))
    assert out.elbo.shape == (2,) and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["window.params.weight"].abs().sum() > 0  # the text reaches the loss through the window
    if family == "rnn":
        assert torch.all(out.kl == 0)
    else:
        assert torch.all(out.kl >= 0) and out.kl.sum() > 0


def test_the_text_changes_the_likelihood():
    m = tiny("rnn", "gmm")
    with torch.no_grad():
        for p in m.window.parameters():  # a window that moves visibly along a short line
            p.normal_(0, 0.5)
    x = strokes(1, 6)
    a, b = m.log_likelihood(x, ["abc"]), m.log_likelihood(x, ["hed"])
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("output", ["gauss", "gmm"])
def test_the_rnn_density_integrates_to_one(output):
    """p(x_1 | text) of the RNN: a bivariate density over (dx, dy) times a pen bit; summed over a grid and
    both pen values it is 1."""
    m = tiny("rnn", output, seed=3)
    step = 0.05
    grid = torch.arange(-7, 7, step, dtype=torch.float64) + step / 2
    dx, dy = torch.meshgrid(grid, grid, indexing="ij")
    total = 0.0
    for pen in (0.0, 1.0):
        x = torch.stack([dx.flatten(), dy.flatten(), torch.full_like(dx.flatten(), pen)], -1).unsqueeze(1)
        with torch.no_grad():
            ll = m.log_likelihood(x, ["abc"] * len(x))
        total += float(torch.exp(ll).sum()) * step * step
    assert total == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("family", ["vrnn-i", "vrnn"])
def test_is_estimate_is_above_its_elbo_and_matches_the_elbo_at_k1(family):
    m = tiny(family, "gmm", seed=1)
    x, texts = strokes(2, 5, seed=1), ["abc", "bad"]
    log_w = m.log_weights(x, texts, num_samples=40, generator=torch.Generator().manual_seed(0))
    assert torch.all(torch.logsumexp(log_w, 0) - math.log(40) >= log_w.mean(0))
    # K = 1: log p(x, z) - log q(z | x) has the ELBO's expectation (forward uses the analytic KL).
    k1 = m.log_weights(x, texts, num_samples=2000, generator=torch.Generator().manual_seed(1)).mean(0)
    with torch.no_grad():
        elbo = torch.stack([m(x, texts, generator=torch.Generator().manual_seed(s)).elbo for s in range(200)]).mean(0)
    torch.testing.assert_close(k1, elbo, atol=0.15, rtol=0)
    # The bound rises with K on average (over independent draws).
    mean_ll = [
        float(
            torch.stack(
                [m.log_likelihood(x, texts, None, k, torch.Generator().manual_seed(s)) for s in range(20)]
            ).mean()
        )
        for k in (1, 40)
    ]
    assert mean_ll[1] > mean_ll[0], mean_ll


def test_padding_changes_nothing():
    m = tiny("vrnn", "gmm", seed=2)
    x = strokes(2, 8, seed=2)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    x[1, 5:] = float("nan")
    batch = m.analyze(x, ["abc", "head"], mask)
    alone = m.analyze(x[1:, :5], ["head"])
    torch.testing.assert_close(batch.kl[1, :5], alone.kl[0])
    torch.testing.assert_close(batch.phi[1, :5, :4], alone.phi[0])
    assert torch.all(batch.kl[1, 5:] == 0) and torch.isfinite(batch.kl).all()
    rnn = tiny("rnn", "gmm")
    torch.testing.assert_close(rnn(x, ["abc", "head"], mask).elbo[1], rnn(x[1:, :5], ["head"]).elbo[0])


def test_sampling_stops_by_the_rule_and_is_reproducible():
    m = tiny("vrnn", "gmm", seed=4)
    with torch.no_grad():
        m.window.params.weight.zero_()
        m.window.params.bias[6:] = math.log(0.5)  # half a character a step: "abc" is passed after ~8 steps
    out = m.sample(["abc", "a"], generator=torch.Generator().manual_seed(0))
    assert out.finished == [True, True]
    assert 5 <= len(out.offsets[0]) <= 10 and len(out.offsets[1]) < len(out.offsets[0])
    assert out.phi[0].shape == (len(out.offsets[0]), 3) and out.phi[1].shape == (len(out.offsets[1]), 1)
    again = m.sample(["abc", "a"], generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(out.offsets, again.offsets, strict=True))
    capped = m.sample(["abc"], max_steps=3, generator=torch.Generator().manual_seed(0))
    assert capped.finished == [False] and len(capped.offsets[0]) == 3
    for mode in ("mean", "component-mean"):
        assert torch.isfinite(m.sample(["abc"], mean=mode, generator=torch.Generator().manual_seed(0)).offsets[0]).all()


def test_priming_reads_the_style_line_first():
    m = tiny("vrnn", "gmm", seed=5)
    with torch.no_grad():
        m.window.params.weight.zero_()
        m.window.params.bias[6:] = math.log(0.5)
    prime = strokes(1, 9, seed=5)[0]
    primed = m.sample(["cab"], prime=(prime, "head"), generator=torch.Generator().manual_seed(0))
    plain = m.sample(["cab"], generator=torch.Generator().manual_seed(0))
    assert primed.phi[0].shape[1] == 3  # attention over the new text's characters only
    assert not torch.equal(primed.offsets[0][: len(plain.offsets[0])], plain.offsets[0][: len(primed.offsets[0])])


def test_unsupported_characters_are_named():
    m = tiny()
    with pytest.raises(UnsupportedCharactersError) as e:
        m.sample(["fix zebra"])
    assert e.value.characters == ["f", "i", "x", "z", "r"]
    with pytest.raises(ValueError, match="one text per sequence"):
        m(strokes(2, 3), ["abc"])


def test_checkpoint_round_trip(tmp_path):
    m = tiny("vrnn", "gmm", dtype=torch.float32)
    path = save_checkpoint(m, tmp_path / "text.safetensors")
    with pytest.raises(CheckpointError, match="load_text_checkpoint"):
        load_checkpoint(path)
    loaded, meta = load_text_checkpoint(path)
    assert isinstance(loaded, TextVRNN) and meta["config"]["alphabet"] == ALPHABET
    assert loaded.config.name == "Text-VRNN-GMM"
    x = strokes(1, 5, dtype=torch.float32)
    g = torch.Generator
    torch.testing.assert_close(
        loaded.log_likelihood(x, ["abc"], num_samples=4, generator=g().manual_seed(0)),
        m.log_likelihood(x, ["abc"], num_samples=4, generator=g().manual_seed(0)),
        rtol=0,
        atol=0,
    )


def test_unconditional_configs_read_and_write_as_before():
    cfg = ModelConfig(modality="handwriting", x_dim=3)
    assert "alphabet" not in cfg.to_dict() and not cfg.takes_text
    with pytest.raises(ValueError, match="handwriting models only"):
        ModelConfig(alphabet="ab")


@pytest.mark.parametrize(("family", "output"), KINDS)
def test_the_hoisted_pass_equals_the_step_by_step_recurrence(family, output):
    """forward (phi_x, prior, decoder and log p(x_t | .) over all steps at once) against `_step`, the one-step
    computation the sampler uses, on the same noise."""
    m = tiny(family, output, seed=7)
    x, texts = strokes(2, 6, seed=7), ["abc", "deed"]
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    got = m(x, texts, mask, generator=torch.Generator().manual_seed(3))
    chars, char_mask = m.encode_texts(texts)
    xp, mp = m._prepare(x, mask, 2)
    state, g = m._start(2), torch.Generator().manual_seed(3)
    nll, kl = [], []
    with torch.no_grad():
        for t in range(6):
            out, state, _ = m._step(xp[:, t], state, chars, char_mask, m._noise(g, 2))
            nll.append(torch.where(mp[:, t], -out["log_px"], torch.zeros(())))
            kl.append(
                torch.where(mp[:, t], m._kl(out).sum(-1), torch.zeros(()))
                if out["mu_q"] is not None
                else torch.zeros(2, dtype=torch.float64)
            )
    torch.testing.assert_close(got.nll.detach(), torch.stack(nll, 1))
    torch.testing.assert_close(got.kl.detach(), torch.stack(kl, 1))


@pytest.mark.parametrize(("family", "output"), KINDS)
def test_the_hoisted_pass_has_the_step_by_step_gradients(family, output):
    """The loop's products batch their weight gradients after the loop (networks.LoopProduct): every parameter's
    gradient equals plain autograd through `_step` on the same noise."""
    m = tiny(family, output, seed=5)
    x, texts = strokes(2, 6, seed=5), ["abc", "deed"]
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 5:] = False
    m(x, texts, mask, generator=torch.Generator().manual_seed(4)).loss.backward()
    hoisted = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    chars, char_mask = m.encode_texts(texts)
    xp, mp = m._prepare(x, mask, 2)
    state, g, elbo = m._start(2), torch.Generator().manual_seed(4), torch.zeros(2, dtype=torch.float64)
    for t in range(6):
        out, state, _ = m._step(xp[:, t], state, chars, char_mask, m._noise(g, 2))
        kl = m._kl(out).sum(-1) if out["mu_q"] is not None else 0.0
        elbo = elbo + torch.where(mp[:, t], out["log_px"] - kl, torch.zeros(()))
    (-elbo.mean()).backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(hoisted[n], p.grad, msg=n)


def test_a_primed_line_starts_at_its_own_text_without_the_primed_strokes_tail():
    """The points a primed model writes before it lifts the pen and moves to the new text (the window still on the
    primed characters) are the primed line's tail, a stray mark before the first letter: dropped."""
    from model.conditional import _new_text_start

    offsets = torch.zeros(8, 3)
    offsets[2, 2] = 1.0  # the tail's stroke ends at step 2; step 3 starts the new text's first stroke
    phi = torch.zeros(8, 6)
    phi[:4, 1] = 1.0  # on the primed characters (0-2: "ab ") until step 3
    phi[4:, 4] = 1.0  # on the new text (from index 3) from step 4
    assert _new_text_start(offsets, phi, start=3) == 3
    assert _new_text_start(offsets, phi, start=0) == 0  # unprimed: nothing dropped
    no_lift = offsets.clone()
    no_lift[:, 2] = 0.0
    assert _new_text_start(no_lift, phi, start=3) == 0  # no pen lift before the new text: nothing dropped
    assert _new_text_start(offsets, torch.zeros(8, 6).index_fill(1, torch.tensor([1]), 1.0), start=3) == 0
