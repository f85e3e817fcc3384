"""model.native: the C products of the sampling step.

Checked against torch's own products (to float32 rounding: an independent reference), for the property they exist
for (a row's bits do not depend on the batch, its place in it or the rows beside it), for the same bits from the
AVX2 and AVX-512 builds, and for every way they can be unavailable (no compiler, VRNN_NATIVE=0, a CPU without a
build, a failed self-check), where sampling must fall back to PyTorch's products. The samplers built on them
(solo and batched rows, the engine) are checked in test_paired.py and test_engine.py, which run on whatever this
machine has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model import native
from model.checkpoint import load_checkpoint
from model.stepper import Stepper

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"

needs_native = pytest.mark.skipif(native.library() is None, reason=f"native products unavailable: {native.status()}")


class Owner:
    """Something weakly referenceable that keeps weights (a model in the sampler)."""


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """native's process state forgotten before and after, its cache in tmp_path."""
    monkeypatch.setenv("VRNN_NATIVE_DIR", str(tmp_path / "cache"))
    native.reset()
    yield tmp_path / "cache"
    native.reset()


# ------------------------------------------------------------------------------------------------ the products


@needs_native
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 150),
    ks=st.lists(st.integers(1, 70), min_size=1, max_size=native.MAX_BLOCKS),
    rows=st.integers(1, 19),
    bias=st.booleans(),
    relu=st.booleans(),
    add=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_product_is_torchs_to_rounding_and_every_row_its_own(n, ks, rows, bias, relu, add, seed):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(n, k, generator=g) for k in ks]
    b = torch.randn(n, generator=g) if bias else None
    xs = [torch.randn(rows, k, generator=g) for k in ks]
    extra = torch.randn(rows, n, generator=g) if add else None
    p = native.Product(ws, b, relu=relu)
    y = p(*xs, add=extra)
    want = sum(F.linear(x, w) for x, w in zip(xs, ws, strict=True)) + (0 if b is None else b)
    want = want + (0 if extra is None else extra)
    want = torch.relu(want) if relu else want
    assert y.shape == (rows, n) and y.dtype == torch.float32
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)
    for r in range(rows):  # each row alone, and in a batch of its neighbours at another place
        alone = p(*(x[r : r + 1] for x in xs), add=None if extra is None else extra[r : r + 1])
        assert torch.equal(alone, y[r : r + 1])
    lo = rows // 3
    part = p(*(x[lo:] for x in xs), add=None if extra is None else extra[lo:])
    assert torch.equal(part, y[lo:])


@needs_native
def test_a_row_keeps_its_bits_whatever_its_neighbours_hold():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(1024, 364, generator=g), torch.randn(1024, generator=g)
    p = native.Product([w], b)
    x = torch.randn(16, 364, generator=g)
    y = p(x)
    other = torch.randn(16, 364, generator=g) * 1e6
    other[5] = x[5]
    assert torch.equal(p(other)[5], y[5])


@needs_native
def test_relu_keeps_nan_as_torch_does():
    p = native.Product([torch.ones(3, 2)], None, relu=True)
    y = p(torch.tensor([[float("nan"), 1.0], [-5.0, 1.0]]))
    assert torch.isnan(y[0]).all() and torch.equal(y[1], torch.zeros(3))


@needs_native
def test_inputs_it_cannot_take_are_refused_with_what_to_change():
    p = native.Product([torch.randn(8, 5), torch.randn(8, 3)], torch.randn(8))
    ok = (torch.randn(2, 5), torch.randn(2, 3))
    assert p(*ok).shape == (2, 8)
    for bad in [
        (torch.randn(2, 4), ok[1]),  # width
        (ok[0], torch.randn(3, 3)),  # rows
        (ok[0].double(), ok[1]),  # dtype
        (ok[0],),  # arity
    ]:
        with pytest.raises(ValueError):
            p(*bad)
    with pytest.raises(ValueError):
        p(*ok, add=torch.randn(2, 7))
    with pytest.raises(ValueError):
        native.Product([torch.randn(8, 5), torch.randn(7, 3)])
    with pytest.raises(ValueError):
        native.Product([torch.randn(8, 1)] * (native.MAX_BLOCKS + 1))


@needs_native
def test_a_non_contiguous_input_is_read_as_its_values():
    w = torch.randn(20, 6)
    p = native.Product([w])
    x = torch.randn(6, 4).t()  # (4, 6), not contiguous
    assert torch.equal(p(x), p(x.contiguous()))


