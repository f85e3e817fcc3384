"""model.stepper: the lean sampling step gives, bit for bit, what the module loop gives (`VRNN.sample(...,
reference=True)`), for every family, output, modality and sampling mode, the shipped checkpoints included (on
PyTorch's own products, `paired=False`; the paired step is tests/model/test_paired.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modelkit import ALL_KINDS, build, make_x, perturb

from model import load_checkpoint, read_metadata
from model.rowwise import rowwise_copy
from model.stepper import Stepper

ROOT = Path(__file__).resolve().parents[2]
_ALL = sorted((ROOT / "checkpoints").glob("*.safetensors"))
SHIPPED = [p for p in _ALL if not read_metadata(p)["config"].get("alphabet")]  # the paper's models
SHIPPED_TEXT = [p for p in _ALL if read_metadata(p)["config"].get("alphabet")]  # text-conditioned ones
MODES = ["sample", "component-mean", "mean"]


def both(model, num, seed, **kw):
    with torch.inference_mode():
        fast = model.sample(num, generator=torch.Generator().manual_seed(seed), paired=False, **kw)
        ref = model.sample(num, generator=torch.Generator().manual_seed(seed), reference=True, **kw)
    return fast, ref


@pytest.mark.parametrize("kind", ALL_KINDS, ids="-".join)
@pytest.mark.parametrize("mode", MODES)
def test_every_kind_and_mode_gives_the_module_loops_bits(kind, mode):
    model, cfg = build(kind, seed=3)  # two MLP layers: the stepper's later layers are exercised too
    perturb(model.eval(), 0.3)
    prime = make_x(cfg, 1, 5, seed=1)[0]
    for num, kw in [(1, {}), (3, {"temperature": 0.7, "bias": 0.5}), (2, {"prime": prime})]:
        fast, ref = both(model, num, seed=11, steps=25, mean=mode, **kw)
        assert torch.equal(fast, ref), (num, kw)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoints_give_the_module_loops_bits(path):
    model, _ = load_checkpoint(path)
    hw = model.config.modality == "handwriting"
    for mode in MODES:
        fast, ref = both(model.eval(), 1, seed=5, steps=120 if hw else 40, mean=mode, bias=1.0 if hw else 0.0)
        assert torch.equal(fast, ref), mode


@pytest.mark.parametrize("path", SHIPPED_TEXT, ids=lambda p: p.stem)
def test_shipped_text_checkpoints_give_the_module_loops_bits(path):
    from model.conditional import load_text_checkpoint

    model, _ = load_text_checkpoint(path)
    model.eval()
    for mode in MODES:
        with torch.inference_mode():
            runs = [
                model.sample(["hello world"], max_steps=150, bias=2.0, mean=mode, reference=ref, fused=False,
                             generator=torch.Generator().manual_seed(5))
                for ref in (False, True)
            ]  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(runs[0].offsets, runs[1].offsets, strict=True)), mode


def test_sample_runs_through_the_stepper_and_a_rowwise_copy_does_not(monkeypatch):
    """The equality above would hold trivially if `sample` never took the lean path: count its steps."""
    model, _ = build(("vrnn", "gmm", "handwriting"))
    calls = []
    original = Stepper.emit
    monkeypatch.setattr(Stepper, "emit", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.inference_mode():
        model.sample(1, steps=7, generator=torch.Generator().manual_seed(0), paired=False)
        assert len(calls) == 7
        rowwise_copy(model).sample(1, steps=7, generator=torch.Generator().manual_seed(0))
        model.sample(1, steps=7, generator=torch.Generator().manual_seed(0), reference=True)
    assert len(calls) == 7


def test_a_changed_weight_changes_the_samples():
    """The stepper reads the model's current weights (it is built per `sample` call), not a stale copy."""
    model, _ = build(("vrnn", "gauss", "speech"))
    perturb(model.eval(), 0.3)
    before, _ = both(model, 1, seed=2, steps=10)
    with torch.no_grad():
        model.decoder.head.hidden_to_params.bias.add_(1.0)
    after, ref = both(model, 1, seed=2, steps=10)
    assert torch.equal(after, ref) and not torch.equal(before, after)


@pytest.mark.parametrize("kind", [(f, o) for f in ("rnn", "vrnn-i", "vrnn") for o in ("gauss", "gmm")], ids="-".join)
@pytest.mark.parametrize("mode", MODES)
def test_text_models_give_the_module_loops_bits(kind, mode):
    """TextVRNN.sample through the stepper (with the window's vector as every network's extra input) against its
    module loop: the same lines, attention and stopping, with a temperature, a bias and a primed style."""
    from model import ModelConfig
    from model.conditional import TextVRNN

    torch.manual_seed(2)
    cfg = ModelConfig(
        family=kind[0], output=kind[1], modality="handwriting", x_dim=3, z_dim=4, h_dim=16, mlp_layers=2,
        mlp_width=8, n_components=3, alphabet=" abcdeh", window_components=3,
    )  # fmt: skip
    model = perturb(TextVRNN(cfg).eval(), 0.3)
    prime = make_x(cfg, 1, 6, seed=4)[0]
    for kw in ({}, {"temperature": 0.7, "bias": 0.5}, {"prime": (prime, "bed")}):
        out = []
        for reference in (False, True):
            with torch.inference_mode():
                s = model.sample(["abc", "head"], max_steps=30, generator=torch.Generator().manual_seed(9),
                                 mean=mode, reference=reference, fused=False, **kw)  # fmt: skip
            out.append(s)
        fast, ref = out
        assert fast.finished == ref.finished, kw
        for a, b in zip(fast.offsets + fast.phi, ref.offsets + ref.phi, strict=True):
            assert torch.equal(a, b), kw
