"""The authors' training recipe (jych/nips2015_vrnn on jych/cle) and the fights against posterior
collapse: init, max column norm, per-parameter clipping, std offset, free bits, the sampling mode of
their script, the handwriting loader's first point and its by-writer and IAM-OnDB splits."""

from __future__ import annotations

import csv
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from modelkit import build, make_x, perturb, small_config, tiny_training, write_tones

from model import ModelConfig, build_model, load_checkpoint, save_checkpoint
from model import train as train_mod
from model.data import DataError, load_handwriting_corpus, load_handwriting_file
from model.distributions import BivariateMixture, DiagonalMixture
from model.evaluate import evaluate_sequences
from model.networks import BivariateOutput, DiagonalGaussianOutput, max_col_norm_, weight_matrices

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent / "data"))
datakit = importlib.import_module("datakit")  # tests/model/data/datakit.py: IAM XML for the loader tests
iam_xml, random_strokes = datakit.iam_xml, datakit.random_strokes


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- initialisation


def test_cle_init_is_uniform_008_with_orthogonal_recurrent_weights_and_std_biases():
    cfg = small_config("vrnn", "gmm", "handwriting", h_dim=64, mlp_width=80, z_dim=8)
    torch.manual_seed(0)
    model = build_model(cfg, init="cle")
    uniform = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert module.weight.abs().max() <= 0.08, name
            uniform.append(module.weight.reshape(-1))
            std_slices = getattr(module, "std_slices", ())
            expected = torch.zeros_like(module.bias)
            for s in std_slices:
                expected[s] = 0.6
            assert torch.equal(module.bias, expected), name
    w = torch.cat(uniform)
    # U(-a, a) has std a / sqrt(3) and E|w| = a / 2 (PyTorch's default init gives other values here).
    assert abs(w.std().item() - 0.08 / math.sqrt(3)) < 2e-3 and abs(w.abs().mean().item() - 0.04) < 1e-3
    lstm = model.rnn
    assert lstm.weight_ih.abs().max() <= 0.08
    h = cfg.h_dim
    for gate in range(4):
        u = lstm.weight_hh[gate * h : (gate + 1) * h].double()
        assert torch.allclose(u @ u.T, torch.eye(h, dtype=torch.float64), atol=1e-5)
    assert not lstm.bias_ih.any() and not lstm.bias_hh.any()  # cle's LSTM: no forget-gate bias
    # The head's std biases give unit scale: a fresh model predicts std softplus(0.6) + floor.
    assert torch.allclose(model.decoder.head.hidden_to_params.bias[2 * 3 : 4 * 3], torch.full((6,), 0.6))


def test_default_init_is_unchanged_and_unknown_schemes_are_refused():
    cfg = small_config("vrnn", "gauss", "speech")
    torch.manual_seed(3)
    a = build_model(cfg)
    torch.manual_seed(3)
    b = build_model(cfg, init="default")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert torch.equal(a.rnn.bias_ih[cfg.h_dim : 2 * cfg.h_dim], torch.ones(cfg.h_dim))
    with pytest.raises(ValueError, match="init"):
        build_model(cfg, init="xavier")


# ---------------------------------------------------------------------------- max column norm


def _cle_weight_norm(w_out_in: np.ndarray, bound: float) -> np.ndarray:
    """cle's WeightNorm on their (in, out) layout, transcribed: columns scaled to norm <= bound."""
    w = w_out_in.T
    col = np.sqrt((w**2).sum(axis=0))
    desired = np.clip(col, 0, bound)
    return (w * (desired / (1e-7 + col))).T


