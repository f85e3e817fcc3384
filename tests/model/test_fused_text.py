"""model.fused's FusedTextSampler: the whole step of a text-conditioned model (Graves' window, prior, decoder, draw,
LSTM) in one native call.

Each step is checked against a reference written here with the model's own modules (`GravesWindow`, the prior, the
decoder, the LSTM) and PyTorch's arithmetic, from the same random numbers: the frame, the state, the window's centres,
its weights and the stopping rule, to float32 rounding, for every family and output, with lines of different
lengths side by side; then the properties the service relies on: a line is bit for bit the same alone or beside
others (each with its own generator), a seed repeats, a primed line and the cap behave as `TextVRNN.sample` says."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import torch
from modelkit import make_x, perturb, reference_draw

from model import ModelConfig, native
from model.conditional import TextVRNN, load_text_checkpoint
from model.distributions import RowGenerators
from model.fused import FusedSampler, FusedTextSampler, row_addresses, supports_text
from model.text import encode

ROOT = Path(__file__).resolve().parents[2]
MODES = ["sample", "component-mean", "mean"]
KINDS = [(f, o) for f in ("rnn", "vrnn-i", "vrnn") for o in ("gauss", "gmm")]
ALPHABET = " abcdeh"

needs_native = pytest.mark.skipif(native.library() is None, reason=f"native products unavailable: {native.status()}")


def text_model(kind, layers=2, seed=2, scale=0.3):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        family=kind[0], output=kind[1], modality="handwriting", x_dim=3, z_dim=4, h_dim=16, mlp_layers=layers,
        mlp_width=8, n_components=3, alphabet=ALPHABET, window_components=3,
    )  # fmt: skip
    return perturb(TextVRNN(cfg).eval(), scale), cfg


def reference_step(model, state, chars, char_mask, normals, uniforms, settings):
    """One step of every row in PyTorch with the kernel's random numbers -> (frames written, h', c', the window)."""
    h, c, kappa = state
    cfg = model.config
    win = model.window(h, kappa, chars, char_mask)
    pz, nx = None, normals
    if model.phi_z is not None:
        nz, nx = normals[:, : cfg.z_dim], normals[:, cfg.z_dim :]
        mu, std = model._prior(h, win.w)
        pz = model.phi_z(nz if model.prior is None else mu + std * nz)
        params = model.decoder(pz, h, win.w)
    else:
        params = model.decoder(h, win.w)
    fed, written = [], []
    for r, (mode, temperature, bias) in enumerate(settings):
        row = type(params)(*(None if f is None else f[r : r + 1] for f in params))
        f, w = reference_draw(model, row, nx[r : r + 1], uniforms[r : r + 1], mode, temperature, bias)
        fed.append(f), written.append(w)
    px = model.phi_x(torch.cat(fed))
    rnn_in = torch.cat([px, win.w] if pz is None else [px, pz, win.w], -1)
    h2, c2 = model.rnn(rnn_in, (h, c))
    return torch.cat(written), h2, c2, win


def kernel_step(sampler, state, codes, normals, uniforms, settings, done):
    """The kernel's step of every row (state updated in place) -> (frames, phi per row, ended flags)."""
    b = state[0].shape[0]
    held = [cd.to(torch.int32).contiguous() for cd in codes]
    out = torch.empty(b, 1, 3)
    phis = [torch.full((1, len(cd)), -1.0) for cd in held]
    ended = (ctypes.c_int * b)(*([-1] * b))
    ran = sampler.call_text(
        state, 1, [cd.data_ptr() for cd in held], (ctypes.c_int * b)(*(len(cd) for cd in held)), done, ended,
        row_addresses(normals), row_addresses(uniforms), row_addresses(out), [p.data_ptr() for p in phis],
        sampler.arrays([FusedSampler.settings(*s) for s in settings]),
    )  # fmt: skip
    return out[:, 0], [p[0] for p in phis], ran, list(ended)


