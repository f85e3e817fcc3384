"""model.distributions against independent references (torch.distributions, scipy.stats).

Every comparison also shows it can fail: a deliberately wrong parameter (a flipped correlation, a
dropped term, a wrong scale) must give a value the check rejects, so a pass is not vacuous.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from model.distributions import (
    BivariateMixture,
    DiagonalMixture,
    bivariate_log_prob,
    bivariate_mixture_log_prob,
    bivariate_mixture_mean,
    diagonal_mixture_log_prob,
    diagonal_mixture_mean,
    gaussian_kl,
    gaussian_log_prob,
    sample_bivariate_mixture,
    sample_diagonal_mixture,
    sharpen,
    standard_normal_kl,
)

F64 = torch.float64
ATOL = 1e-10
RTOL = 1e-10


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(shape: tuple[int, ...], g: torch.Generator, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(shape, generator=g, dtype=F64)


def _std(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Positive stds spread over two orders of magnitude (0.05 .. 5)."""
    return torch.exp(torch.empty(shape, dtype=F64).uniform_(math.log(0.05), math.log(5.0), generator=g))


def _assert_matches(got: Tensor, expected: Tensor, wrong: Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    """got == expected, and the same tolerance tells got apart from a deliberately wrong value."""
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    assert not torch.allclose(got, wrong, rtol=rtol, atol=atol), "the check cannot tell a wrong value apart"


def _covariance(std: Tensor, rho: Tensor) -> Tensor:
    """(.., 2) stds and (..,) correlation -> (.., 2, 2) covariance."""
    s1, s2 = std[..., 0], std[..., 1]
    off = rho * s1 * s2
    return torch.stack([torch.stack([s1**2, off], -1), torch.stack([off, s2**2], -1)], -2)


# ---------------------------------------------------------------------------------------- Gaussians


def test_gaussian_log_prob_matches_torch_normal():
    g = _rng(0)
    shape = (64, 5)
    x, mu, std = _normal(shape, g, 3.0), _normal(shape, g, 2.0), _std(shape, g)
    got = gaussian_log_prob(x, mu, std)
    assert got.shape == shape and got.dtype == F64
    _assert_matches(got, Normal(mu, std).log_prob(x), wrong=Normal(mu, 1.01 * std).log_prob(x))


def test_gaussian_log_prob_broadcasts():
    g = _rng(1)
    x, mu, std = _normal((7, 1, 3), g), _normal((1, 4, 3), g), _std((4, 3), g)
    got = gaussian_log_prob(x, mu, std)
    assert got.shape == (7, 4, 3)
    torch.testing.assert_close(got, Normal(mu, std).log_prob(x), rtol=RTOL, atol=ATOL)


def test_gaussian_kl_matches_torch_kl_divergence():
    g = _rng(2)
    shape = (64, 6)
    mu_q, std_q, mu_p, std_p = _normal(shape, g, 2.0), _std(shape, g), _normal(shape, g, 2.0), _std(shape, g)
    got = gaussian_kl(mu_q, std_q, mu_p, std_p)
    expected = kl_divergence(Normal(mu_q, std_q), Normal(mu_p, std_p))
    # KL is not symmetric: the reversed divergence is a wrong answer the check must reject.
    _assert_matches(got, expected, wrong=kl_divergence(Normal(mu_p, std_p), Normal(mu_q, std_q)))
    assert (got >= 0).all()
    # KL(q || q) = 0 exactly.
    torch.testing.assert_close(gaussian_kl(mu_q, std_q, mu_q, std_q), torch.zeros(shape, dtype=F64))


def test_standard_normal_kl_matches_torch_kl_divergence():
    g = _rng(3)
    shape = (64, 6)
    mu_q, std_q = _normal(shape, g, 2.0), _std(shape, g)
    got = standard_normal_kl(mu_q, std_q)
    zero, one = torch.zeros(shape, dtype=F64), torch.ones(shape, dtype=F64)
    expected = kl_divergence(Normal(mu_q, std_q), Normal(zero, one))
    _assert_matches(got, expected, wrong=kl_divergence(Normal(zero, one), Normal(mu_q, std_q)))
    # It is the general KL with p = N(0, 1).
    torch.testing.assert_close(got, gaussian_kl(mu_q, std_q, zero, one), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------- diagonal mixtures


def _diagonal_mixture(n: int, k: int, d: int, seed: int, with_logits: bool = True) -> DiagonalMixture:
    g = _rng(seed)
    logits = _normal((n, k), g, 2.0) if with_logits else None
    return DiagonalMixture(logits, _normal((n, k, d), g, 2.0), _std((n, k, d), g))


@pytest.mark.parametrize("k,d", [(4, 3), (2, 1), (20, 5)])
def test_diagonal_mixture_log_prob_matches_mixture_same_family(k, d):
    n = 50
    p = _diagonal_mixture(n, k, d, seed=10 + k)
    g = _rng(20 + k)
    # Half the points near a component mean, half far away (tests the log-space mixing).
    x = torch.where(torch.arange(n)[:, None] % 2 == 0, p.mu[:, 0], 0.0) + _normal((n, d), g, 1.5)
    got = diagonal_mixture_log_prob(x, p)
    assert got.shape == (n,)
    assert p.logits is not None

    def reference(logits: Tensor) -> Tensor:
        components = Independent(Normal(p.mu, p.std), 1)
        return MixtureSameFamily(Categorical(logits=logits), components).log_prob(x)

    # Wrong: the mixture weights reversed over components.
    _assert_matches(got, reference(p.logits), wrong=reference(p.logits.flip(-1)))


def test_diagonal_mixture_log_prob_single_component_without_logits():
    n, d = 40, 4
    p = _diagonal_mixture(n, 1, d, seed=30, with_logits=False)
    x = _normal((n, d), _rng(31), 3.0)
    got = diagonal_mixture_log_prob(x, p)
    expected = Independent(Normal(p.mu[:, 0], p.std[:, 0]), 1).log_prob(x)
    wrong = Independent(Normal(p.mu[:, 0], p.std[:, 0].flip(-1)), 1).log_prob(x)
    _assert_matches(got, expected, wrong=wrong)
    # K = 1 with any logits is the same density: a one-component softmax is 1.
    torch.testing.assert_close(diagonal_mixture_log_prob(x, p._replace(logits=torch.randn(n, 1, dtype=F64))), got)


def test_diagonal_mixture_log_prob_is_stable_far_from_every_component():
    """Log space: a point 50 stds away still gets a finite log-density (a naive sum of exps underflows)."""
    mu = torch.tensor([[[0.0], [1.0]]], dtype=F64)
    std = torch.full_like(mu, 0.1)
    p = DiagonalMixture(torch.tensor([[0.3, -0.2]], dtype=F64), mu, std)
    x = torch.tensor([[-5.0]], dtype=F64)
    got = diagonal_mixture_log_prob(x, p)
    expected = MixtureSameFamily(Categorical(logits=p.logits), Independent(Normal(mu, std), 1)).log_prob(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)


# ------------------------------------------------------------------------------ bivariate Gaussian


def _bivariate_params(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """xy, mu, std (n, 2) and rho (n,), rho covering (-0.99, 0.99) including both ends and 0."""
    g = _rng(seed)
    mu, std = _normal((n, 2), g, 2.0), _std((n, 2), g)
    rho = torch.empty(n, dtype=F64).uniform_(-0.99, 0.99, generator=g)
    rho[:4] = torch.tensor([-0.99, 0.99, 0.0, -0.5], dtype=F64)
    # Points within a few stds, off the axes so that rho's sign matters.
    xy = mu + std * (_normal((n, 2), g) + 0.5)
    return xy, mu, std, rho


def test_bivariate_log_prob_matches_scipy_multivariate_normal():
    n = 60
    xy, mu, std, rho = _bivariate_params(n, seed=40)
    got = bivariate_log_prob(xy, mu, std, rho)
    assert got.shape == (n,)
    cov = _covariance(std, rho).numpy()
    expected = torch.tensor(
        [stats.multivariate_normal.logpdf(xy[i].numpy(), mean=mu[i].numpy(), cov=cov[i]) for i in range(n)]
    )
    flipped = torch.tensor(
        [
            stats.multivariate_normal.logpdf(xy[i].numpy(), mean=mu[i].numpy(), cov=cov[i] * [[1, -1], [-1, 1]])
            for i in range(n)
        ]
    )
    _assert_matches(got, expected, wrong=flipped, rtol=1e-9, atol=1e-9)
    # The -0.5 log(1 - rho^2) term: at rho = +-0.99 dropping it moves the value by ~1.96 nats.
    dropped = got + 0.5 * torch.log(1 - rho**2)
    assert (dropped[:2] - expected[:2]).abs().min() > 1.9


def test_bivariate_log_prob_rho_near_one_matches_torch_multivariate_normal():
    """A thin ridge (rho = +-0.99) evaluated on and off its axis, against torch's Cholesky-based density."""
    mu = torch.tensor([0.3, -1.2], dtype=F64)
    std = torch.tensor([0.7, 2.5], dtype=F64)
    t = torch.linspace(-3, 3, 13, dtype=F64)
    for rho_value in (0.99, -0.99, 0.995):
        rho = torch.tensor(rho_value, dtype=F64)
        # Along the ridge (where the density is large) and across it.
        along = mu + torch.stack([std[0] * t, torch.sign(rho) * std[1] * t], -1)
        across = mu + torch.stack([std[0] * t, -torch.sign(rho) * std[1] * t], -1) * 0.1
        xy = torch.cat([along, across])
        got = bivariate_log_prob(xy, mu, std, rho)
        expected = MultivariateNormal(mu, covariance_matrix=_covariance(std, rho)).log_prob(xy)
        wrong = MultivariateNormal(mu, covariance_matrix=_covariance(std, -rho)).log_prob(xy)
        _assert_matches(got, expected, wrong=wrong, rtol=1e-9, atol=1e-9)


def test_bivariate_log_prob_broadcasts_over_components():
    n, k = 8, 3
    g = _rng(41)
    xy = _normal((n, 1, 2), g)
    mu, std = _normal((n, k, 2), g), _std((n, k, 2), g)
    rho = torch.empty(n, k, dtype=F64).uniform_(-0.95, 0.95, generator=g)
    got = bivariate_log_prob(xy, mu, std, rho)
    assert got.shape == (n, k)
    expected = MultivariateNormal(mu, covariance_matrix=_covariance(std, rho)).log_prob(xy)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def _bivariate_mixture(n: int, k: int, seed: int, with_logits: bool = True) -> BivariateMixture:
    g = _rng(seed)
    logits = _normal((n, k), g, 2.0) if with_logits else None
    mu, std = _normal((n, k, 2), g, 2.0), _std((n, k, 2), g)
    rho = torch.empty(n, k, dtype=F64).uniform_(-0.99, 0.99, generator=g)
    pen_logit = _normal((n,), g, 3.0)
    return BivariateMixture(logits, mu, std, rho, pen_logit)


def _bivariate_mixture_reference(x: Tensor, p: BivariateMixture) -> Tensor:
    components = MultivariateNormal(p.mu, covariance_matrix=_covariance(p.std, p.rho))
    if p.logits is None:
        xy = components.log_prob(x[:, None, :2])[:, 0]
    else:
        xy = MixtureSameFamily(Categorical(logits=p.logits), components).log_prob(x[:, :2])
    return xy + Bernoulli(logits=p.pen_logit).log_prob(x[:, 2])


@pytest.mark.parametrize("k", [1, 3, 20])
@pytest.mark.parametrize("pen", [0.0, 1.0])
def test_bivariate_mixture_log_prob_matches_mixture_of_multivariate_normals(k, pen):
    n = 40
    p = _bivariate_mixture(n, k, seed=50 + k, with_logits=k > 1)
    g = _rng(60 + k)
    xy = p.mu[:, 0] + p.std[:, 0] * _normal((n, 2), g)
    x = torch.cat([xy, torch.full((n, 1), pen, dtype=F64)], -1)
    got = bivariate_mixture_log_prob(x, p)
    assert got.shape == (n,)
    expected = _bivariate_mixture_reference(x, p)
    wrong_rho = _bivariate_mixture_reference(x, p._replace(rho=-p.rho))
    _assert_matches(got, expected, wrong=wrong_rho, rtol=1e-9, atol=1e-9)
    # The pen bit counts: the other pen state is a different (wrong) answer.
    other = _bivariate_mixture_reference(torch.cat([xy, torch.full((n, 1), 1.0 - pen, dtype=F64)], -1), p)
    assert not torch.allclose(got, other)


def test_bivariate_mixture_pen_probabilities_sum_to_one_even_for_extreme_logits():
    n = 6
    p = _bivariate_mixture(n, 2, seed=70)
    p = p._replace(pen_logit=torch.tensor([-60.0, -5.0, 0.0, 0.5, 5.0, 60.0], dtype=F64))
    xy = p.mu[:, 1]
    pen0 = bivariate_mixture_log_prob(torch.cat([xy, torch.zeros(n, 1, dtype=F64)], -1), p)
    pen1 = bivariate_mixture_log_prob(torch.cat([xy, torch.ones(n, 1, dtype=F64)], -1), p)
    assert torch.isfinite(pen0).all() and torch.isfinite(pen1).all()
    xy_only = bivariate_mixture_log_prob(torch.cat([xy, torch.zeros(n, 1, dtype=F64)], -1), p) - F.logsigmoid(
        -p.pen_logit
    )
    torch.testing.assert_close(torch.logaddexp(pen0, pen1), xy_only, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pen1 - pen0, p.pen_logit, rtol=1e-12, atol=1e-9)


# -------------------------------------------------------------------------------------- sharpening


def test_sharpen_temperature_scales_std_and_divides_logits():
    g = _rng(80)
    logits, std = _normal((5, 4), g), _std((5, 4, 3), g)
    new_logits, new_std = sharpen(logits, std, temperature=2.5, bias=0.0)
    torch.testing.assert_close(new_std, 2.5 * std)
    torch.testing.assert_close(new_logits, logits / 2.5)
    # Identity at temperature 1, bias 0; the inputs are not modified in place.
    same_logits, same_std = sharpen(logits, std, temperature=1.0, bias=0.0)
    torch.testing.assert_close(same_logits, logits)
    torch.testing.assert_close(same_std, std)
    assert not torch.allclose(new_std, std)


def test_sharpen_bias_multiplies_logits_and_shrinks_std():
    g = _rng(81)
    logits, std = _normal((5, 4), g), _std((5, 4, 2), g)
    b = 0.7
    new_logits, new_std = sharpen(logits, std, temperature=1.0, bias=b)
    torch.testing.assert_close(new_logits, logits * (1 + b))
    torch.testing.assert_close(new_std, std * math.exp(-b))
    # Both at once compose: logits (1 + b) / T, std T exp(-b).
    both_logits, both_std = sharpen(logits, std, temperature=0.5, bias=b)
    torch.testing.assert_close(both_logits, logits * (1 + b) / 0.5)
    torch.testing.assert_close(both_std, std * 0.5 * math.exp(-b))


def test_sharpen_without_logits():
    std = torch.ones(3, 1, 2, dtype=F64)
    logits, new_std = sharpen(None, std, temperature=0.3, bias=1.0)
    assert logits is None
    torch.testing.assert_close(new_std, std * 0.3 * math.exp(-1.0))


# ---------------------------------------------------------------------------------------- samplers


def test_samplers_are_reproducible_with_a_generator():
    diagonal, bivariate = _diagonal_mixture(200, 4, 3, seed=90), _bivariate_mixture(200, 4, seed=91)
    for sample, p in ((sample_diagonal_mixture, diagonal), (sample_bivariate_mixture, bivariate)):
        a, b, c = sample(p, _rng(7)), sample(p, _rng(7)), sample(p, _rng(8))
        assert a.shape == (200, 3) and a.dtype == F64
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a[:, 2].tolist()) <= {0.0, 1.0}  # the bivariate draws' pen bits


def test_samplers_use_each_rows_own_parameters():
    """Rows with different parameters and a near-certain component: each draw sits on its own row's mean."""
    n, k = 12, 5
    g = _rng(92)
    chosen = torch.arange(n) % k
    logits = torch.full((n, k), -50.0, dtype=F64)
    logits[torch.arange(n), chosen] = 50.0
    mu = _normal((n, k, 2), g, 10.0)
    std = torch.full((n, k, 2), 1e-9, dtype=F64)
    target = mu[torch.arange(n), chosen]

    x = sample_diagonal_mixture(DiagonalMixture(logits, mu, std), _rng(0))
    torch.testing.assert_close(x, target, rtol=0, atol=1e-6)

    pen_logit = torch.where(torch.arange(n) % 2 == 0, -50.0, 50.0).to(F64)
    rho = torch.zeros(n, k, dtype=F64)
    y = sample_bivariate_mixture(BivariateMixture(logits, mu, std, rho, pen_logit), _rng(0))
    torch.testing.assert_close(y[:, :2], target, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[:, 2], (torch.arange(n) % 2).to(F64))

    # Without logits (K = 1) the only component is used.
    x1 = sample_diagonal_mixture(DiagonalMixture(None, mu[:, :1], std[:, :1]), _rng(0))
    torch.testing.assert_close(x1, mu[:, 0], rtol=0, atol=1e-6)


def _assign(x: Tensor, centres: Tensor) -> Tensor:
    """Index of the nearest centre per row (components are far apart, so this recovers the draw's component)."""
    return torch.cdist(x, centres).argmin(-1)


def test_sample_diagonal_mixture_moments():
    n = 100_000
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    centres = torch.tensor([[-30.0, 0.0], [0.0, 30.0], [30.0, -10.0]], dtype=F64)
    stds = torch.tensor([[1.0, 2.0], [0.5, 0.5], [3.0, 1.5]], dtype=F64)
    # Logits are defined up to a constant: shift them to show only the softmax matters.
    p = DiagonalMixture(
        (weights.log() + 4.0).expand(n, 3),
        centres.expand(n, 3, 2),
        stds.expand(n, 3, 2),
    )
    x = sample_diagonal_mixture(p, _rng(100))
    k = _assign(x, centres)
    counts = torch.bincount(k, minlength=3).to(F64)
    freq_se = torch.sqrt(weights * (1 - weights) / n)
    assert ((counts / n - weights).abs() < 5 * freq_se).all(), (counts / n, weights)
    for j in range(3):
        xs = x[k == j]
        m = xs.shape[0]
        assert ((xs.mean(0) - centres[j]).abs() < 5 * stds[j] / math.sqrt(m)).all()
        # The sample std of a Gaussian has standard error ~ std / sqrt(2 m).
        assert ((xs.std(0) - stds[j]).abs() < 5 * stds[j] / math.sqrt(2 * m)).all()
        # Dimensions are independent within a component.
        assert abs(float(torch.corrcoef(xs.T)[0, 1])) < 5 / math.sqrt(m)
    # Sensitivity: the weights the other way round are far outside the tolerance.
    assert ((counts / n - weights.flip(0)).abs() > 5 * freq_se).any()


def test_sample_diagonal_mixture_single_gaussian_matches_scipy_ks():
    n = 20_000
    p = DiagonalMixture(None, torch.full((n, 1, 1), 1.5, dtype=F64), torch.full((n, 1, 1), 0.4, dtype=F64))
    x = sample_diagonal_mixture(p, _rng(101))[:, 0].numpy()
    assert stats.kstest(x, stats.norm(loc=1.5, scale=0.4).cdf).pvalue > 1e-4
    # ...and the test would notice a 5 % error in the scale.
    assert stats.kstest(x, stats.norm(loc=1.5, scale=0.42).cdf).pvalue < 1e-4


def test_sample_bivariate_mixture_moments():
    n = 100_000
    weights = torch.tensor([0.6, 0.4], dtype=F64)
    centres = torch.tensor([[-40.0, 5.0], [40.0, -5.0]], dtype=F64)
    stds = torch.tensor([[2.0, 0.5], [1.0, 3.0]], dtype=F64)
    rhos = torch.tensor([0.9, -0.6], dtype=F64)
    pen_p = 0.15
    p = BivariateMixture(
        weights.log().expand(n, 2),
        centres.expand(n, 2, 2),
        stds.expand(n, 2, 2),
        rhos.expand(n, 2),
        torch.full((n,), math.log(pen_p / (1 - pen_p)), dtype=F64),
    )
    x = sample_bivariate_mixture(p, _rng(102))
    k = _assign(x[:, :2], centres)
    freq = torch.bincount(k, minlength=2).to(F64) / n
    assert ((freq - weights).abs() < 5 * torch.sqrt(weights * (1 - weights) / n)).all()
    for j in range(2):
        xs = x[k == j, :2]
        m = xs.shape[0]
        assert ((xs.mean(0) - centres[j]).abs() < 5 * stds[j] / math.sqrt(m)).all()
        assert ((xs.std(0) - stds[j]).abs() < 5 * stds[j] / math.sqrt(2 * m)).all()
        # The sample correlation has standard error ~ (1 - rho^2) / sqrt(m); a flipped sign is far off.
        r = float(torch.corrcoef(xs.T)[0, 1])
        se = (1 - rhos[j] ** 2) / math.sqrt(m)
        assert abs(r - rhos[j]) < 5 * se, (j, r, rhos[j])
        assert abs(r + rhos[j]) > 5 * se
        # Same check, whitened by scipy: the draws are N(mu, Sigma) (Mahalanobis distances ~ chi^2_2).
        cov = _covariance(stds[j], rhos[j])
        d2 = ((xs - centres[j]) @ torch.linalg.inv(cov) * (xs - centres[j])).sum(-1).numpy()
        assert stats.kstest(d2[:5000], stats.chi2(df=2).cdf).pvalue > 1e-4
    pen = x[:, 2]
    assert set(pen.unique().tolist()) == {0.0, 1.0}
    assert abs(float(pen.mean()) - pen_p) < 5 * math.sqrt(pen_p * (1 - pen_p) / n)


def test_sample_bivariate_single_component_near_degenerate_correlation():
    """rho = -0.99: draws stay on the ridge and 1 - rho^2 under the square root stays valid."""
    n = 50_000
    rho = -0.99
    p = BivariateMixture(
        None,
        torch.zeros(n, 1, 2, dtype=F64),
        torch.ones(n, 1, 2, dtype=F64),
        torch.full((n, 1), rho, dtype=F64),
        torch.zeros(n, dtype=F64),
    )
    x = sample_bivariate_mixture(p, _rng(103))
    assert torch.isfinite(x).all()
    r = float(torch.corrcoef(x[:, :2].T)[0, 1])
    assert abs(r - rho) < 5 * (1 - rho**2) / math.sqrt(n)


def test_sharpened_samples_follow_the_sharpened_parameters():
    """Sampling a sharpened mixture: bias pushes draws onto the heaviest component and shrinks the spread."""
    n = 50_000
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    centres = torch.tensor([[-20.0], [0.0], [20.0]], dtype=F64)
    std = torch.ones(n, 3, 1, dtype=F64)
    b, temperature = 1.0, 1.5
    logits, sharp_std = sharpen(weights.log().expand(n, 3), std, temperature=temperature, bias=b)
    x = sample_diagonal_mixture(DiagonalMixture(logits, centres.expand(n, 3, 1), sharp_std), _rng(104))
    k = _assign(x, centres)
    expected = F.softmax(weights.log() * (1 + b) / temperature, -1)
    freq = torch.bincount(k, minlength=3).to(F64) / n
    assert ((freq - expected).abs() < 5 * torch.sqrt(expected * (1 - expected) / n)).all()
    assert ((freq - weights).abs() > 5 * torch.sqrt(weights * (1 - weights) / n)).any()
    s = float(x[k == 0].std())
    target = temperature * math.exp(-b)
    assert abs(s - target) < 5 * target / math.sqrt(2 * int((k == 0).sum()))


# ------------------------------------------------------------------------------------------- means


def test_diagonal_mixture_mean_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]], dtype=F64)  # weights (1/4, 3/4), (1/2, 1/2)
    mu = torch.tensor([[[4.0, -8.0], [0.0, 8.0]], [[1.0, 2.0], [3.0, -2.0]]], dtype=F64)
    p = DiagonalMixture(logits, mu, torch.ones_like(mu))
    expected = torch.tensor([[1.0, 4.0], [2.0, 0.0]], dtype=F64)
    got = diagonal_mixture_mean(p)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(diagonal_mixture_mean(p._replace(logits=logits.flip(-1))), expected)
    # One component: its mean.
    torch.testing.assert_close(diagonal_mixture_mean(DiagonalMixture(None, mu[:, :1], mu[:, :1])), mu[:, 0])


