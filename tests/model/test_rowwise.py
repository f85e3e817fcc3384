"""model.rowwise: every row of a batch computes the bits it computes alone (the basis of batching concurrent
sampling requests without changing what a seed gives), for the kernels and for every shipped checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import load_checkpoint
from model.networks import _addmm_
from model.rowwise import RowwiseLSTMCell, addmm_, linear, rowwise_copy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "checkpoints").glob("*.safetensors"))
SHAPES = [(3, 64), (64, 256), (122, 488), (200, 512), (257, 333)]


def rows_alone(fn, *batched: torch.Tensor):
    """fn applied to each row of the inputs alone (batch 1), the results stacked (a tuple of results: each)."""
    outs = [fn(*(b[k : k + 1] for b in batched)) for k in range(batched[0].shape[0])]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


@pytest.mark.parametrize(("i", "o"), SHAPES)
def test_linear_rows_equal_batch_one(i, o):
    g = torch.Generator().manual_seed(i * o)
    w, b, x = torch.randn(o, i, generator=g), torch.randn(o, generator=g), torch.randn(16, i, generator=g)
    assert torch.equal(linear(x, w, b), rows_alone(lambda r: F.linear(r, w, b), x))
    assert torch.equal(linear(x, w), rows_alone(lambda r: F.linear(r, w), x))
    out, alone = torch.randn(16, o, generator=g), None
    alone = torch.cat([_addmm_(r, xr, w) or r for r, xr in zip(out.clone().split(1), x.split(1), strict=True)])
    assert torch.equal(addmm_(out.clone(), x, w), alone)


def test_plain_batched_products_are_not_row_invariant():
    """Why this module exists: BLAS products at batch 16 round differently from batch 1 (if this ever stops
    failing on a platform, row invariance there comes for free)."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(512, 200, generator=g), torch.randn(16, 200, generator=g)
    assert not torch.equal(F.linear(x, w), rows_alone(lambda r: F.linear(r, w), x))


@pytest.mark.parametrize(("i", "h"), [(3, 50), (122, 400), (257, 333)])
def test_lstm_cell_rows_equal_the_fused_cell_alone(i, h):
    torch.manual_seed(i)
    cell = torch.nn.LSTMCell(i, h)
    x, hx, cx = torch.randn(16, i), torch.randn(16, h), torch.randn(16, h)
    got_h, got_c = RowwiseLSTMCell(cell)(x, (hx, cx))
    want = [cell(x[k : k + 1], (hx[k : k + 1], cx[k : k + 1])) for k in range(16)]
    assert torch.equal(got_h, torch.cat([w[0] for w in want])) and torch.equal(got_c, torch.cat([w[1] for w in want]))


@pytest.fixture(scope="module", params=[p.stem for p in SHIPPED])
def shipped(request):
    model, _ = load_checkpoint(ROOT / "checkpoints" / f"{request.param}.safetensors")
    return model.eval()


@torch.no_grad()
def test_every_layer_of_every_shipped_model_is_row_invariant(shipped):
    fast = rowwise_copy(shipped)
    g = torch.Generator().manual_seed(1)
    cfg = shipped.config
    h = torch.randn(8, cfg.h_dim, generator=g)
    x = torch.randn(8, cfg.x_dim, generator=g)
    checks = [("phi_x", (x,))]
    if shipped.phi_z is not None:
        z = torch.randn(8, cfg.z_dim, generator=g)
        checks += [("phi_z", (z,)), ("decoder.net", (shipped.phi_z(z), h))]
        if shipped.prior is not None:
            checks.append(("prior", (h,)))
    else:
        checks.append(("decoder.net", (h,)))
    for name, inputs in checks:
        original, rowwise = shipped.get_submodule(name), fast.get_submodule(name)
        got, want = rowwise(*inputs), rows_alone(original, *inputs)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), name
    params = fast.decoder.head.hidden_to_params
    hidden = torch.randn(8, params.in_features, generator=g)
    assert torch.equal(params(hidden), rows_alone(shipped.decoder.head.hidden_to_params, hidden))
    c = torch.randn(8, cfg.h_dim, generator=g)
    inp = torch.randn(8, shipped.rnn.input_size, generator=g)
    assert torch.equal(fast.rnn(inp, (h, c))[0], rows_alone(lambda a, b, d: shipped.rnn(a, (b, d))[0], inp, h, c))


@torch.no_grad()
def test_a_batched_sample_row_is_the_sample_alone(shipped):
    """The whole sampler on the row-wise copy, decoder means fed back: row 0 of a batch of 4 is bit for bit the
    sample of one with the same seed. RNNs are then deterministic, so over 60 steps; a VRNN's rows draw z from
    one generator (row 0 shares the solo draws at the first step only, until each row gets its own stream), so
    its first frame."""
    fast = rowwise_copy(shipped)
    steps = 60 if shipped.config.family == "rnn" else 1

    def sample(model, n):
        return model.sample(num_samples=n, steps=steps, generator=torch.Generator().manual_seed(5), mean=True)

    alone = sample(shipped, 1)[0]
    assert torch.equal(sample(fast, 4)[0], alone)
    assert torch.equal(sample(fast, 1)[0], alone)


def test_the_original_model_is_untouched_and_parameters_are_shared(shipped):
    fast = rowwise_copy(shipped)
    assert type(shipped.rnn) is torch.nn.LSTMCell and type(shipped.phi_x.layers[0]) is torch.nn.Linear
    assert fast.rnn.weight_hh is shipped.rnn.weight_hh
    assert fast.phi_x.layers[0].weight is shipped.phi_x.layers[0].weight
    assert {id(p) for p in fast.parameters()} == {id(p) for p in shipped.parameters()}