def check_steps(model, texts, settings, steps, seed=1, state=None, tol=1e-5):
    sampler = FusedTextSampler(model)
    codes = [encode(t, model.config.alphabet) for t in texts]
    chars, char_mask = model.encode_texts(texts)
    b = len(texts)
    g = torch.Generator().manual_seed(seed)
    if state is None:
        h, c = torch.randn(b, model.config.h_dim, generator=g), torch.randn(b, model.config.h_dim, generator=g)
        state = (h, c, torch.rand(b, sampler.components, generator=g) * 2)
    ref_state = tuple(t.clone() for t in state)
    done = (ctypes.c_int * b)()
    finished_any = False
    with torch.no_grad():
        for _ in range(steps):
            normals, uniforms = sampler.randoms(g, b, 1)
            want, h2, c2, win = reference_step(
                model, ref_state, chars, char_mask, normals[:, 0], uniforms[:, 0], settings
            )
            before, h_before = list(done), state[0].clone()
            got, phis, ran, ended = kernel_step(sampler, state, codes, normals, uniforms, settings, done)
            assert ran == 1
            torch.testing.assert_close(got, want, rtol=1e-4, atol=tol)
            torch.testing.assert_close(state[2], win.kappa, rtol=1e-5, atol=1e-5)
            for r, cd in enumerate(codes):
                torch.testing.assert_close(phis[r], win.phi[r, : len(cd)], rtol=1e-4, atol=1e-6)
                # Graves' rule, unless the two numbers are within rounding of each other
                if abs(float(win.phi_end[r]) - float(win.phi[r].max())) > 1e-5:
                    assert bool(done[r]) == (before[r] or bool(win.finished[r]))
                if done[r] and not before[r]:
                    assert ended[r] == 0
                    finished_any = True
            if all(done):  # every row done: the kernel stops before the LSTM, as the sampler does
                assert torch.equal(state[0], h_before)
                break
            torch.testing.assert_close(state[0], h2, rtol=1e-4, atol=tol)
            torch.testing.assert_close(state[1], c2, rtol=1e-4, atol=tol)
            ref_state = tuple(t.clone() for t in state)  # (follow the kernel's state: rounding must not add up)
    return finished_any


@needs_native
@pytest.mark.parametrize("kind", KINDS, ids="-".join)
@pytest.mark.parametrize("mode", MODES)
def test_each_step_is_the_modules_step_with_the_same_numbers(kind, mode):
    model, _ = text_model(kind)
    texts = ["abc", "head", "e", "cab bad"]
    settings = [(mode, 0.8, 0.5), (mode, 1.0, 0.0), (mode, 1.3, 2.0), (mode, 1.0, 1.0)]
    check_steps(model, texts, settings, steps=25)


@needs_native
@pytest.mark.parametrize("layers", [1, 4])
def test_deeper_and_shallower_networks(layers):
    model, _ = text_model(("vrnn", "gmm"), layers=layers, seed=3)
    check_steps(model, ["bead", "a"], [("sample", 1.0, 0.0)] * 2, steps=15)


@needs_native
def test_the_stopping_rule_fires_as_the_windows():
    """A window whose centres move fast passes every line's end within a few steps: the kernel's `done` and `ended`
    follow Graves' rule step by step (checked inside), and a call whose rows are all done stops there."""
    model, _ = text_model(("vrnn", "gmm"), seed=5)
    with torch.no_grad():
        model.window.params.bias[2 * model.window.components :] = 0.0  # exp(k_hat) about 1 character a step
    assert check_steps(model, ["ab", "abcde", "a"], [("sample", 1.0, 0.0)] * 3, steps=12)


@needs_native
def test_a_shipped_text_models_steps_are_the_modules_steps():
    model, _ = load_text_checkpoint(ROOT / "checkpoints" / "handwriting-text-vrnn-gmm.safetensors")
    h = torch.zeros(2, model.config.h_dim)
    state = (h, h.clone(), torch.zeros(2, model.window.components))
    check_steps(model, ["hello world", "The end."], [("sample", 1.0, 2.0)] * 2, steps=40, state=state, tol=1e-4)


