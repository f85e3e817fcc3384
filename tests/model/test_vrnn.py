"""The model: objectives against the naive loop and finite differences, IS properties, masks,
sampling, latent analysis, parameter counts and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from modelkit import build, make_x, perturb, small_config

from model import ModelConfig, build_model
from model.reference import reference_forward


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lengths_mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------- the objective


def test_forward_matches_naive_loop_values_and_gradients(kind):
    """The hoisted loop computes the same ELBO terms and gradients as the per-step reference."""
    model, cfg = build(kind)
    model = perturb(model.double(), 0.2)
    x = make_x(cfg, 3, 7, dtype=torch.float64)
    mask = lengths_mask([7, 4, 1], 7)
    ours = model(x, mask, generator=gen(5))
    ours.loss.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = reference_forward(model, x, mask, generator=gen(5))
    ref.loss.backward()
    torch.testing.assert_close(ours.elbo, ref.elbo, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.kl, ref.kl, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.nll, ref.nll, rtol=1e-10, atol=1e-9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-8, atol=1e-9, msg=name)
    # The comparison is sensitive: other noise gives another ELBO.
    if cfg.has_latent:
        assert not torch.allclose(model(x, mask, generator=gen(6)).elbo, ours.elbo)


def test_gradients_match_finite_differences():
    """gradcheck through the loop's custom weight-gradient path (float64, tiny model)."""
    cfg = ModelConfig(family="vrnn", output="gmm", x_dim=2, z_dim=2, h_dim=3, mlp_layers=2, mlp_width=3, n_components=2)
    torch.manual_seed(0)
    model = perturb(build_model(cfg).double(), 0.3)
    x = make_x(cfg, 2, 3, dtype=torch.float64)
    names = ["rnn.weight_hh", "rnn.weight_ih", "encoder.hidden_to_params.weight", "phi_z.layers.1.weight"]
    params = dict(model.named_parameters())

    def elbo(*ws):
        override = {**params, **dict(zip(names, ws, strict=True))}
        out = torch.func.functional_call(model, override, (x,), {"generator": gen(3)})
        return out.elbo

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(elbo, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_every_kind_trains_with_finite_gradients(kind):
    model, cfg = build(kind)
    x = make_x(cfg, 4, 9)
    mask = lengths_mask([9, 5, 2, 9], 9)
    out = model(x, mask, generator=gen(3))  # fixed latent noise: the loss is a deterministic function of the weights
    assert out.elbo.shape == (4,) and out.kl.shape == (4, 9) and out.nll.shape == (4, 9)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, -out.elbo.mean())
    torch.testing.assert_close(out.elbo, -(out.kl + out.nll).sum(1))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # A small gradient step on the same batch improves the loss with the same noise (the exact likelihood for the
    # RNN, the reparameterised ELBO estimate for the latent kinds): the gradient points the right way, in every kind.
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.step()
    after = model(x, mask, generator=gen(3)).loss
    assert after < out.loss, (kind, float(out.loss), float(after))


def test_rnn_has_no_kl_and_exact_likelihood_is_its_elbo():
    model, cfg = build(("rnn", "gmm", "speech"))
    x = make_x(cfg, 3, 5)
    out = model(x)
    assert torch.count_nonzero(out.kl) == 0
    torch.testing.assert_close(model.log_likelihood(x), out.elbo)
    torch.testing.assert_close(model.log_likelihood(x, num_samples=3), out.elbo)  # K is irrelevant when exact


