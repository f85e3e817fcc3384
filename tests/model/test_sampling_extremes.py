"""Every temperature and bias the API accepts samples: finite output of the right shape for both modalities and
both output kinds (Gauss and GMM), however close to 0 the temperature is (subnormal floats included). Property
tests over the whole accepted range, plus the T -> 0 limit and byte-identity for ordinary temperatures."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from modelkit import build, perturb

from model.distributions import BivariateMixture, DiagonalMixture, sample_bivariate_mixture, sharpen
from worker import limits

KINDS = [
    (family, output, modality)
    for output in ("gauss", "gmm")
    for modality in ("speech", "handwriting")
    for family in ("vrnn",)
] + [("rnn", "gmm", "handwriting")]
TINIEST = 5e-324  # the smallest positive double (subnormal): an accepted temperature
# Every positive temperature up to the API's bound, subnormal ones included, and every accepted bias.
temperatures = st.floats(min_value=TINIEST, max_value=limits.MAX_TEMPERATURE, allow_subnormal=True)
biases = st.floats(min_value=0.0, max_value=limits.MAX_BIAS, allow_subnormal=True)
EXTREMES = [(TINIEST, 0.0), (TINIEST, limits.MAX_BIAS), (1e-300, 0.0), (1e-45, 1.0), (1e-30, 0.0), (2e-38, 0.5)]

_MODELS: dict[tuple, torch.nn.Module] = {}


def model_of(kind: tuple[str, str, str], dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A small model of `kind` with weights moved far from their initial values (spread-out mixture logits)."""
    key = (*kind, dtype)
    if key not in _MODELS:
        model, _ = build(kind, seed=3)
        _MODELS[key] = perturb(model, 0.5, seed=3).to(dtype).eval()
    return _MODELS[key]


def draw(kind, temperature: float, bias: float, dtype=torch.float32, steps: int = 4) -> torch.Tensor:
    model = model_of(kind, dtype)
    g = torch.Generator().manual_seed(0)
    return model.sample(num_samples=3, steps=steps, temperature=temperature, bias=bias, generator=g)


def check(kind, x: torch.Tensor, steps: int = 4) -> None:
    x_dim = 6 if kind[2] == "speech" else 3
    assert x.shape == (3, steps, x_dim)
    assert torch.isfinite(x).all(), x
    if kind[2] == "handwriting":
        assert set(x[..., 2].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(k))
@settings(max_examples=30, deadline=None, derandomize=True)
@given(temperature=temperatures, bias=biases)
@example(temperature=TINIEST, bias=0.0)
@example(temperature=1e-300, bias=limits.MAX_BIAS)
@example(temperature=1e-30, bias=0.0)
@example(temperature=limits.MAX_TEMPERATURE, bias=limits.MAX_BIAS)
@example(temperature=1.0, bias=TINIEST)
def test_every_accepted_temperature_and_bias_gives_finite_samples(kind, temperature, bias):
    check(kind, draw(kind, temperature, bias))


@pytest.mark.parametrize(("temperature", "bias"), EXTREMES)
@pytest.mark.parametrize("modality", ["speech", "handwriting"])
def test_tiny_temperatures_sample_in_double_precision_too(modality, temperature, bias):
    # In float64 1e-300 scales logits to about 1e300 (still finite) and 5e-324 to inf: both paths of the limit.
    kind = ("vrnn", "gmm", modality)
    check(kind, draw(kind, temperature, bias, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(k))
def test_a_subnormal_temperature_is_the_t_to_0_limit(kind):
    """The continuous limit, not a special case: a subnormal T samples what T = 1e-37 does (where the scaled
    logits are still finite floats and softmax alone already puts all the weight on the largest)."""
    assert torch.equal(draw(kind, TINIEST, 0.0, steps=6), draw(kind, 1e-37, 0.0, steps=6))


def test_sharpen_at_the_limit_picks_the_largest_logit():
    logits = torch.tensor([[0.5, 2.0, -1.0], [-3.0, -1.0, -1.0], [1e-3, -2.0, 0.0]])
    std = torch.ones(3, 3, 2)
    for temperature in (TINIEST, 1e-300, 1e-45):
        sharp, sharp_std = sharpen(logits, std, temperature, 0.0)
        probs = torch.softmax(sharp, dim=-1)
        assert torch.isfinite(sharp_std).all() and (sharp_std < 1e-40).all()
        expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
        assert torch.equal(probs, expected), (temperature, probs)
    # Rows are independent: one that overflows takes the limit, one still finite after scaling is the plain product.
    logits = torch.tensor([[1e10, 2e10], [1.0, -1.0]])
    sharp, _ = sharpen(logits, std[:2, :2], 1e-30, 0.0)
    assert torch.equal(sharp[0], torch.tensor([-math.inf, 0.0])) and torch.equal(sharp[1], logits[1] * 1e30)


def test_a_tiny_temperature_draws_the_most_likely_components_mean():
    logits = torch.tensor([[0.0, 3.0], [2.0, -2.0]])
    mu = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[-1.0, -2.0], [5.0, 6.0]]])
    p = BivariateMixture(logits, mu, torch.ones(2, 2, 2), torch.full((2, 2), 0.5), torch.zeros(2))
    logits_t, std_t = sharpen(p.logits, p.std, TINIEST, limits.MAX_BIAS)
    x = sample_bivariate_mixture(p._replace(logits=logits_t, std=std_t), torch.Generator().manual_seed(0))
    assert torch.equal(x[:, :2], torch.tensor([[3.0, 4.0], [-1.0, -2.0]]))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    temperature=st.floats(min_value=1e-3, max_value=limits.MAX_TEMPERATURE),
    bias=biases,
    seed=st.integers(0, 2**31),
)
def test_ordinary_temperatures_scale_logits_exactly_as_before(temperature, bias, seed):
    """Where nothing overflows, sharpen is the old arithmetic, bit for bit: the same seed gives the same samples."""
    g = torch.Generator().manual_seed(seed)
    p = DiagonalMixture(torch.randn(5, 4, generator=g) * 10, torch.randn(5, 4, 3, generator=g), torch.rand(5, 4, 3))
    logits, std = sharpen(p.logits, p.std, temperature, bias)
    assert torch.equal(logits, p.logits * ((1.0 + bias) / temperature))
    assert torch.equal(std, p.std * (temperature * math.exp(-bias)))