@needs_native
@pytest.mark.parametrize("kind", KINDS, ids="-".join)
def test_a_line_is_the_same_alone_or_beside_others_and_a_seed_repeats(kind):
    model, _ = text_model(kind, seed=6)
    fused = FusedTextSampler(model)
    texts = ["abc", "head bed", "e"]
    codes = [encode(t, ALPHABET) for t in texts]

    def zero(b):
        h = torch.zeros(b, model.config.h_dim)
        return h, h.clone(), torch.zeros(b, fused.components)

    seeds = [3, 4, 5]
    together = fused.lines(
        zero(3), codes, 150, RowGenerators([torch.Generator().manual_seed(s) for s in seeds]), "sample", 0.9, 0.5
    )
    for r, s in enumerate(seeds):
        alone = fused.lines(zero(1), codes[r : r + 1], 150, torch.Generator().manual_seed(s), "sample", 0.9, 0.5)
        xs, phis, ended, done = alone
        assert ended[0] == together[2][r] and done[0] == together[3][r]
        assert torch.equal(xs[0, : ended[0]], together[0][r, : ended[0]])
        assert torch.equal(phis[0][: ended[0]], together[1][r][: ended[0]])
    again = fused.lines(zero(1), codes[:1], 150, torch.Generator().manual_seed(3), "sample", 0.9, 0.5)
    assert torch.equal(again[0], fused.lines(zero(1), codes[:1], 150, torch.Generator().manual_seed(3), "sample", 0.9,
                                             0.5)[0])  # fmt: skip


@needs_native
def test_sample_takes_the_fused_step_and_keeps_its_contract():
    """TextVRNN.sample uses the kernel where it runs: the same seed the same lines, a primed line starts after its
    prime's tail, max_steps caps a line (finished False), and the lines are those of the kernel's `lines`."""
    model, _ = text_model(("vrnn", "gmm"), seed=7)
    assert supports_text(model)
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    a = model.sample(["abc", "head"], max_steps=60, generator=g())
    b = model.sample(["abc", "head"], max_steps=60, generator=g())
    assert all(torch.equal(x, y) for x, y in zip(a.offsets + a.phi, b.offsets + b.phi, strict=True))
    for off, phi, text in zip(a.offsets, a.phi, ["abc", "head"], strict=True):
        assert off.shape[1] == 3 and phi.shape == (len(off), len(text))
    capped = model.sample(["abc"], max_steps=3, generator=g())
    assert len(capped.offsets[0]) <= 3
    h = torch.zeros(2, model.config.h_dim)
    xs, _, ended, done = FusedTextSampler(model).lines(
        (h, h.clone(), torch.zeros(2, 3)), [encode(t, ALPHABET) for t in ["abc", "head"]], 60, g(), "sample", 1.0, 0.0
    )
    assert [len(o) for o in a.offsets] == ended and a.finished == done
    assert all(torch.equal(a.offsets[r], xs[r, : ended[r]]) for r in range(2))
    prime = make_x(model.config, 1, 6, seed=4)[0]
    primed = model.sample(["cab"], prime=(prime, "bed"), max_steps=80, generator=g())
    assert primed.phi[0].shape[1] == 3 and len(primed.offsets[0]) == len(primed.phi[0])
    # the stepper (fused=False) writes other lines from the same seed: another use of the stream
    stepped = model.sample(["abc", "head"], max_steps=60, generator=g(), fused=False)
    assert not all(torch.equal(x, y) for x, y in zip(a.offsets, stepped.offsets, strict=False))


@needs_native
def test_the_kernel_refuses_bad_characters_and_state():
    model, _ = text_model(("vrnn", "gmm"))
    fused = FusedTextSampler(model)
    h = torch.zeros(1, model.config.h_dim)
    with pytest.raises(ValueError, match="character indices"):
        fused.lines((h, h.clone(), torch.zeros(1, 3)), [torch.tensor([0, 99])], 5, None, "sample", 1.0, 0.0)
    with pytest.raises(ValueError, match="kappa"):
        fused.lines((h, h.clone(), torch.zeros(1, 2)), [torch.tensor([0])], 5, None, "sample", 1.0, 0.0)
    with pytest.raises(ValueError, match="at least one character"):
        fused.lines((h, h.clone(), torch.zeros(1, 3)), [torch.tensor([], dtype=torch.long)], 5, None, "sample", 1, 0)


def _solo(model, kw):
    kw = dict(kw)
    seed = kw.pop("seed")
    return model.sample(kw.pop("texts"), generator=torch.Generator().manual_seed(seed), **kw)


def _same(a, b):
    assert a.finished == b.finished
    assert len(a.offsets) == len(b.offsets)
    for x, y in zip(a.offsets + a.phi, b.offsets + b.phi, strict=True):
        assert torch.equal(x, y)


