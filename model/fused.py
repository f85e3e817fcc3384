"""The whole sampling step of a VRNN in one native call: `model/kernels/rowgemm.c`'s `vrnn_sample`.

`model.stepper` runs a step as a dozen products and some forty PyTorch operations (the output head's parameters,
the mixture draw), each paying Python's and PyTorch's per-call overhead, which is most of a step at the demo models'
sizes. Where `model.native`'s library runs (float32 on an x86-64 CPU with AVX2 + FMA and a C compiler), `FusedSampler`
runs T steps of B rows in one call: the same row-invariant products, and the draw in the kernel's own scalar code.
So a row's sample is the same alone or in any batch (the engine's batches, `VRNN.sample`'s rows), and 700 handwriting
steps take a few milliseconds of arithmetic instead of a few hundred of overhead (docs/BENCHMARKS.md).

The random numbers come from the request's own `torch.Generator`, drawn ahead `CHUNK` steps at a time per row: for
steps [s, s + CHUNK), `torch.randn((1, CHUNK, normals))` then `torch.rand((1, CHUNK, uniforms))` (with a plain
generator and N rows, one call each for all rows: (N, CHUNK, .)), whatever the steps left, so that a sample of n
steps is the first n steps of a longer one with the same seed. Each step of a row reads `normals`
standard normals (the z noise of a VRNN, then 2 for a pen offset or D for a frame) and `uniforms` uniforms (one per
mixture component, then one for the pen bit); the kernel turns them into the draw (its comment says how). A seed's
sample therefore differs from the PyTorch stepper's (other products, other uses of the stream): both are exact
samples of the model, and `VRNN.sample` and the engine use the same one wherever the library runs.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import defaults, native
from .distributions import RowGenerators
from .networks import MLP, BivariateOutput, DiagonalGaussianOutput

if TYPE_CHECKING:
    from .conditional import TextVRNN
    from .vrnn import VRNN

CHUNK = 64  # steps of random numbers a row draws at a time
MAX_LAYERS = 4  # the kernel's layers per MLP
MODES = {"sample": 0, "component-mean": 1, "mean": 2}  # vrnn.SAMPLE_MODES -> the kernel's mode

_Ptr = ctypes.c_void_p


class _Net(ctypes.Structure):
    """The kernel's `net`: a model's sizes and its products' layers."""

    _fields_ = [
        *((name, ctypes.c_int) for name in ("H", "Z", "D", "W", "K", "P", "speech", "latent", "prior")),
        *((name, ctypes.c_int) for name in ("n_phi_x", "n_phi_z", "n_prior", "n_dec")),
        *((name, _Ptr * MAX_LAYERS) for name in ("phi_x", "phi_z", "prior_net", "dec")),
        *((name, _Ptr) for name in ("prior_head", "head", "lstm")),
        *((name, ctypes.c_float) for name in ("prior_floor", "floor", "rho_limit")),
    ]


class _TextNet(ctypes.Structure):
    """The kernel's `text_net`: a text model's `net` (its LSTM's input product over [phi_x | phi_z | w] as one
    block), the alphabet's size, the window's components and its layer."""

    _fields_ = [
        ("base", _Net),
        ("A", ctypes.c_int),
        ("C", ctypes.c_int),
        ("win", _Ptr),
        ("n_enc", ctypes.c_int),
        ("enc", _Ptr * MAX_LAYERS),
        ("enc_head", _Ptr),
        ("enc_floor", ctypes.c_float),
    ]


def _mlp_fits(net: MLP | None, width: int) -> bool:
    layers = [] if net is None else list(net.layers)
    return (
        net is not None
        and 1 <= len(layers) <= MAX_LAYERS
        and all(isinstance(m, nn.Linear) and m.out_features == width for m in layers)
    )


def _fits(model: Any, cls: Any, heads: Any) -> bool:
    """A plain `cls` (not a `model.rowwise` copy) in float32 on the CPU, with the native library, MLPs the kernel
    takes and an output head of `heads`."""
    from .stepper import reads

    if type(model) is not cls or not reads(model):
        return False
    like = torch.empty(0, dtype=model._dtype(), device=model.device)
    if not native.usable(like):
        return False
    W = model.config.mlp_width
    nets = [model.phi_x, model.decoder.net]
    if model.phi_z is not None:
        nets += [model.phi_z] + ([model.prior.net] if model.prior is not None else [])
    return all(_mlp_fits(n, W) for n in nets) and isinstance(model.decoder.head, heads)


