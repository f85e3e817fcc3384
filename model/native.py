"""Row-invariant matrix products in C for the sampling step: every row gets the same bits alone or in any batch.

A BLAS picks its kernel by shape, so a row's sums round differently at batch 1 (a matrix-vector kernel) than in a
batch, and on some CPUs differently again for each batch size (`model.paired`). `model/kernels/rowgemm.c` computes
every element by the same fused multiply-adds in the same order whatever the batch: rows are blocked 4 (AVX2: 3) or 2
at a time to reuse the weights they load, which changes no element's arithmetic. So a batched sample's every row is its
solo sample at a matrix-matrix product's cost, on every CPU with FMA, and the kernel's bits are the same on every
such CPU (AVX2 and AVX-512 builds agree: the vector width only decides how many columns run side by side; the
PyTorch operations around it may still differ between machines). The weights are stored panel by panel, so each
streams from memory in order; `vrnn_lstm` is a whole LSTM cell (the gates' product and their nonlinearities). On one
thread it is about as fast as MKL at one row and faster for batches at the sampling step's sizes (docs/SERVICE.md).

The library is built on first use with the system's C compiler (`cc`, or `$CC`) into a cache directory
(`$VRNN_NATIVE_DIR`, else `$XDG_CACHE_HOME/vrnn-service`, else `~/.cache/vrnn-service`), one file per source and
instruction set (`x86-64-v4`: AVX-512; `x86-64-v3`: AVX2 + FMA), written under a temporary name and renamed, so
processes that start together do not race. A build made ahead (`python -m model.native build DIR`, as the Docker
image does) is found beside the source first. Where there is no compiler, no such CPU (other architectures, or no
FMA), or `VRNN_NATIVE=0`, `library()` is None and sampling uses PyTorch's products (`model.paired`) as before; a
library that fails its self-check at load is not used either. `status()` says which and why.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Bias = Tensor | Sequence[Tensor] | None

SOURCE = Path(__file__).with_name("kernels") / "rowgemm.c"
MAX_BLOCKS = 3  # inputs one product takes side by side (the kernel's x0, x1, x2)
_ALIGN = 16  # the weights' row length is padded to a multiple of this many floats (the kernel's widest vector)

# The CPU flags each build needs (the x86-64 micro-architecture levels gcc's -march names), best first.
_LEVELS = {
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
}
_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-fast-math", "-shared", "-fPIC", "-Wno-psabi"]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def level(flags: set[str] | None = None) -> str | None:
    """The best build this CPU runs (`_LEVELS`), or None (not x86-64, or no AVX2 + FMA)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = _cpu_flags() if flags is None else flags
    if "lzcnt" in flags:  # (some kernels name ABM's lzcnt on its own)
        flags = flags | {"abm"}
    return next((name for name, need in _LEVELS.items() if need <= flags), None)


def file_name(lvl: str) -> str:
    """The library's file name for build `lvl`: the source's hash in it, so an edited source is built anew."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(_FLAGS).encode()).hexdigest()[:12]
    return f"rowgemm-{lvl}-{digest}.so"


def cache_dir() -> Path:
    if os.environ.get("VRNN_NATIVE_DIR"):
        return Path(os.environ["VRNN_NATIVE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vrnn-service"


def build(lvl: str, directory: Path) -> Path:
    """Compile the library for `lvl` into `directory` (atomically: a temporary file, then a rename); its path.
    Raises RuntimeError with the compiler's message when it cannot."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang on PATH, or $CC)")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / file_name(lvl)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        cmd = [cc, f"-march={lvl}", *_FLAGS, "-o", tmp, str(SOURCE), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_LOCK = threading.Lock()  # loading the library
_PRODUCTS_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": the loaded Kernels or None; "why": what status() reports


