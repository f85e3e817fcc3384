"""model.rowwise: every row of a batch computes the bits it computes alone (the basis of batching concurrent
sampling requests without changing what a seed gives), for the kernels and for every shipped checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import load_checkpoint, read_metadata
from model.distributions import RowGenerators
from model.networks import _addmm_
from model.rowwise import RowwiseLSTMCell, addmm_, linear, rowwise_copy

ROOT = Path(__file__).resolve().parents[2]
# The paper's models (the engine batches them; a text model samples through model.conditional, not the engine).
SHIPPED = sorted(
    p for p in (ROOT / "checkpoints").glob("*.safetensors") if not read_metadata(p)["config"].get("alphabet")
)
SHAPES = [(3, 64), (64, 256), (122, 488), (200, 512), (257, 333)]


def rows_alone(fn, *batched: torch.Tensor):
    """fn applied to each row of the inputs alone (batch 1, a tensor of its own, as a solo sampler's are), the
    results stacked (a tuple of results: each)."""
    outs = [fn(*(b[k : k + 1].clone() for b in batched)) for k in range(batched[0].shape[0])]
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
    rows = [(r.clone(), xr.clone()) for r, xr in zip(out.split(1), x.split(1), strict=True)]
    alone = torch.cat([_addmm_(r, xr, w) or r for r, xr in rows])
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
    want = [cell(x[k : k + 1].clone(), (hx[k : k + 1].clone(), cx[k : k + 1].clone())) for k in range(16)]
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


@pytest.mark.parametrize("mode", ["sample", "component-mean", "mean"])
@torch.no_grad()
def test_every_row_of_a_batched_sample_is_its_seeds_sample_alone(shipped, mode):
    """The whole sampler on the row-wise copy with one generator per row: each row of a batch of 4 is bit for
    bit the sample of one with its seed on PyTorch's own products (`paired=False`: what the service returns for
    a handwriting model's seed), over 40 steps, with a temperature and a bias."""
    fast = rowwise_copy(shipped)
    seeds = [11, 5, 7, 2024]
    kw = {
        "steps": 40,
        "temperature": 0.8,
        "bias": 0.5 if shipped.config.modality == "handwriting" else 0.0,
        "mean": mode,
    }
    gens = RowGenerators([torch.Generator().manual_seed(s) for s in seeds])
    batch = fast.sample(num_samples=4, generator=gens, **kw)
    for r, seed in enumerate(seeds):
        alone = shipped.sample(num_samples=1, generator=torch.Generator().manual_seed(seed), paired=False, **kw)[0]
        assert torch.equal(batch[r], alone), (r, mode)


@torch.no_grad()
def test_the_plain_model_at_batch_4_is_not_enough(shipped):
    """Per-row generators alone do not give the solo bits: the plain (BLAS-batched) model drifts from them."""
    seeds = [11, 5, 7, 2024]
    gens = RowGenerators([torch.Generator().manual_seed(s) for s in seeds])
    batch = shipped.sample(num_samples=4, steps=40, generator=gens, paired=False)
    solo = [shipped.sample(1, steps=40, generator=torch.Generator().manual_seed(s), paired=False)[0] for s in seeds]
    assert not all(torch.equal(batch[r], solo[r]) for r in range(4))


def test_row_generators_must_match_the_rows(shipped):
    with pytest.raises(ValueError, match="2 row generators for 4 rows"):
        shipped.sample(num_samples=4, steps=2, generator=RowGenerators([torch.Generator(), torch.Generator()]))


def test_the_original_model_is_untouched_and_parameters_are_shared(shipped):
    fast = rowwise_copy(shipped)
    assert type(shipped.rnn) is torch.nn.LSTMCell and type(shipped.phi_x.layers[0]) is torch.nn.Linear
    assert fast.rnn.weight_hh is shipped.rnn.weight_hh
    assert fast.phi_x.layers[0].weight is shipped.phi_x.layers[0].weight
    assert {id(p) for p in fast.parameters()} == {id(p) for p in shipped.parameters()}
