"""model.paired: every row of a batch computed as it is in a batch of two, so that batched sampling gives each row
its solo sample at a matrix-matrix product's cost."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import load_checkpoint
from model.distributions import RowGenerators
from model.paired import RowOp, linear_op, lstm_op, plan
from model.stepper import Stepper

ROOT = Path(__file__).resolve().parents[2]
SPEECH = sorted(p.stem for p in (ROOT / "checkpoints").glob("speech-*.safetensors"))


@pytest.fixture(scope="module", params=SPEECH)
def speech(request):
    m, _ = load_checkpoint(ROOT / "checkpoints" / f"{request.param}.safetensors")
    return m.eval()


@pytest.mark.parametrize("rows", range(1, 40))
@pytest.mark.parametrize("sizes", [(), (2,), (9, 8, 7, 6, 5, 4, 3, 2), (15, 4, 2)])
def test_a_plan_covers_the_rows_with_valid_chunks(rows, sizes):
    chunks = plan(rows, sizes)
    assert sum(chunks) == rows
    assert all(m in sizes or m == 1 for m in chunks)
    assert chunks.count(1) <= (rows if not sizes else 1)


def test_a_layer_gives_each_row_its_paired_bits_in_any_batch():
    torch.manual_seed(0)
    w, b = torch.randn(300, 222), torch.randn(300)
    op = linear_op(w, b)
    x = torch.randn(37, 222)
    sizes = op.sizes(x)  # (on the AMD EPYC a pair's bits already depend on the row's place: none)
    assert sizes == () or sizes[-1] == 2
    out = op(x)
    for r in range(37):
        pair = F.linear(torch.cat([x[r : r + 1], torch.zeros(1, 222)]), w, b)[:1]
        assert torch.equal(out[r : r + 1], pair), r
    assert torch.equal(op(x[5:6]), F.linear(torch.cat([x[5:6], torch.zeros(1, 222)]), w, b)[:1])


def test_the_probe_can_refuse_a_layout():
    """A function whose rows mix (not a per-row kernel) passes no chunk size; every row then runs in a pair of its
    own, so each still gets what it gets beside a zero row."""
    op = RowOp(lambda x: x - x.mean(0, keepdim=True), [8], ("mixing", 8))
    x = torch.randn(5, 8)
    assert op.sizes(x) == ()
    out = op(x)
    for r in range(5):
        assert torch.equal(out[r], x[r] - torch.cat([x[r : r + 1], torch.zeros(1, 8)]).mean(0)), r


def test_the_lstm_cell_gives_each_row_its_paired_bits():
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(200, 256)
    op = lstm_op(cell)
    x, h, c = torch.randn(13, 200), torch.randn(13, 256), torch.randn(13, 256)
    h2, c2 = op(x, h, c)
    for r in range(13):
        pair = [torch.cat([t[r : r + 1], torch.zeros_like(t[:1])]) for t in (x, h, c)]
        weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        ph, pc = torch.lstm_cell(pair[0], (pair[1], pair[2]), *weights)
        assert torch.equal(h2[r], ph[0]) and torch.equal(c2[r], pc[0]), r


@pytest.mark.parametrize("mode", ["sample", "component-mean", "mean"])
@torch.inference_mode()
def test_every_row_of_a_paired_batch_is_its_seeds_solo_sample(speech, mode):
    """Sampled paired, a batch of 11 (more than one chunk of most layers on the Xeon; a pair per row where a layer
    keeps no batch's bits) with one generator per row gives each row its seed's solo sample, bit for bit, over 40
    steps with a temperature."""
    seeds = list(range(20, 31))
    kw = {"steps": 40, "temperature": 0.8, "mean": mode, "paired": True}
    batch = speech.sample(len(seeds), generator=RowGenerators([torch.Generator().manual_seed(s) for s in seeds]), **kw)
    for r, seed in enumerate(seeds):
        alone = speech.sample(1, generator=torch.Generator().manual_seed(seed), **kw)[0]
        assert torch.equal(batch[r], alone), (r, mode)


@torch.inference_mode()
def test_paired_and_plain_products_differ_so_the_test_above_can_fail(speech):
    """A lone row on PyTorch's own products runs the matrix-vector kernel: not its paired bits (on this project's
    CPUs; were they equal, the batch test would prove less)."""
    runs = [speech.sample(1, 40, generator=torch.Generator().manual_seed(3), paired=p)[0] for p in (True, False)]
    assert not torch.equal(runs[0], runs[1])


@torch.inference_mode()
def test_a_handwriting_model_samples_paired_when_asked():
    """The handwriting VRNN-GMM's 54-wide layers keep their paired bits in pairs at most (so it samples plain by
    default: `stepper.paired_pays`); asked, it samples paired, and every row still gets its solo bits."""
    model, _ = load_checkpoint(ROOT / "checkpoints" / "handwriting-vrnn-gmm.safetensors")
    model.eval()
    seeds = [3, 1, 4, 1, 5]
    kw = {"steps": 60, "bias": 1.0, "paired": True}
    batch = model.sample(5, generator=RowGenerators([torch.Generator().manual_seed(s) for s in seeds]), **kw)
    for r, seed in enumerate(seeds):
        assert torch.equal(batch[r], model.sample(1, generator=torch.Generator().manual_seed(seed), **kw)[0]), r


@torch.inference_mode()
def test_the_stepper_pads_a_lone_row_itself(speech):
    """`Stepper(paired=True)` given one row runs each product on it beside a zero row (`paired.RowOp`): what a sampler
    that keeps the second row in its state (VRNN.sample, the engine: `stepper.LoneRow`) computes."""
    stepper = Stepper(speech, paired=True)
    g = torch.Generator().manual_seed(0)
    H, Z = speech.config.h_dim, speech.config.z_dim
    h, c = torch.randn(2, H, generator=g), torch.randn(2, H, generator=g)
    eps = torch.randn(2, Z, generator=g) if speech.phi_z is not None else None
    lone = stepper.emit(h[:1], None if eps is None else eps[:1])
    both = stepper.emit(h, eps)
    assert all(a is None or torch.equal(a, b[:1]) for a, b in zip(lone[0], both[0], strict=True))
    x = torch.randn(2, speech.config.x_dim, generator=g)
    lone_state = stepper.advance(x[:1], None if lone[1] is None else lone[1], h[:1], c[:1])
    both_state = stepper.advance(x, both[1], h, c)
    assert all(torch.equal(a, b[:1]) for a, b in zip(lone_state, both_state, strict=True))


@torch.inference_mode()
def test_a_primed_paired_batch_reads_each_rows_prime_alone(speech):
    """With a prime, each row of a batch reads it with its own generator, as its solo sample does."""
    prime = torch.randn(6, speech.config.x_dim, generator=torch.Generator().manual_seed(8))
    seeds = [4, 9, 16, 25, 36]
    gens = RowGenerators([torch.Generator().manual_seed(s) for s in seeds])
    batch = speech.sample(len(seeds), 20, generator=gens, prime=prime, paired=True)
    for r, seed in enumerate(seeds):
        alone = speech.sample(1, 20, generator=torch.Generator().manual_seed(seed), prime=prime, paired=True)[0]
        assert torch.equal(batch[r], alone), r


@torch.inference_mode()
def test_rows_stay_whole_where_threads_split_a_large_batchs_elementwise_work():
    """At two threads PyTorch splits an elementwise kernel over more than 32,768 values among the threads at a fixed
    element count, wherever that falls in a row; the latent and output heads' softplus runs inside paired ops,
    whose chunks keep rows whole. 1,101 rows of the speech VRNN-Gauss: the rows around the split are their solo
    samples."""
    model, _ = load_checkpoint(ROOT / "checkpoints" / "speech-vrnn-gauss.safetensors")
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n = 1101
        gens = RowGenerators([torch.Generator().manual_seed(s) for s in range(n)])
        batch = model.sample(n, 2, generator=gens, paired=True)
        for r in (0, 549, 550, 551, n - 1):
            alone = model.sample(1, 2, generator=torch.Generator().manual_seed(r), paired=True)[0]
            assert torch.equal(batch[r], alone), r
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("sizes", "pays"), [((), False), ((2,), False), ((3, 2), False), ((4, 3, 2), True), ((15, 9, 4, 3, 2), True)]
)
@torch.inference_mode()
def test_a_model_samples_paired_where_its_layers_keep_a_batchs_bits(monkeypatch, sizes, pays):
    """`samples_paired` follows the probe: paired where every product keeps a batch of defaults.PAIRED_MIN_ROWS (4)
    rows or more in one call, plain elsewhere; `VRNN.sample` and the engine follow it (a lone row's bits tell)."""
    import model.stepper as stepper_module
    from model.engine import SamplingEngine

    monkeypatch.setattr(stepper_module, "_PAYS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(RowOp, "sizes", lambda self, like: sizes)
    model, _ = load_checkpoint(ROOT / "checkpoints" / "speech-vrnn-gauss.safetensors")
    model.eval()
    assert model.samples_paired is pays
    solo = {p: model.sample(1, 12, generator=torch.Generator().manual_seed(5), paired=p)[0] for p in (True, False)}
    assert not torch.equal(solo[True], solo[False])  # (so the comparisons below can fail)
    assert torch.equal(model.sample(1, 12, generator=torch.Generator().manual_seed(5))[0], solo[pays])
    engine = SamplingEngine(model, max_batch=4).start()
    try:
        assert engine.paired is pays
        assert torch.equal(engine.submit(12, seed=5).result(timeout=60), solo[pays])
    finally:
        engine.stop()


def test_the_decision_is_cached_per_thread_count(monkeypatch):
    """The probe runs once per model and thread count (a kernel's choice depends on the thread count)."""
    import model.stepper as stepper_module

    calls = []
    monkeypatch.setattr(stepper_module, "_PAYS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(RowOp, "sizes", lambda self, like: calls.append(torch.get_num_threads()) or (8, 4, 2))
    model, _ = load_checkpoint(ROOT / "checkpoints" / "handwriting-vrnn-gmm.safetensors")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert model.samples_paired and model.samples_paired
        once = len(calls)
        assert once > 0
        torch.set_num_threads(2)
        assert model.samples_paired
        assert len(calls) == 2 * once
    finally:
        torch.set_num_threads(threads)