class _Layer(ctypes.Structure):
    """The kernel's `layer`: a product's shape, transposed weights and bias, made once per `Product`."""

    _fields_ = [
        ("n", ctypes.c_int),
        ("ldw", ctypes.c_int),
        ("relu", ctypes.c_int),
        ("k", ctypes.c_int * MAX_BLOCKS),
        ("wt", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
    ]


class Kernels(NamedTuple):
    """The library's two entry points (ctypes functions) and its vector width."""

    layer: Callable[..., int]  # vrnn_layer(layer*, B, x0, ld0, x1, ld1, x2, ld2, add, lda, y)
    lstm: Callable[..., int]  # vrnn_lstm(layer*, B, x0, ld0, x1, ld1, x2, ld2, c, ldc, gates, h_out, c_out)
    lanes: int  # floats per vector: the weights' panels are 4 * lanes columns wide, the last ones lanes
    sample: Callable[..., int]  # vrnn_sample(net*, B, T, h, c, nrm, ., uni, ., mode, factor, scale, out, ., scratch)
    sample_scratch: Callable[..., int]  # vrnn_sample_scratch(net*, B): floats
    text_sample: Callable[..., int]  # text_sample(text_net*, B, T, h, c, kappa, codes, len, done, ended, nrm, ...)
    text_sample_scratch: Callable[..., int]  # text_sample_scratch(text_net*, B): floats
    text_prime: Callable[..., int]  # text_prime(text_net*, B, T, h, c, kappa, codes, len, x, eps, scratch)


def _load(path: Path) -> Kernels:
    lib = ctypes.CDLL(str(path))
    i, p, layer = ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_Layer)
    lib.vrnn_layer.argtypes = [layer, i, p, i, p, i, p, i, p, i, p]
    lib.vrnn_lstm.argtypes = [layer, i, p, i, p, i, p, i, p, i, p, p, p]
    lib.vrnn_layer.restype = lib.vrnn_lstm.restype = lib.vrnn_lanes.restype = i
    lib.vrnn_lanes.argtypes = []
    lng = ctypes.c_long
    lib.vrnn_sample.argtypes = [p, i, i, p, p, p, lng, p, lng, p, p, p, p, lng, p]
    lib.vrnn_sample.restype = i
    lib.vrnn_sample_scratch.argtypes = [p, i]
    lib.vrnn_sample_scratch.restype = lng
    lib.text_sample.argtypes = [p, i, i, p, p, p, p, p, p, p, p, lng, p, lng, p, p, p, p, lng, p, p]
    lib.text_sample.restype = i
    lib.text_sample_scratch.argtypes = [p, i]
    lib.text_sample_scratch.restype = lng
    lib.text_prime.argtypes = [p, i, i, p, p, p, p, p, p, p, p]
    lib.text_prime.restype = i
    return Kernels(
        lib.vrnn_layer,
        lib.vrnn_lstm,
        int(lib.vrnn_lanes()),
        lib.vrnn_sample,
        lib.vrnn_sample_scratch,
        lib.text_sample,
        lib.text_sample_scratch,
        lib.text_prime,
    )


def _levels(best: str) -> list[str]:
    """`best` and the builds below it, best first (a compiler too old for one may build the next)."""
    names = list(_LEVELS)
    return names[names.index(best) :]


def library() -> Kernels | None:
    """The kernels, built and checked once per process; None where they cannot be used (`status`)."""
    if "lib" in _STATE:
        return _STATE["lib"]  # type: ignore[return-value]
    with _LOCK:
        if "lib" not in _STATE:
            lib, why = _open()
            _STATE["why"] = why  # (before "lib": a reader that sees "lib" finds "why" too)
            _STATE["lib"] = lib
            if lib is None:
                log.info("native row-invariant products off: %s", why)
    return _STATE["lib"]  # type: ignore[return-value]


