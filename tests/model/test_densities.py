"""The model's density integrates to one: sum of exp(log_likelihood) over a quadrature grid.

log_likelihood is exact for family "rnn", so its exponential must integrate to 1 over x_1..x_T,
for any weights. We integrate numerically in float64 with the trapezoid rule on uniform grids.

Why the trapezoid rule is good enough here: for a Gaussian of std s on an unbounded uniform grid
of step h, the rule's relative error is ~2 exp(-2 pi^2 s^2 / h^2) (Poisson summation); with
h <= s that is < 1e-8, and a mixture of Gaussians inherits the bound of its narrowest component.
For a bivariate Gaussian the same holds with s^2 the smallest eigenvalue of the covariance. The
grids below therefore take their step from the smallest std the model actually produces (at the
grid's own nodes) and their range from the model's means +- 10 stds (tail mass < 1e-22), so the
quadrature error is far below the tolerance.

Why a wrong density cannot pass: a density off by a constant factor c integrates to c on any grid
(the quadrature is linear), so |c - 1| > tol fails. E.g. dropping the 0.5 * log(1 - rho^2) term
of the bivariate Gaussian multiplies component k by (1 - rho_k^2)^(-1/2); with the correlations of
the perturbed handwriting models (|rho| up to ~0.9) the integral becomes sum_k pi_k (1 -
rho_k^2)^(-1/2), well above 1 + tol: `test_handwriting_density_integrates_to_one` asserts that
margin from the model's own rho, so the check is shown to be sensitive without touching the library.
A grid that misses mass can only make the sum smaller, never hide an excess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from modelkit import perturb, small_config
from torch import Tensor

from model import build_model
from model.distributions import BivariateMixture, DiagonalMixture

F64 = torch.float64
SPEECH_TOL = 1e-3
CHUNK = 1 << 16  # sequences per log_likelihood call: bounds memory on the 4-D grids
TAIL = 10.0  # grid range: means +- TAIL stds

# A grid over one time step: nodes (n, D) and quadrature weights (n,).
Grid = tuple[Tensor, Tensor]


# ------------------------------------------------------------------------------------------ models


def _model(family: str, output: str, modality: str, mlp_layers: int, seed: int, z_dim: int = 2):
    x_dim = 1 if modality == "speech" else 3
    cfg = small_config(
        family, output, modality, x_dim=x_dim, z_dim=z_dim, h_dim=8, mlp_width=8, mlp_layers=mlp_layers, std_floor=0.05
    )
    with torch.random.fork_rng():  # fixed initial weights without touching the global RNG
        torch.manual_seed(seed)
        return build_model(cfg).double().eval()


@torch.no_grad()
def _next_step_params(model, prefix: Tensor | None, n: int = 1):
    """Output distribution of x_{t+1} after reading `prefix` (B, t, D) (None: of x_1), for an RNN.

    Only used to size the grids; it reruns the RNN with nn.LSTMCell, independently of the model's
    fused loop. A wrong size could only lose mass (the test fails), never add it."""
    h = torch.zeros(n if prefix is None else prefix.shape[0], model.config.h_dim, dtype=F64)
    c = torch.zeros_like(h)
    if prefix is not None:
        for t in range(prefix.shape[1]):
            h, c = model.rnn(model.phi_x(prefix[:, t]), (h, c))
    return model.decoder(h)


# ------------------------------------------------------------------------------------------- grids


def _axis(lo: float, hi: float, step: float) -> tuple[Tensor, Tensor]:
    """Uniform nodes covering [lo, hi] with spacing <= step, and trapezoid weights."""
    n = math.ceil((hi - lo) / step) + 1
    nodes = torch.linspace(lo, hi, n, dtype=F64)
    h = (hi - lo) / (n - 1)
    w = torch.full((n,), h, dtype=F64)
    w[0] = w[-1] = h / 2
    return nodes, w


def _speech_grid(p: DiagonalMixture, step_factor: float = 1.0) -> Grid:
    """1-D grid for every distribution in p (rows x components): means +- TAIL stds, step = smallest std."""
    lo = float((p.mu - TAIL * p.std).min())
    hi = float((p.mu + TAIL * p.std).max())
    nodes, w = _axis(lo, hi, step_factor * float(p.std.min()))
    return nodes[:, None], w


def _smallest_principal_std(p: BivariateMixture) -> float:
    s1, s2 = p.std[..., 0] ** 2, p.std[..., 1] ** 2
    cov = p.rho * p.std[..., 0] * p.std[..., 1]
    lam_min = 0.5 * (s1 + s2) - torch.sqrt(0.25 * (s1 - s2) ** 2 + cov**2)
    return float(lam_min.min().sqrt())


def _handwriting_grid(p: BivariateMixture, step_factor: float = 1.0, tail: float = TAIL) -> Grid:
    """(dx, dy) grid times pen in {0, 1}: nodes (n, 3), the pen summed (weight 1)."""
    step = step_factor * _smallest_principal_std(p)
    axes = []
    for d in range(2):
        lo = float((p.mu[..., d] - tail * p.std[..., d]).min())
        hi = float((p.mu[..., d] + tail * p.std[..., d]).max())
        axes.append(_axis(lo, hi, step))
    (a, wa), (b, wb) = axes
    pen = torch.tensor([0.0, 1.0], dtype=F64)
    nodes = torch.cartesian_prod(a, b, pen)
    w = (wa[:, None, None] * wb[None, :, None] * torch.ones(2, dtype=F64)).reshape(-1)
    return nodes, w


def _product(grids: Sequence[Grid]) -> tuple[Tensor, Tensor]:
    """Tensor-product grid over time steps: sequences (N, T, D) and weights (N,)."""
    idx = torch.cartesian_prod(*[torch.arange(g[0].shape[0]) for g in grids])
    if idx.dim() == 1:
        idx = idx[:, None]
    x = torch.stack([g[0][idx[:, t]] for t, g in enumerate(grids)], dim=1)
    w = torch.ones(idx.shape[0], dtype=F64)
    for t, g in enumerate(grids):
        w = w * g[1][idx[:, t]]
    return x, w


@torch.no_grad()
def _integral(model, x: Tensor, w: Tensor, **ll_kwargs) -> float:
    """sum_i w_i exp(log p(x_i)), the grid batched in chunks."""
    total = torch.zeros((), dtype=F64)
    for i in range(0, x.shape[0], CHUNK):
        ll = model.log_likelihood(x[i : i + CHUNK], **ll_kwargs)
        assert ll.dtype == F64 and torch.isfinite(ll).all()
        total += (w[i : i + CHUNK] * ll.exp()).sum()
    return float(total)


def _two_step_grid(model, first: Grid, grid_of, max_points: int) -> tuple[Tensor, Tensor]:
    """Grid over (x_1, x_2): x_2's grid is sized from p(x_2 | x_1) at every node x_1 of `first`."""
    conditional = _next_step_params(model, first[0][:, None, :])
    second = grid_of(conditional)
    assert first[0].shape[0] * second[0].shape[0] <= max_points, "grid too large for a fast test"
    return _product([first, second])