def test_vrnn_i_kl_is_against_standard_normal():
    """VRNN-I has no prior network; its KL is against N(0, I) (checked with torch.distributions)."""
    model, cfg = build(("vrnn-i", "gauss", "speech"))
    assert model.prior is None
    x = make_x(cfg, 2, 4)
    an = model.analyze(x)
    x_tm = x.transpose(0, 1)
    p = model._posterior_pass(x_tm, lambda t, rows: None)
    q = torch.distributions.Normal(p.mu_q, p.std_q)
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).t()
    torch.testing.assert_close(an.kl, expected)


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("family", ["rnn", "vrnn"])
def test_padding_changes_nothing(family):
    """A sequence scored alone and inside a padded batch (padding full of garbage, NaN included)
    gets the same ELBO, the same IS estimate and finite gradients."""
    model, cfg = build((family, "gmm", "handwriting"))
    x = make_x(cfg, 2, 5)
    padded = torch.cat([x, torch.full((2, 4, 3), float("nan"))], dim=1)
    padded[1, 6] = 1e6
    mask = lengths_mask([5, 5], 9)
    alone = model(x, generator=gen(1))
    inside = model(padded, mask, generator=gen(1))
    torch.testing.assert_close(inside.elbo, alone.elbo)
    torch.testing.assert_close(inside.kl[:, :5], alone.kl)
    assert torch.count_nonzero(inside.kl[:, 5:]) == 0 and torch.count_nonzero(inside.nll[:, 5:]) == 0
    inside.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(
        model.log_likelihood(padded, mask, num_samples=5, generator=gen(2)),
        model.log_likelihood(x, num_samples=5, generator=gen(2)),
    )


def test_shorter_rows_in_a_batch_score_like_alone():
    model, cfg = build(("rnn", "gauss", "speech"))
    x = make_x(cfg, 2, 6)
    both = model.log_likelihood(x, lengths_mask([6, 3], 6))
    torch.testing.assert_close(both[1], model.log_likelihood(x[1:, :3])[0])
    torch.testing.assert_close(both[0], model.log_likelihood(x[:1])[0])


# ---------------------------------------------------------------------------- importance sampling


def _trained_like(kind=("vrnn", "gauss", "speech")):
    """A model whose posterior differs from its prior, so the IS estimate and the ELBO differ."""
    model, cfg = build(kind, seed=1)
    return perturb(model, 0.3, seed=1).eval(), cfg


def test_is_with_one_sample_matches_the_elbo_in_expectation():
    model, cfg = _trained_like()
    x = make_x(cfg, 1, 6)
    with torch.no_grad():
        elbos = torch.stack([model(x, generator=gen(s)).elbo[0] for s in range(300)])
    is1 = torch.stack([model.log_likelihood(x, num_samples=1, generator=gen(1000 + s))[0] for s in range(300)])
    se = math.sqrt(elbos.var() / 300 + is1.var() / 300)
    assert abs(elbos.mean() - is1.mean()) < 4 * se
    assert elbos.var() < is1.var()  # the analytic KL removes part of the noise


def test_is_rises_with_k_and_stays_above_the_elbo():
    model, cfg = _trained_like()
    x = make_x(cfg, 4, 6, seed=3)
    with torch.no_grad():
        elbo = torch.stack([model(x, generator=gen(s)).elbo for s in range(40)]).mean(0)
    means = {
        k: torch.stack([model.log_likelihood(x, num_samples=k, generator=gen(100 * k + s)) for s in range(20)]).mean(0)
        for k in (1, 5, 40)
    }
    assert (means[40] > elbo).all()
    assert (means[40] > means[5]).all() and (means[5] > means[1]).all()
    # The bound is not loose by construction: the gap is a few nats at most here.
    assert ((means[40] - elbo) < 0.5 * elbo.abs()).all()


def test_is_batches_sequences_in_chunks_without_changing_results(monkeypatch):
    import model.defaults as defaults

    model, cfg = _trained_like(("vrnn-i", "gmm", "handwriting"))
    x = make_x(cfg, 5, 4)
    calls = []
    original = model._log_weights
    monkeypatch.setattr(model, "_log_weights", lambda x_tm, *a: calls.append(x_tm.shape[1]) or original(x_tm, *a))
    monkeypatch.setattr(defaults, "MAX_IS_BATCH", 16)  # K=8: two sequences per chunk
    chunked = model.log_likelihood(x, num_samples=8, generator=gen(0))
    assert calls == [2, 2, 1]
    assert torch.isfinite(chunked).all() and chunked.shape == (5,)
    # The first chunk draws the first noise: it matches scoring those two sequences alone.
    torch.testing.assert_close(chunked[:2], model.log_likelihood(x[:2], num_samples=8, generator=gen(0)))