def _open() -> tuple[Kernels | None, str]:
    if os.environ.get("VRNN_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "VRNN_NATIVE=0"
    best = level()
    if best is None:
        return None, f"no build for this CPU ({platform.machine()} without AVX2 + FMA, or not x86-64)"
    problems = []
    for lvl in _levels(best):
        name = file_name(lvl)
        found = [d / name for d in (SOURCE.parent, cache_dir()) if (d / name).is_file()]
        for attempt in [*found, None]:  # a file made ahead or cached; else (or if that will not load) a new build
            try:
                path = attempt if attempt is not None else build(lvl, cache_dir())
                kernels = _load(path)
            except Exception as e:  # (a corrupt or foreign file, no compiler, a compiler too old for lvl)
                problems.append(f"{lvl}: {e}")
                continue
            problem = _self_check(kernels)
            if problem:
                return None, f"{path} failed its self-check: {problem}"
            return kernels, f"{lvl} ({path})"
    return None, "could not build or load the library: " + "; ".join(problems)


def status() -> str:
    """Whether the native products are in use, and why not or which build."""
    library()
    return ("on: " if _STATE["lib"] is not None else "off: ") + str(_STATE["why"])


def reset() -> None:
    """Forget the loaded library (tests: after changing VRNN_NATIVE or the cache directory)."""
    with _LOCK:
        _STATE.clear()
    with _PRODUCTS_LOCK:
        _PRODUCTS.clear()


def usable(like: Tensor) -> bool:
    """Whether products on tensors like `like` (dtype, device) run natively: float32 on the CPU, with the library."""
    return like.dtype == torch.float32 and like.device.type == "cpu" and library() is not None


def _panels(wt: Tensor, lanes: int) -> Tensor:
    """wt (K, ldw) as the kernel reads it: panel by panel, each block of 4 * lanes columns (the last ones: lanes)
    with its K rows contiguous."""
    ldw, wide, out, n0 = wt.shape[1], 4 * lanes, [], 0
    while n0 < ldw:
        width = wide if n0 + wide <= ldw else lanes
        out.append(wt[:, n0 : n0 + width].reshape(-1))
        n0 += width
    return torch.cat(out)


class Product:
    """x_0, x_1, ... -> relu?(x_0 W_0^T + x_1 W_1^T + ... + bias) (+ `add`), each row's bits independent of the batch.

    `blocks`: the weights (N, K_i) of the inputs taken side by side (at most MAX_BLOCKS: a layer's first weight
    split by input, or an LSTM's input and recurrent weights); `bias` (N,), several (N,) to add up once (an
    LSTM's two), or None. The weights are copied transposed once, so a Product reads them as they were when it was
    made (`product()` makes it anew when they change in place). Inputs are float32 CPU tensors (B, K_i)."""

    def __init__(self, blocks: Sequence[Tensor], bias: Bias = None, relu: bool = False):
        fn = library()
        if fn is None:
            raise RuntimeError(f"native products unavailable: {status()}")
        self._setup(fn, blocks, bias, relu)

    @classmethod
    def around(cls, kernels: Kernels, blocks: Sequence[Tensor], bias: Bias = None, relu: bool = False) -> Product:
        """A Product on these `kernels` (a library not yet in use: its self-check, a test of another build)."""
        p = cls.__new__(cls)
        p._setup(kernels, blocks, bias, relu)
        return p

    def _setup(self, kernels: Kernels, blocks: Sequence[Tensor], bias: Bias, relu: bool) -> None:
        self._lib, self._fn = kernels, kernels.layer
        if not 1 <= len(blocks) <= MAX_BLOCKS or any(w.dim() != 2 or w.shape[0] != blocks[0].shape[0] for w in blocks):
            shapes = [tuple(w.shape) for w in blocks]
            raise ValueError(f"need 1-{MAX_BLOCKS} weight blocks (N, K_i) with one N, got {shapes}")
        self.n = int(blocks[0].shape[0])
        self.widths = tuple(int(w.shape[1]) for w in blocks)
        ldw = -(-self.n // _ALIGN) * _ALIGN
        with torch.no_grad():
            wt = torch.zeros(sum(self.widths), ldw, dtype=torch.float32)
            wt[:, : self.n] = torch.cat([w.detach().float().cpu() for w in blocks], dim=1).t()
            self._wt = _panels(wt, kernels.lanes)
            self._bias: Tensor | None = None
            if bias is not None:
                self._bias = torch.zeros(ldw, dtype=torch.float32)
                for b in [bias] if isinstance(bias, Tensor) else bias:  # (an LSTM's two biases: their sum, once)
                    self._bias[: self.n] += b.detach().float().cpu()
        k = (*self.widths, *([0] * (MAX_BLOCKS - len(self.widths))))
        bias_ptr = None if self._bias is None else self._bias.data_ptr()
        self._layer = _Layer(self.n, ldw, int(relu), (ctypes.c_int * MAX_BLOCKS)(*k), self._wt.data_ptr(), bias_ptr)
        self._ref = ctypes.byref(self._layer)

    def _inputs(self, xs: Sequence[Tensor]) -> tuple[list[int | None], list[Tensor]]:
        """The kernel's (x_i, ld_i) arguments for inputs `xs`, checked, and the contiguous copies made of any (to
        keep alive until the call returns)."""
        if len(xs) != len(self.widths):
            raise ValueError(f"this product takes {len(self.widths)} input(s), got {len(xs)}")
        b = xs[0].shape[0]
        ptrs: list[int | None] = [None, 0, None, 0, None, 0]
        held = []
        for i, (x, k) in enumerate(zip(xs, self.widths, strict=True)):
            # (the kernel reads b rows of k floats: the checks that make that safe)
            if x.dtype is not torch.float32 or not x.is_cpu or x.dim() != 2 or x.shape[0] != b or x.shape[1] != k:
                raise ValueError(f"input {tuple(x.shape)} {x.dtype} {x.device}: need ({b}, {k}) float32 on the CPU")
            if not x.is_contiguous():
                x = x.contiguous()
                held.append(x)
            ptrs[2 * i], ptrs[2 * i + 1] = x.data_ptr(), k
        return ptrs, held

    def __call__(self, *xs: Tensor, add: Tensor | None = None) -> Tensor:
        if xs and xs[0].dim() == 2 and xs[0].shape[0] == 0:  # no rows (an empty tensor has no data pointer)
            self._inputs(xs)
            return torch.empty(0, self.n, dtype=torch.float32)
        if add is None and len(xs) == 1 == len(self.widths):  # (the common case, with the fewest Python steps)
            x = xs[0]
            k = self.widths[0]
            if x.dtype is torch.float32 and x.is_cpu and x.dim() == 2 and x.shape[1] == k and x.is_contiguous():
                b = x.shape[0]
                y = torch.empty(b, self.n, dtype=torch.float32)
                if self._fn(self._ref, b, x.data_ptr(), k, None, 0, None, 0, None, 0, y.data_ptr()):
                    raise RuntimeError("vrnn_layer refused its arguments")
                return y
        ptrs, _held = self._inputs(xs)  # (_held: copies alive until the call returns)
        b = xs[0].shape[0]
        add_ptr = None
        if add is not None:
            if add.dtype is not torch.float32 or not add.is_cpu or add.shape != (b, self.n) or not add.is_contiguous():
                raise ValueError(f"add {tuple(add.shape)}: need ({b}, {self.n}) float32, contiguous, on the CPU")
            add_ptr = add.data_ptr()
        y = torch.empty(b, self.n, dtype=torch.float32)
        if self._fn(self._ref, b, *ptrs, add_ptr, self.n, y.data_ptr()) != 0:
            raise RuntimeError("vrnn_layer refused its arguments")
        return y

    def lstm(self, *xs: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """An LSTM cell whose gates are this product (PyTorch's gate order i, f, g, o; n = 4H, no ReLU): (h', c')
        from the inputs and the cell state c (B, H), the gates' nonlinearities in the kernel too (its own exp,
        about 2 ulp; every element by the same operations, so a row's values do not depend on the batch)."""
        if self._layer.relu or self.n % 4:
            raise ValueError("an LSTM's gates: a product of 4H outputs without ReLU")
        ptrs, _held = self._inputs(xs)  # (_held: copies alive until the call returns)
        b, hidden = xs[0].shape[0], self.n // 4
        if c.dtype is not torch.float32 or not c.is_cpu or c.shape != (b, hidden) or c.stride(1) != 1:
            raise ValueError(f"c {tuple(c.shape)}: need ({b}, {hidden}) float32 with contiguous rows on the CPU")
        if b == 0:
            return torch.empty(0, hidden), torch.empty(0, hidden)
        gates = torch.empty(b, self.n, dtype=torch.float32)
        h2 = torch.empty(b, hidden, dtype=torch.float32)
        c2 = torch.empty(b, hidden, dtype=torch.float32)
        rc = self._lib.lstm(
            self._ref, b, *ptrs, c.data_ptr(), c.stride(0), gates.data_ptr(), h2.data_ptr(), c2.data_ptr()
        )
        if rc != 0:
            raise RuntimeError("vrnn_lstm refused its arguments")
        return h2, c2


# Products made for a model's weights, keyed by each weight's memory, shape, strides and version: a change in place
# (an optimiser step, load_state_dict) makes a new one; a dropped model drops them.
_PRODUCTS: weakref.WeakKeyDictionary[object, dict[tuple, Product]] = weakref.WeakKeyDictionary()


def _key(t: Tensor) -> tuple:
    # (an inference tensor keeps no version counter: weights loaded under inference_mode are not trained)
    return (t.data_ptr(), tuple(t.shape), t.stride(), -1 if t.is_inference() else t._version)


def product(owner: object, blocks: Sequence[Tensor], bias: Bias = None, relu: bool = False) -> Product:
    """A `Product` for these weights of `owner` (the model, which keeps them alive), made once and kept while the
    weights stay as they are."""
    biases = [] if bias is None else [bias] if isinstance(bias, Tensor) else list(bias)
    key = (tuple(_key(w) for w in blocks), tuple(_key(b) for b in biases), relu)
    with _PRODUCTS_LOCK:
        made = _PRODUCTS.setdefault(owner, {})
        if key not in made:
            stale = [k for k in made if k[0][0][:3] == key[0][0][:3] and k != key]  # earlier versions of these weights
            for k in stale:
                del made[k]
            made[key] = Product(blocks, bias, relu)
        return made[key]


def _self_check(fn: Kernels) -> str:
    """'' when the kernels agree with torch (to float32 rounding: a layer, an LSTM cell) and give a row the same bits
    alone and in batches of every size up to 9; else what failed. 77 outputs take every kind of column block of
    both builds (wide, narrow, a partial one)."""
    g = torch.Generator().manual_seed(0)
    n, ks = 77, (19, 5)
    ws = [torch.randn(n, k, generator=g) for k in ks]
    bias = torch.randn(n, generator=g)
    xs = [torch.randn(9, k, generator=g) for k in ks]
    add = torch.randn(9, n, generator=g)
    cell = [torch.randn(4 * n, k, generator=g) * 0.3 for k in ks]
    cell_bias = torch.randn(4 * n, generator=g)
    c = torch.randn(9, n, generator=g)
    p = Product.around(fn, ws, bias, relu=True)  # (library() is still being opened)
    q = Product.around(fn, cell, cell_bias)
    try:
        whole = p(*xs, add=add)
        want = torch.relu(add + xs[0] @ ws[0].t() + xs[1] @ ws[1].t() + bias)
        if not torch.allclose(whole, want, rtol=1e-5, atol=1e-4):
            return f"a layer differs from torch by {(whole - want).abs().max().item():.3g}"
        h2, c2 = q.lstm(*xs, c=c)
        # (the cell's inputs side by side, no recurrent weights: torch.lstm_cell's own arithmetic as the reference)
        x, h0, w_hh = torch.cat(xs, 1), torch.zeros(9, n), torch.zeros(4 * n, n)
        want_h, want_c = torch.lstm_cell(x, (h0, c), torch.cat(cell, 1), w_hh, cell_bias, torch.zeros(4 * n))
        if not (torch.allclose(h2, want_h, rtol=1e-5, atol=1e-5) and torch.allclose(c2, want_c, rtol=1e-5, atol=1e-5)):
            return "an LSTM cell differs from torch's"
        for m in range(1, 9):
            for start in (0, 9 - m):
                rows = slice(start, start + m)
                if not torch.equal(p(*(x[rows] for x in xs), add=add[rows]), whole[rows]):
                    return f"rows {start}:{start + m} alone differ from the same rows in the batch of 9"
                if not torch.equal(q.lstm(*(x[rows] for x in xs), c=c[rows])[0], h2[rows]):
                    return f"an LSTM cell's rows {start}:{start + m} alone differ from the same rows in the batch"
    except (RuntimeError, ValueError) as e:
        return str(e)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.native",
        description="The row-invariant products of the sampling step (model/kernels/rowgemm.c): say whether they "
        "are in use on this machine, or build them ahead of time (the Docker image does).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="whether the native products are in use here, and which build or why not")
    b = sub.add_parser(
        "build", help="compile the library for each instruction set into DIR (default: beside the source)"
    )
    b.add_argument("dir", nargs="?", type=Path, default=SOURCE.parent)
    b.add_argument("--levels", nargs="+", default=list(_LEVELS), choices=list(_LEVELS), help="default: all")
    args = parser.parse_args(argv)
    if args.command == "status":
        print(status())
        return 0 if library() is not None else 1
    for lvl in args.levels:
        try:
            print(build(lvl, args.dir))
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