def supports(model: Any) -> bool:
    """Whether `model` samples through the fused step here: a plain `VRNN` (not a text model, not a `model.rowwise`
    copy) in float32 on the CPU, with the native library, and MLPs the kernel takes."""
    from .vrnn import VRNN

    return _fits(model, VRNN, BivariateOutput | DiagonalGaussianOutput)


def supports_text(model: Any) -> bool:
    """Whether a text model samples through the fused step here (`text_sample`): a plain `TextVRNN` in float32 on
    the CPU, with the native library, and MLPs the kernel takes."""
    from .conditional import TextVRNN

    return _fits(model, TextVRNN, BivariateOutput) and isinstance(model.window.params, nn.Linear)


class _Weights:
    """The kernel's layers of one model (`native.product`s, kept alive while a net points at them)."""

    def __init__(self, model: Any):
        self.model = model
        self.products: list[native.Product] = []

    def layer(self, blocks: Sequence[Tensor], bias: Any, relu: bool) -> int:
        p = native.product(self.model, blocks, bias, relu=relu)
        self.products.append(p)
        return ctypes.addressof(p._layer)

    def mlp(self, net: MLP | None) -> tuple[int, Any]:
        """(layers, the kernel's array of their addresses) of an MLP (ReLU after each), its first layer by blocks."""
        if net is None:
            return 0, (_Ptr * MAX_LAYERS)()
        layers = [m for m in net.layers if isinstance(m, nn.Linear)]
        first = self.layer(net.first_layer_blocks(), layers[0].bias, True)
        ptrs = [first, *(self.layer([m.weight], m.bias, True) for m in layers[1:])]
        return len(ptrs), (_Ptr * MAX_LAYERS)(*ptrs)

    def net(self, lstm_blocks: Sequence[Tensor]) -> _Net:
        """The kernel's `net` of a VRNN or TextVRNN, its LSTM's input product over `lstm_blocks` (then h)."""
        model = self.model
        cfg, head, rnn = model.config, model.decoder.head, model.rnn
        assert isinstance(head, BivariateOutput | DiagonalGaussianOutput)
        n_phi_x, phi_x = self.mlp(model.phi_x)
        n_phi_z, phi_z = self.mlp(model.phi_z)
        n_prior, prior = self.mlp(None if model.prior is None else model.prior.net)
        n_dec, dec = self.mlp(model.decoder.net)
        prior_head = 0
        if model.prior is not None:
            lin = model.prior.hidden_to_params
            prior_head = self.layer([lin.weight], lin.bias, False)
        head_linear = head.hidden_to_params
        assert isinstance(head_linear, nn.Linear)
        return _Net(
            H=cfg.h_dim,
            Z=cfg.z_dim,
            D=cfg.x_dim,
            W=cfg.mlp_width,
            K=int(head.k),
            P=head_linear.out_features,
            speech=int(isinstance(head, DiagonalGaussianOutput)),
            latent=int(model.phi_z is not None),
            prior=int(model.prior is not None),
            n_phi_x=n_phi_x,
            n_phi_z=n_phi_z,
            n_prior=n_prior,
            n_dec=n_dec,
            phi_x=phi_x,
            phi_z=phi_z,
            prior_net=prior,
            dec=dec,
            prior_head=prior_head,
            head=self.layer([head_linear.weight], head_linear.bias, False),
            lstm=self.layer([*lstm_blocks, rnn.weight_hh], (rnn.bias_ih, rnn.bias_hh), False),
            prior_floor=model.prior.std_floor if model.prior is not None else 0.0,
            floor=head.std_floor,
            rho_limit=defaults.RHO_LIMIT,
        )