# ------------------------------------------------------------------------------------------ speech

SPEECH_CASES = [("gauss", 1), ("gauss", 2), ("gmm", 1), ("gmm", 2)]


def _speech_integrals(model) -> tuple[float, float]:
    # T = 1: the brief's fixed wide grid; its step 0.02 is below the std floor 0.05.
    nodes, w = _axis(-40.0, 40.0, 0.02)
    one = _integral(model, nodes[:, None, None], w)
    # T = 2: a 2-D grid sized from the model's own scales, every node a length-2 sequence.
    fine = {"step_factor": 0.25}  # 4 nodes per smallest std: far finer than the error bound needs
    first = _speech_grid(_next_step_params(model, None), **fine)
    x, w2 = _two_step_grid(model, first, lambda p: _speech_grid(p, **fine), max_points=400_000)
    two = _integral(model, x, w2)
    return one, two


@pytest.mark.parametrize("output,layers", SPEECH_CASES)
def test_speech_rnn_density_integrates_to_one(output, layers):
    model = _model("rnn", output, "speech", layers, seed=0)
    one, two = _speech_integrals(model)
    assert one == pytest.approx(1.0, abs=SPEECH_TOL)
    assert two == pytest.approx(1.0, abs=SPEECH_TOL)


@pytest.mark.parametrize("output,layers", SPEECH_CASES)
def test_speech_rnn_density_integrates_to_one_with_perturbed_weights(output, layers):
    model = _model("rnn", output, "speech", layers, seed=1)
    probe = torch.linspace(-3, 3, 7, dtype=F64).reshape(-1, 1, 1).repeat(1, 2, 1)
    probe[:, 1] = -0.5 * probe[:, 1] + 0.3
    before = model.log_likelihood(probe)
    perturb(model, 0.5, seed=101)
    after = model.log_likelihood(probe)
    # Not trivial: the density really moved...
    assert (after - before).abs().max() > 0.1
    # ...and x_2's distribution depends on x_1 (the recurrence matters, not a product of marginals).
    cond = _next_step_params(model, torch.linspace(-3, 3, 13, dtype=F64).reshape(-1, 1, 1))
    assert float(cond.mu.amax(0).sub(cond.mu.amin(0)).max()) > 0.05
    assert float(cond.std.amax(0).div(cond.std.amin(0)).max()) > 1.05

    one, two = _speech_integrals(model)
    assert one == pytest.approx(1.0, abs=SPEECH_TOL)
    assert two == pytest.approx(1.0, abs=SPEECH_TOL)


# ------------------------------------------------------------------------------------- handwriting

HANDWRITING_TOL_T1 = 1e-3
HANDWRITING_TOL_T2 = 5e-3  # observed error ~3e-5; the grid bound is ~1e-3


def _wrong_without_rho_term(p: BivariateMixture) -> float:
    """What the T = 1 integral would be if the -0.5 log(1 - rho^2) term were missing."""
    factor = (1.0 - p.rho**2) ** -0.5  # (1, K)
    if p.logits is None:
        return float(factor.mean())
    return float((p.logits.softmax(-1) * factor).sum())