def test_bivariate_mixture_mean_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0], [0.0, math.log(4.0)]], dtype=F64)
    mu = torch.tensor(
        [[[4.0, -8.0], [0.0, 8.0]], [[1.0, 2.0], [3.0, -2.0]], [[0.0, 0.0], [2.0, 2.0]], [[5.0, 0.0], [0.0, 5.0]]],
        dtype=F64,
    )
    pen_logit = torch.tensor([-3.0, -0.1, 0.1, 5.0], dtype=F64)
    p = BivariateMixture(logits, mu, torch.ones_like(mu), torch.zeros(4, 2, dtype=F64), pen_logit)
    expected = torch.tensor([[1.0, 4.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 4.0, 1.0]], dtype=F64)
    got = bivariate_mixture_mean(p)
    torch.testing.assert_close(got, expected)
    # The pen is a bit (the likelier state), not the probability sigmoid(pen_logit).
    assert set(got[:, 2].tolist()) <= {0.0, 1.0}
    assert not torch.allclose(got[:, 2], torch.sigmoid(pen_logit))
    one = BivariateMixture(None, mu[:, :1], mu[:, :1], torch.zeros(4, 1, dtype=F64), pen_logit)
    torch.testing.assert_close(bivariate_mixture_mean(one)[:, :2], mu[:, 0])