@needs_native
def test_products_are_made_once_per_weights_and_anew_when_they_change():
    owner, w, b = Owner(), torch.randn(30, 7), torch.randn(30)
    p = native.product(owner, [w], b)
    assert native.product(owner, [w], b) is p
    assert native.product(owner, [w], b, relu=True) is not p
    x = torch.randn(3, 7)
    w.mul_(2)  # in place: a new version
    q = native.product(owner, [w], b)
    assert q is not p
    torch.testing.assert_close(q(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # weights made under inference_mode keep no version counter
        wi = torch.randn(30, 7)
    assert native.product(owner, [wi]) is native.product(owner, [wi])


# ------------------------------------------------------------------------------------------------ the builds


def test_the_level_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(native.platform, "machine", lambda: "x86_64")
    v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"}
    assert native.level(v3) == "x86-64-v3"
    assert native.level(v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}) == "x86-64-v4"
    assert native.level(v3 - {"fma"}) is None  # without FMA the bits would differ: no build
    monkeypatch.setattr(native.platform, "machine", lambda: "aarch64")
    assert native.level(v3) is None


@needs_native
def test_the_avx2_and_avx512_builds_give_the_same_bits(tmp_path):
    if native.level() != "x86-64-v4":
        pytest.skip("this CPU runs only the AVX2 build")
    fns = {lvl: native._load(native.build(lvl, tmp_path)) for lvl in ("x86-64-v3", "x86-64-v4")}
    g = torch.Generator().manual_seed(3)
    ws, b = [torch.randn(1000, 300, generator=g), torch.randn(1000, 77, generator=g)], torch.randn(1000, generator=g)
    xs = [torch.randn(11, 300, generator=g), torch.randn(11, 77, generator=g)]
    outs = []
    c = torch.randn(11, 250, generator=g)
    for fn in fns.values():
        p = native.Product.around(fn, ws, b, relu=True)
        q = native.Product.around(fn, ws, b)
        outs.append((p(*xs), *q.lstm(*xs, c=c)))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@needs_native
def test_a_build_goes_to_the_cache_once_and_is_found_there(fresh):
    assert native.library() is not None
    (built,) = fresh.glob("rowgemm-*.so")
    assert native.file_name(native.level()) == built.name  # the source's hash is in the name
    stamp = built.stat().st_mtime_ns
    native.reset()
    assert native.library() is not None and built.stat().st_mtime_ns == stamp  # not built again
    assert native.status().startswith("on: ")
    assert not list(fresh.glob("*.tmp"))


def test_without_a_compiler_sampling_falls_back_to_torch(fresh, monkeypatch):
    if native.level() is None:
        pytest.skip("no build for this CPU: native is off anyway")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native.library() is None
    assert native.status().startswith("off: could not build")
    _samples_with_torch()


def test_vrnn_native_0_turns_it_off(fresh, monkeypatch):
    monkeypatch.setenv("VRNN_NATIVE", "0")
    assert native.library() is None
    assert native.status() == "off: VRNN_NATIVE=0"
    assert not native.usable(torch.empty(0))
    with pytest.raises(RuntimeError, match="unavailable"):
        native.Product([torch.randn(2, 2)])
    _samples_with_torch()


def test_a_library_that_fails_its_self_check_is_not_used(fresh, monkeypatch):
    if native.level() is None:
        pytest.skip("no build for this CPU")
    monkeypatch.setattr(native, "_self_check", lambda fn: "rows 0:1 alone differ")
    assert native.library() is None
    assert "failed its self-check: rows 0:1 alone differ" in native.status()


def _samples_with_torch():
    model, _ = load_checkpoint(CHECKPOINTS / "speech-vrnn-gauss.safetensors")
    stepper = Stepper(model, paired=True)
    assert stepper.kernel == "torch"
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(model.sample(1, 3, generator=g, paired=True)).all()


def test_the_command_line_says_whether_it_is_on(tmp_path):
    env = {**os.environ, "VRNN_NATIVE_DIR": str(tmp_path)}
    on = subprocess.run([sys.executable, "-m", "model.native", "status"], capture_output=True, text=True, env=env)
    assert on.stdout.startswith("on: " if native.library() is not None else "off: ")
    off_env = {**env, "VRNN_NATIVE": "0"}
    off = subprocess.run([sys.executable, "-m", "model.native", "status"], capture_output=True, text=True, env=off_env)
    assert (off.returncode, off.stdout.strip()) == (1, "off: VRNN_NATIVE=0")
    bad = subprocess.run([sys.executable, "-m", "model.native", "build", "--levels", "x86-64-v9"], capture_output=True)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr


# ------------------------------------------------------------------------------------------------ the sampler


@needs_native
@pytest.mark.parametrize("name", ["speech-vrnn-gauss", "speech-rnn-gmm", "speech-vrnn-i-gauss", "handwriting-vrnn-gmm"])
def test_the_native_step_computes_what_the_modules_do(name):
    """One emit and one advance of the native stepper against the plain (PyTorch) one, to float32 rounding."""
    model, _ = load_checkpoint(CHECKPOINTS / f"{name}.safetensors")
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    h, c = torch.randn(5, cfg.h_dim, generator=g), torch.randn(5, cfg.h_dim, generator=g)
    eps = torch.randn(5, cfg.z_dim, generator=g) if model.phi_z is not None else None
    x = torch.randn(5, cfg.x_dim, generator=g)
    with torch.no_grad():
        outs = {}
        for kernel in ("torch", "native"):
            s = Stepper(model, kernel=kernel)
            params, pz = s.emit(h, eps)
            outs[kernel] = (params, pz, s.advance(x, pz, h, c))
    (p_t, pz_t, hc_t), (p_n, pz_n, hc_n) = outs["torch"], outs["native"]
    for a, b in zip(p_t, p_n, strict=True):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    if pz_t is not None:
        torch.testing.assert_close(pz_n, pz_t, rtol=1e-4, atol=1e-4)
    for a, b in zip(hc_t, hc_n, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@needs_native
def test_a_native_paired_stepper_runs_a_lone_row_as_it_is():
    model, _ = load_checkpoint(CHECKPOINTS / "speech-vrnn-gauss.safetensors")
    stepper = Stepper(model, paired=True)
    assert stepper.kernel == "native"
    assert not stepper.pads_lone_row(torch.empty(0))
    assert model.samples_paired


def test_a_stepper_names_its_kernel():
    model, _ = load_checkpoint(CHECKPOINTS / "handwriting-vrnn-gmm.safetensors")
    assert Stepper(model).kernel == "torch"  # the plain stepper: PyTorch's products, the modules' bits
    with pytest.raises(ValueError, match="kernel"):
        Stepper(model, kernel="blas")


@needs_native
def test_the_lstm_kernel_is_torchs_cell_to_rounding_and_keeps_nan():
    g = torch.Generator().manual_seed(5)
    cell = torch.nn.LSTMCell(37, 20)
    x, h, c = torch.randn(9, 37, generator=g) * 3, torch.randn(9, 20, generator=g), torch.randn(9, 20, generator=g)
    p = native.Product([cell.weight_ih, cell.weight_hh], (cell.bias_ih, cell.bias_hh))
    with torch.no_grad():
        want = torch.lstm_cell(x, (h, c), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    got = p.lstm(x, h, c=c)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)
    for r in range(9):  # a row alone: the same bits
        alone = p.lstm(x[r : r + 1], h[r : r + 1], c=c[r : r + 1])
        assert all(torch.equal(a[0], b[r]) for a, b in zip(alone, got, strict=True))
    x[4, 0] = float("nan")
    h2, _ = p.lstm(x, h, c=c)
    assert torch.isnan(h2[4]).all() and torch.isfinite(h2[[0, 1, 2, 3, 5, 6, 7, 8]]).all()
    wide = torch.linspace(-100, 100, 20 * 9).reshape(9, 20)  # saturated gates: finite, in range
    h3, _ = p.lstm(x.nan_to_num() * 1e3, h, c=wide)
    assert torch.isfinite(h3).all() and (h3.abs() <= 1).all()
    with pytest.raises(ValueError):
        p.lstm(x, h, c=c[:, :5])
    with pytest.raises(ValueError):
        native.Product([torch.randn(8, 3)], relu=True).lstm(torch.randn(1, 3), c=torch.randn(1, 2))


@needs_native
def test_a_corrupt_cached_library_is_built_again(fresh):
    fresh.mkdir(parents=True)
    bad = fresh / native.file_name(native.level())
    bad.write_bytes(b"not a shared object")
    assert native.library() is not None  # rebuilt over it
    assert bad.read_bytes()[:4] == b"\x7fELF"


@needs_native
def test_zero_rows_give_empty_results():
    p = native.Product([torch.randn(8, 5), torch.randn(8, 3)], torch.randn(8))
    assert p(torch.empty(0, 5), torch.empty(0, 3)).shape == (0, 8)
    q = native.Product([torch.randn(8, 5)], torch.randn(8))
    assert q(torch.empty(0, 5)).shape == (0, 8)
    h, c = p.lstm(torch.empty(0, 5), torch.empty(0, 3), c=torch.empty(0, 2))
    assert h.shape == c.shape == (0, 2)
    with pytest.raises(ValueError):
        p(torch.empty(0, 4), torch.empty(0, 3))


@needs_native
def test_a_build_that_fails_for_one_level_falls_back_to_the_next(fresh, monkeypatch):
    if native.level() != "x86-64-v4":
        pytest.skip("this CPU has one build only")
    real = native.build

    def build(lvl, directory):
        if lvl == "x86-64-v4":
            raise RuntimeError("cc: error: unknown target 'x86-64-v4'")
        return real(lvl, directory)

    monkeypatch.setattr(native, "build", build)
    assert native.library() is not None
    assert native.status().startswith("on: x86-64-v3")