def test_log_weights_give_the_is_estimate_and_an_elbo_below_it():
    model, cfg = _trained_like()
    x = make_x(cfg, 3, 5)
    log_w = model.log_weights(x, num_samples=12, generator=gen(4))
    assert log_w.shape == (12, 3)
    ll = model.log_likelihood(x, num_samples=12, generator=gen(4))
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(12))
    assert (log_w.mean(0) <= ll).all()  # Jensen, draw for draw
    with pytest.raises(ValueError, match="exact"):
        build(("rnn", "gauss", "speech"))[0].log_weights(make_x(small_config("rnn", "gauss", "speech"), 1, 2))


def test_is_is_reproducible_with_a_generator():
    model, cfg = _trained_like()
    x = make_x(cfg, 2, 5)
    a = model.log_likelihood(x, num_samples=10, generator=gen(7))
    b = model.log_likelihood(x, num_samples=10, generator=gen(7))
    c = model.log_likelihood(x, num_samples=10, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_num_samples_must_be_positive():
    model, cfg = build(("vrnn", "gauss", "speech"))
    with pytest.raises(ValueError, match="num_samples"):
        model.log_likelihood(make_x(cfg, 1, 2), num_samples=0)


# ---------------------------------------------------------------------------- sampling


def test_fixed_generator_reproduces_samples(kind):
    model, cfg = build(kind)
    a = model.sample(num_samples=3, steps=6, generator=gen(11))
    b = model.sample(num_samples=3, steps=6, generator=gen(11))
    c = model.sample(num_samples=3, steps=6, generator=gen(12))
    assert a.shape == (3, 6, cfg.x_dim)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
    if cfg.modality == "handwriting":
        assert set(a[..., 2].unique().tolist()) <= {0.0, 1.0}


def test_prime_is_continued():
    model, cfg = build(("vrnn", "gmm", "speech"))
    model = perturb(model, 0.3)
    p1, p2 = make_x(cfg, 1, 4, seed=1)[0], make_x(cfg, 1, 4, seed=2)[0]
    a = model.sample(2, 5, generator=gen(0), prime=p1)
    b = model.sample(2, 5, generator=gen(0), prime=p1.expand(2, -1, -1))
    c = model.sample(2, 5, generator=gen(0), prime=p2)
    assert a.shape == (2, 5, cfg.x_dim)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="prime"):
        model.sample(2, 5, prime=torch.zeros(3, 4, cfg.x_dim))


def test_temperature_and_bias_narrow_the_output():
    model, _cfg = build(("rnn", "gauss", "speech"))
    wide = model.sample(200, 3, temperature=1.0, generator=gen(0))
    narrow = model.sample(200, 3, temperature=0.1, generator=gen(0))
    biased = model.sample(200, 3, bias=2.0, generator=gen(0))
    assert narrow.std() < 0.2 * wide.std()
    assert biased.std() < 0.3 * wide.std()
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, 1, temperature=0.0)
    with pytest.raises(ValueError, match="bias"):
        model.sample(1, 1, bias=-1.0)