@needs_native
@pytest.mark.parametrize("kind", [("vrnn", "gmm"), ("rnn", "gauss"), ("vrnn-i", "gmm")], ids="-".join)
def test_the_engine_gives_every_request_its_solo_sample(kind):
    """Requests of one, two and three lines, with other settings, a prime and a cap, through an engine of at most 3
    rows (so they wait, join and leave at different steps): each gets bit for bit `TextVRNN.sample`'s lines."""
    from model.engine import TextEngine

    model, cfg = text_model(kind, seed=8)
    prime = make_x(cfg, 1, 6, seed=4)[0]
    requests = [
        dict(texts=["abc"], seed=1),
        dict(texts=["head", "bead cab"], seed=2, temperature=0.8, bias=0.5),
        dict(texts=["e"], seed=3, mean="component-mean"),
        dict(texts=["cab"], seed=4, prime=(prime, "bed")),
        dict(texts=["abcde"], seed=5, max_steps=7),
        dict(texts=["a", "b", "c"], seed=6, mean="mean"),
        dict(texts=["dead bead " * 2], seed=7, bias=1.0),
        dict(texts=["a", "bad", "cab", "e"], seed=8),  # more lines than the batch takes: it runs alone
    ]
    engine = TextEngine(model, max_batch=3)
    futures = [engine.submit(**kw) for kw in requests]
    engine.run_until_idle()
    for kw, f in zip(requests, futures, strict=True):
        _same(f.result(timeout=0), _solo(model, kw))
    assert max(engine.stats.batch_sizes) == 4 and engine.stats.requests == len(requests)
    assert max(n for n in engine.stats.batch_sizes if n != 4) == 3


@needs_native
def test_the_engine_thread_serves_concurrent_requests_and_refuses_bad_text():
    from model.engine import TextEngine
    from model.text import UnsupportedCharactersError

    model, _ = text_model(("vrnn", "gmm"), seed=9)
    engine = TextEngine(model, max_batch=4).start()
    try:
        kws = [dict(texts=[t], seed=s, max_steps=40) for s, t in enumerate(["abc", "bad", "head", "e e", "ace", "c"])]
        futures = []
        for kw in kws:
            futures.append(engine.submit(**kw))
        bad = engine.submit(["xyz"], seed=1)
        empty = engine.submit([""], seed=1)
        for kw, f in zip(kws, futures, strict=True):
            _same(f.result(timeout=30), _solo(model, kw))
        with pytest.raises(UnsupportedCharactersError):
            bad.result(timeout=30)
        with pytest.raises(ValueError, match="empty"):
            empty.result(timeout=30)
        # the engine goes on after a refusal
        _same(engine.submit(["bead"], seed=3).result(timeout=30), _solo(model, dict(texts=["bead"], seed=3)))
    finally:
        engine.stop(timeout=10)


@needs_native
@pytest.mark.parametrize("kind", KINDS, ids="-".join)
def test_reading_a_prime_is_the_posterior_pass_with_the_same_noise(kind):
    """`FusedTextSampler.prime` against `TextVRNN._step` (the modules' posterior step) given the same noise: the
    state (h, c and the window's centres) after a prime of 9 steps, two rows with their own characters."""
    model, cfg = text_model(kind, seed=10)
    fused = FusedTextSampler(model)
    texts = ["bed abc", "bed e"]
    codes = [encode(t, ALPHABET) for t in texts]
    chars, mask = model.encode_texts(texts)
    x0 = make_x(cfg, 1, 9, seed=3)[0].contiguous()
    eps = torch.randn(2, 9, cfg.z_dim, generator=torch.Generator().manual_seed(4)) if cfg.has_latent else None
    h = torch.zeros(2, cfg.h_dim)
    state = (h, h.clone(), torch.zeros(2, fused.components))
    ref = model._start(2)
    with torch.no_grad():
        for t in range(9):
            _, ref, _ = model._step(x0[t].expand(2, -1), ref, chars, mask, None if eps is None else eps[:, t])
        fused.prime(state, codes, x0, eps)
    for got, want in zip(state, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(state[0][0], state[0][1])  # (the rows' own characters steer their windows)