def test_means_agree_with_large_sample_averages():
    n = 100_000
    g = _rng(110)
    logits, mu, std = _normal((3,), g), _normal((3, 2), g, 3.0), _std((3, 2), g)
    p = DiagonalMixture(logits.expand(n, 3), mu.expand(n, 3, 2), std.expand(n, 3, 2))
    x = sample_diagonal_mixture(p, _rng(111))
    mean = diagonal_mixture_mean(p)[0]
    # The sample mean's standard error, from the sample itself.
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() < 5 * se).all()


def test_reference_helpers_are_consistent_with_numpy():
    """Guard the test's own helper: the covariance built from std and rho."""
    std = torch.tensor([2.0, 3.0], dtype=F64)
    cov = _covariance(std, torch.tensor(-0.5, dtype=F64)).numpy()
    np.testing.assert_allclose(cov, [[4.0, -3.0], [-3.0, 9.0]])


@pytest.mark.parametrize("shape", [(1, 20), (7, 20), (1, 2), (3, 121)])
def test_the_component_draw_is_torch_multinomial_bit_for_bit(shape):
    """The samplers draw a mixture component with ATen's one-sample multinomial path minus its input checks: the
    same index as `torch.multinomial(p, 1)` and the same generator state after it, over many draws (zeros too)."""
    from model.distributions import multinomial_one

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        logits = torch.randn(shape, generator=g) * (0.3 + trial / 20)
        probs = F.softmax(logits, dim=-1)
        if trial % 3 == 0:
            probs[:, : shape[1] // 2] = 0.0  # components with no weight are never drawn
        ours, theirs = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        k = multinomial_one(probs, ours)
        assert torch.equal(k, torch.multinomial(probs, 1, generator=theirs)), trial
        assert torch.equal(torch.rand(4, generator=ours), torch.rand(4, generator=theirs)), trial
        if trial % 3 == 0:
            assert (k >= shape[1] // 2).all()


def test_the_component_draw_works_under_autograd_and_per_row():
    """Parameters that carry gradients draw as multinomial does (an index has no gradient), and with RowGenerators
    row r draws from generator r: what multinomial gives that row alone."""
    from model.distributions import RowGenerators, multinomial_one

    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(1), requires_grad=True)
    probs = F.softmax(logits, dim=-1)
    k = multinomial_one(probs, torch.Generator().manual_seed(2))
    assert torch.equal(k, torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(2)))
    rows = multinomial_one(probs, RowGenerators([torch.Generator().manual_seed(s) for s in (4, 5, 6)]))
    for r, s in enumerate((4, 5, 6)):
        assert torch.equal(
            rows[r], torch.multinomial(probs[r : r + 1], 1, generator=torch.Generator().manual_seed(s))[0]
        )