class FusedSampler:
    """`vrnn_sample` for one model's weights as they are when it is made (make a new one after they change:
    `native.product` keeps the products, so that is cheap)."""

    def __init__(self, model: VRNN):
        if not supports(model):
            raise ValueError("this model does not sample through the fused step here (fused.supports)")
        self._setup(model)
        W = model.config.mlp_width
        rnn = model.rnn
        self._net = self._weights.net(list(rnn.weight_ih.split([W, W], dim=1)) if self.latent else [rnn.weight_ih])
        self._ref = ctypes.byref(self._net)
        self._scratch_floats = self._lib.sample_scratch

    def _setup(self, model: Any) -> None:
        lib = native.library()
        assert lib is not None
        self._lib = lib
        cfg = model.config
        head = model.decoder.head
        assert isinstance(head, BivariateOutput | DiagonalGaussianOutput)
        self.speech = isinstance(head, DiagonalGaussianOutput)
        self.latent = model.phi_z is not None
        self.x_dim, self.z_dim, self.h_dim = cfg.x_dim, cfg.z_dim, cfg.h_dim
        k = int(head.k)
        self.normals = (self.z_dim if self.latent else 0) + (self.x_dim if self.speech else 2)
        self.uniforms = max(1, (k if k > 1 else 0) + (0 if self.speech else 1))
        self._weights = _Weights(model)

    def _scratch(self, rows: int) -> Tensor:
        """The kernel's working memory for a call over `rows` rows (its `*_scratch` function says how many floats)."""
        return torch.empty(int(self._scratch_floats(self._ref, rows)), dtype=torch.float32)

    # ------------------------------------------------------------------ random numbers

    def randoms(
        self, generator: torch.Generator | RowGenerators | None, rows: int, steps: int
    ) -> tuple[Tensor, Tensor]:
        """The normals (rows, steps, normals) and uniforms (rows, steps, uniforms) of `steps` steps (a chunk: CHUNK),
        row r from generator r with RowGenerators."""
        if isinstance(generator, RowGenerators):
            if len(generator) != rows:
                raise ValueError(f"{len(generator)} row generators for {rows} rows")
            parts = [self.randoms(g, 1, steps) for g in generator.generators]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        normals = torch.randn((rows, steps, self.normals), generator=generator)
        return normals, torch.rand((rows, steps, self.uniforms), generator=generator)

    def randoms_ahead(self, generator: torch.Generator, rows: int, steps: int) -> tuple[Tensor, Tensor]:
        """The numbers of the first `steps` steps (rounded up to whole chunks) drawn now: the chunks `randoms` draws
        one after another, side by side, so each row's numbers are contiguous over its steps (a call of several
        steps reads them in order). The same numbers as drawing each chunk when it is reached."""
        parts = [self.randoms(generator, rows, CHUNK) for _ in range(max(1, -(-steps // CHUNK)))]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    @staticmethod
    def settings(mode: str, temperature: float, bias: float) -> tuple[int, float, float]:
        """The kernel's (mode, factor, scale) for a draw: stds times temperature * exp(-bias), logits times
        (1 + bias) / temperature (`distributions.sharpen`)."""
        return MODES[mode], temperature * math.exp(-bias), (1.0 + bias) / temperature

    # ------------------------------------------------------------------ steps

    def call(
        self,
        h: Tensor,
        c: Tensor,
        steps: int,
        normals: Sequence[int],
        uniforms: Sequence[int],
        outs: Sequence[int],
        settings: tuple[Any, Any, Any],
    ) -> None:
        """`steps` steps of the rows of h, c (B, H) float32, contiguous, updated in place. normals, uniforms, outs:
        each row's addresses (its first step's numbers; its first step's frame, written); settings: ctypes arrays of
        the rows' modes, factors and scales (`arrays`). The caller vouches for every address (`sample` checks)."""
        b = h.shape[0]
        scratch = self._scratch(b)
        ptrs = _Ptr * b
        rc = self._lib.sample(
            self._ref,
            b,
            steps,
            h.data_ptr(),
            c.data_ptr(),
            ptrs(*normals),
            self.normals,
            ptrs(*uniforms),
            self.uniforms,
            *settings,
            ptrs(*outs),
            self.x_dim,
            scratch.data_ptr(),
        )
        if rc != 0:
            raise RuntimeError("vrnn_sample refused the model")

    @staticmethod
    def arrays(settings: Sequence[tuple[int, float, float]]) -> tuple[Any, Any, Any]:
        """ctypes arrays of the rows' (mode, factor, scale) (`settings`)."""
        n = len(settings)
        return (
            (ctypes.c_int * n)(*(s[0] for s in settings)),
            (ctypes.c_float * n)(*(s[1] for s in settings)),
            (ctypes.c_float * n)(*(s[2] for s in settings)),
        )

    def _check_state(self, h: Tensor, c: Tensor) -> None:
        for name, t in (("h", h), ("c", c)):
            if t.dtype != torch.float32 or not t.is_cpu or t.dim() != 2 or t.shape[1] != self.h_dim:
                raise ValueError(f"{name} {tuple(t.shape)} {t.dtype}: need (B, {self.h_dim}) float32 on the CPU")
            if not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous (it is updated in place)")
        if h.shape != c.shape or h.data_ptr() == c.data_ptr():
            raise ValueError("h and c: two tensors of the same shape")

    def sample(
        self,
        h: Tensor,
        c: Tensor,
        steps: int,
        generator: torch.Generator | RowGenerators | None,
        mode: str,
        temperature: float,
        bias: float,
    ) -> Tensor:
        """(B, steps, x_dim) from the state h, c (B, H; updated in place), every row drawing with the same settings;
        the random numbers CHUNK steps at a time (the module's docstring)."""
        self._check_state(h, c)
        b = h.shape[0]
        out = torch.empty(b, steps, self.x_dim, dtype=torch.float32)
        settings = self.arrays([self.settings(mode, temperature, bias)] * b)
        for start in range(0, steps, CHUNK):
            nrm, uni = self.randoms(generator, b, CHUNK)
            n = min(CHUNK, steps - start)
            self.call(h, c, n, row_addresses(nrm), row_addresses(uni), row_addresses(out, start * self.x_dim), settings)
        return out


class FusedTextSampler(FusedSampler):
    """`text_sample` for one text model's weights as they are when it is made: T steps of B rows, each row writing
    its own line (its characters, its window), the random numbers drawn as `FusedSampler` draws them."""

    def __init__(self, model: TextVRNN):
        if not supports_text(model):
            raise ValueError("this model does not sample through the fused step here (fused.supports_text)")
        self._setup(model)
        base = self._weights.net([model.rnn.weight_ih])  # [phi_x | phi_z | w], the kernel's rnn_in
        win = model.window.params
        self.alphabet, self.components = len(model.config.alphabet), model.window.components
        enc = model.encoder
        n_enc, enc_layers = self._weights.mlp(None if enc is None else enc.net)
        enc_head = 0
        if enc is not None:
            enc_head = self._weights.layer([enc.hidden_to_params.weight], enc.hidden_to_params.bias, False)
        self._text = _TextNet(
            base=base,
            A=self.alphabet,
            C=self.components,
            win=self._weights.layer([win.weight], win.bias, False),
            n_enc=n_enc,
            enc=enc_layers,
            enc_head=enc_head,
            enc_floor=0.0 if enc is None else enc.std_floor,
        )
        self._ref = ctypes.byref(self._text)
        self._scratch_floats = self._lib.text_sample_scratch  # (text_prime's too)

    def prime(
        self, state: tuple[Tensor, Tensor, Tensor], codes: Sequence[Tensor], x: Tensor, eps: Tensor | None
    ) -> None:
        """Read the prime x (T, 3) float32 (the same line for every row) through the posterior from state = (h, c,
        kappa) (B rows, updated in place), row b's window over `codes[b]` and its noise eps[b] (B, T, Z; None
        without a latent): `text_prime`, as `TextVRNN._step` reads a prime."""
        self.check_state(state)
        h, c, kappa = state
        b, steps = h.shape[0], x.shape[0]
        if x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != self.x_dim or not x.is_contiguous():
            raise ValueError(f"the prime must be contiguous ({steps}, {self.x_dim}) float32")
        if self.latent and (eps is None or tuple(eps.shape) != (b, steps, self.z_dim) or not eps.is_contiguous()):
            raise ValueError(f"the prime's noise must be contiguous ({b}, {steps}, {self.z_dim}) float32")
        held = self._codes(codes, b)
        scratch = self._scratch(b)
        ptrs = _Ptr * b
        rc = self._lib.text_prime(
            self._ref,
            b,
            steps,
            h.data_ptr(),
            c.data_ptr(),
            kappa.data_ptr(),
            ptrs(*(cd.data_ptr() for cd in held)),
            (ctypes.c_int * b)(*(len(cd) for cd in held)),
            x.data_ptr(),
            ptrs(*(row_addresses(eps) if eps is not None else [0] * b)),
            scratch.data_ptr(),
        )
        if rc != 0:
            raise RuntimeError("text_prime refused the model")

    def _codes(self, codes: Sequence[Tensor], b: int) -> list[Tensor]:
        """Each row's characters as contiguous int32, checked (the kernel indexes w by them)."""
        if len(codes) != b or any(cd.dim() != 1 or not len(cd) >= 1 for cd in codes):
            raise ValueError(f"need {b} lines of at least one character")
        held = [cd.to(torch.int32).contiguous() for cd in codes]
        if any(int(cd.min()) < 0 or int(cd.max()) >= self.alphabet for cd in held):
            raise ValueError(f"character indices must be in [0, {self.alphabet})")
        return held

    def buffers(self, codes: Sequence[Tensor], cap: int) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """What `text_sample` reads and writes for lines of these characters over at most `cap` steps: each row's
        characters (`_codes`), the frames (B, cap, 3) and each row's window weights (cap, U_b), to be filled."""
        held = self._codes(codes, len(codes))
        out = torch.empty(len(held), cap, self.x_dim, dtype=torch.float32)
        return held, out, [torch.empty(cap, len(cd), dtype=torch.float32) for cd in held]

    def call_text(
        self,
        state: tuple[Tensor, Tensor, Tensor],
        steps: int,
        codes: Sequence[int],
        lengths: Any,
        done: Any,
        ended: Any,
        normals: Sequence[int],
        uniforms: Sequence[int],
        outs: Sequence[int],
        phis: Sequence[int],
        settings: tuple[Any, Any, Any],
    ) -> int:
        """`steps` steps of the rows of state = (h, c, kappa) (B, H), (B, H), (B, C) float32, contiguous, updated in
        place -> the steps run (fewer once every row is done). codes: each row's int32 characters' address; lengths,
        done, ended: ctypes int arrays (done in and out, ended written for rows that finish); normals, uniforms,
        outs, phis: each row's addresses (phis: its first step's U floats). The caller vouches for every address."""
        h, c, kappa = state
        b = h.shape[0]
        scratch = self._scratch(b)
        ptrs = _Ptr * b
        ran = self._lib.text_sample(
            self._ref,
            b,
            steps,
            h.data_ptr(),
            c.data_ptr(),
            kappa.data_ptr(),
            ptrs(*codes),
            lengths,
            done,
            ended,
            ptrs(*normals),
            self.normals,
            ptrs(*uniforms),
            self.uniforms,
            *settings,
            ptrs(*outs),
            self.x_dim,
            ptrs(*phis),
            scratch.data_ptr(),
        )
        if ran < 0:
            raise RuntimeError("text_sample refused the model")
        return int(ran)

    def check_state(self, state: tuple[Tensor, Tensor, Tensor]) -> None:
        h, c, kappa = state
        self._check_state(h, c)
        if kappa.dtype != torch.float32 or not kappa.is_cpu or tuple(kappa.shape) != (h.shape[0], self.components):
            raise ValueError(
                f"kappa {tuple(kappa.shape)} {kappa.dtype}: need ({h.shape[0]}, {self.components}) float32"
            )
        if not kappa.is_contiguous():
            raise ValueError("kappa must be contiguous (it is updated in place)")

    def lines(
        self,
        state: tuple[Tensor, Tensor, Tensor],
        codes: Sequence[Tensor],
        cap: int,
        generator: torch.Generator | RowGenerators | None,
        mode: str,
        temperature: float,
        bias: float,
    ) -> tuple[Tensor, list[Tensor], list[int], list[bool]]:
        """Write B lines (row b: the characters `codes[b]`, indices into the alphabet) from state = (h, c, kappa)
        (updated in place) for at most `cap` steps, until every line's stopping rule has fired -> (frames (B, T, 3)
        of the T steps run, each row's window weights (T, U_b), the steps each row wrote (its rule's step + 1, or
        cap), whether its rule fired). The random numbers CHUNK steps at a time, as `sample` draws them."""
        self.check_state(state)
        b = state[0].shape[0]
        if len(codes) != b:
            raise ValueError(f"need {b} lines of at least one character")
        held, out, phis = self.buffers(codes, cap)
        lengths = (ctypes.c_int * b)(*(len(cd) for cd in held))
        done, ended = (ctypes.c_int * b)(), (ctypes.c_int * b)()
        ended_at = [cap] * b
        settings = self.arrays([self.settings(mode, temperature, bias)] * b)
        ran = 0
        for start in range(0, cap, CHUNK):
            nrm, uni = self.randoms(generator, b, CHUNK)
            before = list(done)
            n = self.call_text(
                state,
                min(CHUNK, cap - start),
                [cd.data_ptr() for cd in held],
                lengths,
                done,
                ended,
                row_addresses(nrm),
                row_addresses(uni),
                row_addresses(out, start * self.x_dim),
                [p.data_ptr() + start * p.shape[1] * 4 for p in phis],
                settings,
            )
            ran = start + n
            for r in range(b):
                if done[r] and not before[r]:
                    ended_at[r] = start + ended[r] + 1
            if all(done):
                break
        return out[:, :ran], [p[:ran] for p in phis], ended_at, [bool(d) for d in done]


def row_addresses(t: Tensor, first: int = 0) -> list[int]:
    """The address of each row of a contiguous float32 tensor (B, ...), `first` floats into the row: `call`'s
    per-row arguments."""
    row = t.stride(0) * 4
    return [t.data_ptr() + r * row + first * 4 for r in range(t.shape[0])]