@pytest.mark.parametrize("output", ["gauss", "gmm"])
@pytest.mark.parametrize("perturbed", [False, True])
def test_handwriting_density_integrates_to_one(output, perturbed):
    model = _model("rnn", output, "handwriting", 1, seed=2)
    if perturbed:
        probe = torch.tensor([[[0.5, -0.3, 0.0]], [[-1.0, 1.0, 1.0]], [[2.0, 0.5, 0.0]]], dtype=F64)
        before = model.log_likelihood(probe)
        perturb(model, 0.5, seed=102)
        assert (model.log_likelihood(probe) - before).abs().max() > 0.1
    p0 = _next_step_params(model, None)
    if perturbed:
        # The check is sensitive: without the log(1 - rho^2) term the integral would be far from 1.
        assert _wrong_without_rho_term(p0) > 1 + 10 * HANDWRITING_TOL_T1
    nodes, w = _handwriting_grid(p0)
    assert nodes.shape[0] <= 400_000
    total = _integral(model, nodes[:, None, :], w)
    assert total == pytest.approx(1.0, abs=HANDWRITING_TOL_T1)
    # Each pen state alone carries its Bernoulli probability (the pen bit is normalised too).
    pen1 = _integral(model, nodes[nodes[:, 2] == 1][:, None, :], w[nodes[:, 2] == 1])
    assert pen1 == pytest.approx(float(torch.sigmoid(p0.pen_logit[0])), abs=HANDWRITING_TOL_T1)


@pytest.mark.parametrize("output,seed,scale", [("gauss", 4, 0.35), ("gmm", 4, 0.25)])
def test_handwriting_two_step_density_integrates_to_one(output, seed, scale):
    """T = 2 on a coarser 4-D grid (times 4 pen states): p(x_2 | x_1) is normalised for every x_1.

    Milder perturbations than at T = 1 keep the 4-D grid small (its size grows with the spread of
    scales); the conditional still moves with x_1 and the correlations still matter."""
    model = perturb(_model("rnn", output, "handwriting", 1, seed=seed), scale, seed=100 + seed)
    # Step 1.5 principal stds: error ~2 exp(-2 pi^2 / 1.5^2) ~ 3e-4 per axis; tails beyond 6 stds ~ 2e-9.
    coarse = {"step_factor": 1.5, "tail": 6.0}
    p0 = _next_step_params(model, None)
    assert _wrong_without_rho_term(p0) > 1 + 2 * HANDWRITING_TOL_T2
    first = _handwriting_grid(p0, **coarse)
    conditional = _next_step_params(model, first[0][:, None, :])
    # x_1 matters: p(x_2 | x_1) moves with x_1, so T = 2 is not a product of two T = 1 checks.
    assert float(conditional.mu.amax(0).sub(conditional.mu.amin(0)).max()) > 0.2
    x, w = _two_step_grid(model, first, lambda p: _handwriting_grid(p, **coarse), max_points=150_000)
    assert _integral(model, x, w) == pytest.approx(1.0, abs=HANDWRITING_TOL_T2)


# -------------------------------------------------------------------------------------------- VRNN


@torch.no_grad()
def _vrnn_x_grid(model, n_z: int = 2000) -> Grid:
    """x_1's grid from the model's scales: decoder outputs for prior draws of z_1."""
    h0 = torch.zeros(n_z, model.config.h_dim, dtype=F64)
    mu_z, std_z = model.prior(h0)
    z = mu_z + std_z * torch.randn(mu_z.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    return _speech_grid(model.decoder(model.phi_z(z), h0), step_factor=0.5)


@pytest.mark.parametrize("perturbed", [False, True])
def test_vrnn_importance_sampled_density_integrates_to_about_one(perturbed):
    """exp of the IS estimate is an unbiased estimate of p(x): its integral is ~1 up to Monte Carlo noise.

    A sign error in the importance weights (log q - log p) or a missing log q would be off by far more."""
    model = _model("vrnn", "gauss", "speech", 1, seed=4)
    if perturbed:
        # A milder perturbation than for the RNN: at scale 0.5 q(z | x) fits the posterior so poorly that
        # the weights get heavy tails and K = 500 underestimates by a few percent (K = 10^4 recovers 1).
        probe = torch.linspace(-2, 2, 5, dtype=F64).reshape(-1, 1, 1)
        before = model.log_likelihood(probe, num_samples=500, generator=torch.Generator().manual_seed(0))
        perturb(model, 0.3, seed=104)
        after = model.log_likelihood(probe, num_samples=500, generator=torch.Generator().manual_seed(0))
        assert (after - before).abs().max() > 0.1
    nodes, w = _vrnn_x_grid(model)
    assert nodes.shape[0] <= 2000
    g = torch.Generator().manual_seed(5)
    total = _integral(model, nodes[:, None, :], w, num_samples=500, generator=g)
    assert total == pytest.approx(1.0, abs=0.03)