def test_mean_mode_is_deterministic_for_the_rnn():
    model, _cfg = build(("rnn", "gmm", "handwriting"))
    a = model.sample(2, 5, mean=True, generator=gen(0))
    b = model.sample(2, 5, mean=True, generator=gen(1))
    assert torch.equal(a, b)
    assert set(a[..., 2].unique().tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------- latent analysis


def test_analyze_reports_figure_2_quantities(latent_kind):
    model, cfg = build(latent_kind)
    model = perturb(model, 0.2)
    x = make_x(cfg, 2, 6)
    mask = lengths_mask([6, 4], 6)
    an = model.analyze(x, mask)
    assert an.kl.shape == (2, 6) and an.delta_mu.shape == (2, 6) and an.mu_z.shape == (2, 6, cfg.z_dim)
    torch.testing.assert_close(an.kl, an.kl_per_dim.sum(-1))
    expected_delta = ((an.mu_z[:, 1:] - an.mu_z[:, :-1]) ** 2).sum(-1)
    torch.testing.assert_close(an.delta_mu[0, 1:], expected_delta[0])
    torch.testing.assert_close(an.delta_mu[1, 1:4], expected_delta[1, :3])
    assert (an.delta_mu[:, 0] == 0).all() and (an.kl[1, 4:] == 0).all() and (an.delta_mu[1, 4:] == 0).all()
    assert (an.kl_per_dim >= 0).all()
    # With sampled z and the same noise, analyze's KL is forward's KL.
    sampled = model.analyze(x, mask, use_mean=False, generator=gen(4))
    torch.testing.assert_close(sampled.kl, model(x, mask, generator=gen(4)).kl)
    # The default (posterior means) is deterministic.
    torch.testing.assert_close(model.analyze(x, mask).mu_z, an.mu_z)


def test_analyze_refuses_the_rnn():
    model, cfg = build(("rnn", "gauss", "speech"))
    with pytest.raises(ValueError, match="no latent"):
        model.analyze(make_x(cfg, 1, 3))


# ---------------------------------------------------------------------------- structure


def _linear(i: int, o: int) -> int:
    return i * o + o


def _mlp(i: int, w: int, layers: int) -> int:
    return _linear(i, w) + (layers - 1) * _linear(w, w)


@pytest.mark.parametrize("kind", [("rnn", "gauss"), ("rnn", "gmm"), ("vrnn-i", "gauss"), ("vrnn", "gmm")])
def test_parameter_count_is_the_papers(kind):
    """Counted by hand from the paper's networks (Eqs. 5-9): phi_x, phi_z, prior, encoder,
    decoder with their heads, and the LSTM (4 gates, two bias vectors as in PyTorch)."""
    family, output = kind
    D, Z, H, W, L, K = 200, 16, 64, 32, 3, 20
    cfg = ModelConfig(
        family=family, output=output, x_dim=D, z_dim=Z, h_dim=H, mlp_width=W, mlp_layers=L, n_components=K
    )
    k = K if output == "gmm" else 1
    out_head = _linear(W, 2 * k * D + (k if k > 1 else 0))
    lstm_in = W if family == "rnn" else 2 * W
    expected = _mlp(D, W, L) + 4 * H * (lstm_in + H) + 2 * 4 * H
    if family == "rnn":
        expected += _mlp(H, W, L) + out_head
    else:
        expected += _mlp(Z, W, L)  # phi_z
        expected += _mlp(W + H, W, L) + _linear(W, 2 * Z)  # encoder
        expected += _mlp(W + H, W, L) + out_head  # decoder
        if family == "vrnn":
            expected += _mlp(H, W, L) + _linear(W, 2 * Z)  # prior
    assert sum(p.numel() for p in build_model(cfg).parameters()) == expected


def test_fresh_model_predicts_unit_scale():
    """Heads start near their biases: std ~ softplus(0.6) ~ 1 and a finite, data-sized loss."""
    model, cfg = build(("vrnn", "gauss", "speech"))
    x = make_x(cfg, 8, 5)
    nll_per_dim = model(x).nll.mean() / cfg.x_dim
    assert abs(nll_per_dim - 0.5 * math.log(2 * math.pi * math.e)) < 0.2  # N(0,1) data under ~N(0,1)


# ---------------------------------------------------------------------------- input checks


def test_config_is_validated():
    with pytest.raises(ValueError, match="family"):
        ModelConfig(family="lstm")
    with pytest.raises(ValueError, match="x_dim=3"):
        ModelConfig(modality="handwriting", x_dim=200)
    with pytest.raises(ValueError, match="z_dim"):
        ModelConfig(z_dim=0)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"family": "vrnn", "hidden": 3})
    cfg = small_config("vrnn", "gmm", "speech")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.name == "VRNN-GMM" and small_config("vrnn-i", "gauss", "speech").name == "VRNN-I-Gauss"


def test_bad_inputs_get_clear_errors():
    model, _cfg = build(("vrnn", "gauss", "speech"))
    with pytest.raises(ValueError, match=r"\(batch, time, 6\)"):
        model(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"\(batch, time, 6\)"):
        model(torch.zeros(3, 6))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(torch.zeros(2, 3, 6), mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="no time steps"):
        model(torch.zeros(2, 0, 6))
    with pytest.raises(ValueError, match="steps"):
        model.sample(1, 0)