def test_max_col_norm_matches_cle_weightnorm_on_every_input_matrix():
    model = perturb(build(("vrnn", "gmm", "speech"))[0], 0.7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    matrices = {id(w) for w in weight_matrices(model)}
    assert len(matrices) == 1 + sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    max_col_norm_(model, 1.9365)
    clipped = kept = 0
    for (name, p), old in zip(model.named_parameters(), before.values(), strict=True):
        if id(p) in matrices:
            ref = _cle_weight_norm(old.double().numpy(), 1.9365)
            assert np.allclose(p.detach().double().numpy(), ref, atol=1e-6), name
            assert (p.norm(dim=1) <= 1.9365 + 1e-5).all()
            over = old.norm(dim=1) > 1.9365
            clipped, kept = clipped + int(over.sum()), kept + int((~over).sum())
            assert torch.equal(p[~over], old[~over]), name  # rows within the bound are left exactly as they were
        else:  # biases and the LSTM's recurrent weights are not constrained
            assert torch.equal(p, old), name
    assert clipped > 10 and kept > 10 and id(model.rnn.weight_hh) not in matrices


def test_training_applies_the_max_col_norm_after_each_step(monkeypatch, tmp_path):
    speech = write_tones(tmp_path / "speech", n=10)
    calls: list[str] = []
    real_step, real_norm = torch.optim.Adam.step, train_mod.max_col_norm_

    def step(self, *a, **k):
        calls.append("step")
        return real_step(self, *a, **k)

    def norm(model, bound):
        calls.append("norm")
        return real_norm(model, bound)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(train_mod, "max_col_norm_", norm)
    out = tmp_path / "m.safetensors"
    assert train_mod.train(tiny_training(speech, out, "--max-col-norm", "0.3", steps=3, every=3, width=16)) == 0
    assert calls == ["step", "norm"] * 3
    model, meta = load_checkpoint(out)
    assert meta["training"]["max_col_norm"] == 0.3
    for w in weight_matrices(model):  # PyTorch's init gives rows of norm ~0.58 here: all were rescaled
        assert (w.norm(dim=1) <= 0.3 + 1e-5).all()


# ---------------------------------------------------------------------------- clipping, recipe flags


def test_per_tensor_clipping_bounds_each_gradient_and_keeps_its_direction():
    model, cfg = build(("vrnn", "gauss", "speech"))
    model = perturb(model, 0.3)
    model(make_x(cfg, 3, 5)).loss.mul(100).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    total = train_mod.clip_gradients(model, 0.05, "per-tensor")
    assert torch.isclose(total, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    clipped = 0
    for p, g in zip(model.parameters(), grads, strict=True):
        n = g.norm()
        assert torch.allclose(p.grad.norm(), torch.clamp(n, max=0.05), rtol=1e-4)
        if n > 0.05:
            clipped += 1
            assert torch.allclose(p.grad / p.grad.norm(), g / n, atol=1e-6)
    assert clipped > 1


def _args(*extra: str, preset: str = "handwriting-demo") -> object:
    return train_mod.parse_args(["--data", "d", "--out", "o.safetensors", "--preset", preset, *extra])


def test_recipe_flags_and_defaults():
    plain = _args()
    assert (plain.init, plain.clip_grad, plain.clip_mode, plain.max_col_norm) == ("default", 5.0, "global", None)
    assert plain.std_floor == 1e-3 and plain.z_dim == 50 and train_mod.PRESETS["iam-ondb"]["z_dim"] == 50
    cle = _args("--recipe", "cle")
    assert (cle.init, cle.clip_grad, cle.clip_mode, cle.max_col_norm, cle.std_floor) == (
        "cle",
        5.0,
        "per-tensor",
        1.9365,
        1e-4,
    )
    mixed = _args("--recipe", "cle", "--clip-grad", "3", "--clip-mode", "global", "--std-floor", "1e-3")
    assert (mixed.clip_grad, mixed.clip_mode, mixed.std_floor, mixed.init) == (3.0, "global", 1e-3, "cle")
    assert _args("--recipe", "cle", "--max-col-norm", "0").max_col_norm is None
    assert train_mod.model_config(cle).std_floor == 1e-4


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--free-bits", "-1"], "--free-bits"), (["--max-col-norm", "-2"], "--max-col-norm"), (["--init", "x"], "init")],
)
def test_bad_recipe_options_exit_2(extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        _args(*extra)
    assert e.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------------------- std offset


def test_std_offset_is_a_config_value_and_old_checkpoints_keep_theirs(tmp_path):
    cfg = small_config("vrnn", "gauss", "speech", std_floor=1e-4)
    model = build_model(cfg)
    with torch.no_grad():
        model.decoder.head.hidden_to_params.bias.fill_(-200.0)  # softplus -> 0: the std is the offset alone
        model.decoder.head.hidden_to_params.weight.zero_()
    p = model.decoder.head(torch.zeros(1, cfg.mlp_width))
    assert torch.equal(p.std, torch.full_like(p.std, 1e-4))
    old_cfg = small_config("vrnn", "gmm", "handwriting", std_floor=1e-3)
    old = perturb(build_model(old_cfg), 0.2)
    path = save_checkpoint(old, tmp_path / "old.safetensors")
    loaded, _ = load_checkpoint(path)
    assert loaded.config.std_floor == 1e-3
    x = make_x(old_cfg, 2, 6)
    assert torch.equal(loaded(x, generator=gen(0)).elbo, old(x, generator=gen(0)).elbo)
    shipped = ROOT / "checkpoints" / "handwriting-vrnn-gmm.safetensors"
    if shipped.exists():  # as it was trained (1e-4 with --recipe cle), whatever today's default
        loaded, meta = load_checkpoint(shipped)
        assert loaded.config.std_floor == meta["training"]["std_floor"]


# ---------------------------------------------------------------------------- free bits


def test_kl_per_dimension_sums_to_the_kl_and_is_zero_on_padding(latent_kind):
    model, cfg = build(latent_kind)
    model = perturb(model, 0.2)
    x = make_x(cfg, 3, 7)
    mask = torch.ones(3, 7)
    mask[1, 4:] = 0
    out = model(x, mask, generator=gen(0))
    assert out.kl_dims.shape == (3, 7, cfg.z_dim)
    assert torch.allclose(out.kl_dims.sum(-1), out.kl, atol=1e-6)
    assert not out.kl_dims[1, 4:].any()
    assert build(("rnn", "gauss", "speech"))[0](make_x(small_config("rnn", "gauss", "speech"), 1, 3)).kl_dims is None


def test_free_bits_floor_the_kl_and_stop_its_gradient_below_the_floor():
    model, cfg = build(("vrnn", "gauss", "speech"))
    model = perturb(model, 0.2)
    x = make_x(cfg, 4, 6)
    mask = torch.ones(4, 6)
    mask[0, 3:] = 0
    out = model(x, mask, generator=gen(0))
    frames = mask.sum()
    plain = train_mod.training_objective(out, frames, 1.0, 0.0, "frame")
    assert torch.allclose(plain, -out.elbo.sum() / frames)
    kl = out.kl.sum() / frames
    nll = out.nll.sum() / frames
    high = kl.item() + 5.0
    floored = train_mod.training_objective(out, frames, 1.0, high, "frame")
    assert torch.allclose(floored, nll + high)
    low = train_mod.training_objective(out, frames, 1.0, kl.item() / 2, "frame")
    assert torch.allclose(low, plain)
    per_dim = out.kl_dims.sum((0, 1)) / frames
    lam = per_dim.median().item()
    dim = train_mod.training_objective(out, frames, 1.0, lam, "dim")
    assert torch.allclose(dim, nll + torch.clamp(per_dim, min=lam).sum())
    warm = train_mod.training_objective(out, frames, 0.5, high, "frame")
    assert torch.allclose(warm, nll + 0.5 * high)
    # Below the floor the KL pushes nothing: the encoder's gradient is that of the reconstruction alone.
    enc = model.encoder.hidden_to_params.weight
    g_floor = torch.autograd.grad(floored, enc, retain_graph=True)[0]
    g_nll = torch.autograd.grad(nll, enc, retain_graph=True)[0]
    g_plain = torch.autograd.grad(plain, enc)[0]
    assert torch.allclose(g_floor, g_nll) and not torch.allclose(g_plain, g_nll)


def test_training_with_free_bits_logs_the_true_elbo_and_the_objective(tmp_path):
    speech = write_tones(tmp_path / "speech", n=10)
    out = tmp_path / "f.safetensors"
    assert train_mod.train(tiny_training(speech, out, "--free-bits", "1000", "--free-bits-mode", "dim")) == 0
    with (tmp_path / "f.log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for r in rows:
        # The objective holds the floored KL (4 dims x 1000 nats); the logged ELBO is the true one.
        objective, neg_elbo = float(r["train_objective_per_frame"]), float(r["train_loss_per_frame"])
        assert objective > neg_elbo + 3000 and float(r["train_kl_per_frame"]) < 1000
        assert float(r["valid_kl_per_frame"]) >= 0
    meta = load_checkpoint(out)[1]
    assert meta["training"]["free_bits"] == 1000 and meta["training"]["free_bits_mode"] == "dim"
    assert meta["metrics"]["test_kl_per_frame"] >= 0


def test_evaluation_reports_the_kl_per_frame_without_changing_the_other_figures():
    model, cfg = build(("vrnn", "gmm", "handwriting"))
    model = perturb(model, 0.2)
    seqs = [make_x(cfg, 1, n, seed=n)[0].numpy() for n in (5, 8, 3)]
    r = evaluate_sequences(model, seqs, num_samples=4, batch_size=2)
    assert r["kl_per_frame"] > 0
    rnn = evaluate_sequences(build(("rnn", "gmm", "handwriting"))[0], seqs, num_samples=4)
    assert rnn["kl_per_frame"] == 0
    g = torch.Generator().manual_seed(0)  # the IS figures use the same draws as without the KL pass
    from model.data import pad_batch

    log_w = [model.log_weights(*pad_batch(seqs[i : i + 2]), num_samples=4, generator=g) for i in (0, 2)]
    ll = sum((torch.logsumexp(w.double(), 0) - math.log(4)).sum().item() for w in log_w) / 3
    assert math.isclose(r["log_likelihood"], ll, rel_tol=1e-9)


# ---------------------------------------------------------------------------- sampling mode


def test_component_mean_of_a_draw_is_the_drawn_components_mean():
    n, k = 20000, 3
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[-10.0, 0.0], [0.0, 5.0], [10.0, -5.0]]).expand(n, k, 2)
    std = torch.tensor([[1.0, 2.0], [0.5, 0.5], [2.0, 1.0]]).expand(n, k, 2)
    logits = torch.log(torch.tensor([0.2, 0.3, 0.5])).expand(n, k)
    draw, mean = DiagonalGaussianOutput.sample(DiagonalMixture(logits, mu, std), g, return_mean=True)
    comp = torch.cdist(mean, mu[0]).argmin(1)
    assert torch.equal(mean, mu[0][comp])  # each row emits exactly one component's mean
    z = (draw - mean) / std[0][comp]  # standardised residuals of the draw about that mean: N(0, 1)
    assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03
    assert abs((comp == 2).float().mean().item() - 0.5) < 0.02
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(DiagonalGaussianOutput.sample(DiagonalMixture(logits, mu, std), g2), draw)  # same stream
    rho = torch.full((n, k), 0.5)
    pen = torch.zeros(n)
    p = BivariateMixture(logits, mu, std, rho, pen)
    d2, m2 = BivariateOutput.sample(p, torch.Generator().manual_seed(1), return_mean=True)
    assert torch.equal(m2[:, 2], d2[:, 2]) and set(m2[:, 2].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m2[:, :2], mu[0][torch.cdist(m2[:, :2], mu[0]).argmin(1)])


@pytest.mark.parametrize("modality", ["speech", "handwriting"])
def test_component_mean_mode_follows_the_sampled_trajectory(modality):
    """RNN-GMM (no z): the fed-back draws fix every step's mixture; the emitted frame must be one of
    that step's component means, and the fed-back draws must be those of the plain sampling mode."""
    model, cfg = build(("rnn", "gmm", modality))
    model = perturb(model, 0.3)
    drawn = model.sample(3, 6, generator=gen(5))
    emitted = model.sample(3, 6, generator=gen(5), mean="component-mean")
    assert emitted.shape == drawn.shape and not torch.allclose(emitted, drawn)
    x_tm, _ = model._prepare(drawn, None)
    with torch.no_grad():
        h_prev = model._posterior_pass(x_tm, lambda t, rows: None).h_prev  # (T, N, H): h_{t-1} given the draws
    for t in range(6):
        with torch.no_grad():
            p = model.decoder(h_prev[t])
        dims = slice(0, cfg.x_dim) if modality == "speech" else slice(0, 2)
        e = emitted[:, t, dims]
        matches = (p.mu - e.unsqueeze(1)).abs().amax(-1) < 1e-5  # (N, K)
        assert matches.any(1).all(), t
        if modality == "handwriting":
            assert torch.equal(emitted[:, t, 2], drawn[:, t, 2])
    with pytest.raises(ValueError, match="mean"):
        model.sample(1, 2, mean="median")
    assert torch.equal(model.sample(2, 3, generator=gen(1), mean="sample"), model.sample(2, 3, generator=gen(1)))


def test_component_mean_on_the_command_line(tmp_path):
    from tinyckpt import tiny_config, write_tiny_checkpoint

    from model.sample import main

    ckpt = write_tiny_checkpoint(tmp_path / "h.safetensors", tiny_config("handwriting", output="gmm"))
    assert main([str(ckpt), "--out", str(tmp_path / "a.json"), "--steps", "20", "--seed", "3"]) == 0
    assert main([str(ckpt), "--out", str(tmp_path / "b.json"), "--steps", "20", "--seed", "3", "--component-mean"]) == 0
    a, b = (np.asarray(json.loads((tmp_path / n).read_text())) for n in ("a.json", "b.json"))
    assert a.shape == b.shape and np.array_equal(a[:, 2], b[:, 2]) and not np.allclose(a[:, :2], b[:, :2])


# ---------------------------------------------------------------------------- handwriting data


def _writer_corpus(root: Path, writers: int = 10, lines: int = 4) -> dict[str, str]:
    rng = np.random.default_rng(2)
    records = []
    for w in range(writers):
        for j in range(lines):
            name = f"lineStrokes/w{w:03d}/w{w:03d}-{j:03d}.xml"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(iam_xml(random_strokes(rng, 2, 15)))
            records.append({"file": name, "writer": f"w{w:03d}"})
    (root / "manifest.json").write_text(json.dumps({"kind": "handwriting-demo", "files": records}))
    return {r["file"]: r["writer"] for r in records}


def test_the_first_point_is_dropped(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "l").mkdir()
    for i in range(3):
        (tmp_path / "l" / f"x{i}.xml").write_text(iam_xml(random_strokes(rng, 2, 10)))
    kept = load_handwriting_corpus(tmp_path / "l", drop_first=False, clip_mads=None)
    dropped = load_handwriting_corpus(tmp_path / "l", clip_mads=None)
    for split in ("train", "valid", "test"):
        for name, x in zip(dropped.names[split], dropped.split(split), strict=True):
            raw = load_handwriting_file(tmp_path / "l" / name)
            assert not raw[0].any()  # the offset of a line's first point is (0, 0), pen down
            assert np.allclose(dropped.stats.denormalise(x), raw[1:], atol=1e-4)
    assert sum(map(len, kept.train)) == sum(map(len, dropped.train)) + len(dropped.train)


@pytest.mark.parametrize("subfolder", [False, True])
def test_demo_corpora_are_split_by_writer(tmp_path, subfolder):
    writers = _writer_corpus(tmp_path)
    c = load_handwriting_corpus(tmp_path / "lineStrokes" if subfolder else tmp_path)
    assert c.split_by == "writer" and c.summary()["split_by"] == "writer"
    prefix = "" if not subfolder else "lineStrokes/"
    who = {s: {writers[prefix + n] if subfolder else writers[n] for n in c.names[s]} for s in c.names}
    assert who["train"] and who["valid"] and who["test"]
    assert not (who["train"] & who["valid"] or who["train"] & who["test"] or who["valid"] & who["test"])
    assert sum(len(c.split(s)) for s in ("train", "valid", "test")) == 40
    line = load_handwriting_corpus(tmp_path, split_by="line")
    assert line.split_by == "line"
    mixed = {s: {writers[n] for n in line.names[s]} for s in line.names}
    assert mixed["train"] & (mixed["valid"] | mixed["test"])  # a split by line mixes writers (the old split)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DataError, match="writer"):
        load_handwriting_corpus(tmp_path, split_by="writer")


def test_the_prepared_demo_corpus_is_split_by_writer(tmp_path):
    from model import prepare

    try:
        prepare.build_handwriting_demo(tmp_path / "hw", "small", seed=0)
    except prepare.PrepareError as e:
        pytest.skip(f"no Hershey fonts: {e}")
    manifest = json.loads((tmp_path / "hw" / "manifest.json").read_text())
    writer = {r["file"]: r["writer"] for r in manifest["files"]}
    c = load_handwriting_corpus(tmp_path / "hw")
    sets = [{writer[n] for n in c.names[s]} for s in ("train", "valid", "test")]
    assert c.split_by == "writer" and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_iam_ondb_split_lists_are_read(tmp_path):
    rng = np.random.default_rng(3)
    forms = ["a01-000u", "a01-001w", "a02-010", "b03-004z", "c04-100"]
    for form in forms:
        folder = tmp_path / "lineStrokes" / form[:3] / form.rstrip("uwz")
        folder.mkdir(parents=True, exist_ok=True)
        for line in (1, 2):
            (folder / f"{form}-{line:02d}.xml").write_text(iam_xml(random_strokes(rng, 2, 12)))
    (tmp_path / "trainset.txt").write_text("a01-000u\na01-001w\n")
    (tmp_path / "testset_v.txt").write_text("a02-010\n")
    (tmp_path / "testset_t.txt").write_text("b03-004z\n")
    with pytest.warns(UserWarning, match="2 of 10 lines are in no IAM-OnDB split list"):
        c = load_handwriting_corpus(tmp_path / "lineStrokes")  # c04-100 is in no list
    assert c.split_by == "iam" and c.predefined_split
    stems = {s: sorted(Path(n).stem for n in c.names[s]) for s in ("train", "valid", "test")}
    assert stems == {
        "train": ["a01-000u-01", "a01-000u-02", "a01-001w-01", "a01-001w-02"],
        "valid": ["a02-010-01", "a02-010-02"],
        "test": ["b03-004z-01", "b03-004z-02"],
    }
    (tmp_path / "testset_f.txt").write_text("c04-100\n")  # IAM's second test set joins the test split
    assert len(load_handwriting_corpus(tmp_path).test) == 4
    assert load_handwriting_corpus(tmp_path, split_by="line").split_by == "line"


def test_train_help_lists_the_recipe_options():
    proc = subprocess.run(
        [sys.executable, "-m", "model.train", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    for flag in ("--recipe", "--init", "--max-col-norm", "--free-bits", "--free-bits-mode", "--clip-mode"):
        assert flag in proc.stdout
    assert ModelConfig().std_floor == 1e-3


# ---------------------------------------------------------------------------- truncated backprop through time


@pytest.mark.parametrize("kind", [("rnn", "gmm", "speech"), ("vrnn", "gauss", "speech")])
def test_a_carried_state_continues_the_sequence(kind):
    model, cfg = build(kind)
    model = perturb(model, 0.3).double()
    x = make_x(cfg, 3, 10, dtype=torch.float64)
    whole = model(x, generator=gen(4))
    g = gen(4)  # the noise of z is drawn step by step: two chunks draw what the whole sequence draws
    first = model(x[:, :6], generator=g)
    second = model(x[:, 6:], generator=g, state=first.state)
    assert torch.allclose(first.elbo + second.elbo, whole.elbo, atol=1e-9)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(second.state, whole.state, strict=True))
    fresh = model(x[:, 6:], generator=gen(4))
    assert not torch.allclose(fresh.nll, second.nll)
    with pytest.raises(ValueError, match="state"):
        model(x, state=(torch.zeros(2, cfg.h_dim), torch.zeros(2, cfg.h_dim)))


def test_stream_batches_continue_each_row(tmp_path):
    from model.data import load_speech_corpus

    corpus = load_speech_corpus(write_tones(tmp_path / "s", n=6), chunk_seconds=0.1)
    stream = train_mod.stream_batches(
        corpus, _args("--batch-size", "3", "--stateful", preset="speech-demo"), train_mod.Dist()
    )
    index = {x.tobytes(): name for x, name in zip(corpus.train, corpus.names["train"], strict=True)}
    n_chunks = len(corpus.train)
    length = n_chunks // 3
    batches = [next(stream) for _ in range(length + 1)]
    assert [reset for _, _, reset in batches] == [True] + [False] * (length - 1) + [True]
    seen = []
    for n in range(1, length):
        for b in range(3):
            prev = index[batches[n - 1][0][b].numpy().tobytes()]
            cur = index[batches[n][0][b].numpy().tobytes()]
            seen.append(cur)
            (pf, pk), (cf, ck) = prev.split("#"), cur.split("#")
            assert cf != pf or int(ck) == int(pk) + 1  # within a recording, the next chunk in time
    assert len(set(seen)) == len(seen)  # no chunk twice in an epoch
    with pytest.raises(SystemExit):
        _args("--stateful")


def test_stateful_training_runs(tmp_path):
    speech = write_tones(tmp_path / "speech", n=10)
    out = tmp_path / "s.safetensors"
    args = tiny_training(speech, out, "--stateful", "--chunk-seconds", "0.1", steps=4, every=2, batch=3)
    assert train_mod.train(args) == 0
    assert load_checkpoint(out)[1]["training"]["stateful"] is True
