"""Continuous batching of sampling requests at step level, without changing what a seed gives.

Requests for one model join a running batch at a step boundary; a row whose request has all its steps leaves,
and a waiting request takes its place. Each row keeps its own random stream (`distributions.RowGenerators`) and
the arithmetic is row-invariant, so every request returns bit for bit what
`model.sample(num_samples=1, generator=torch.Generator().manual_seed(seed), ...)` returns alone, whichever
requests it shared steps with (tests/model/test_engine.py). A paired model (`VRNN.samples_paired`: where this
machine's kernels keep a batch's bits, the speech models on the Intel Xeon) computes every step of every batch on
`model.paired`'s products, a batch costing little more than a row (there: 16 speech rows of 160 steps 2.2x one
row); the others compute a batch row by row (`model.rowwise`: 5.6x there; on the AMD EPYC, where no model pairs,
16 speech rows cost 8.7x one row). Where `model.native`'s library runs, a paired `VRNN`'s step is one native call
for the whole batch (`model.fused`), each row reading its own generator's numbers and writing its frame in place.

    engine = SamplingEngine(model, max_batch=16, max_wait_s=0.0).start()   # a background thread
    future = engine.submit(steps=160, seed=7, temperature=1.0)             # concurrent.futures.Future
    frames = future.result()                                               # (160, x_dim), normalised space
    engine.stop()

Rows of a step are grouped by (mode, temperature, bias) for the output draw, so requests with different
settings share the recurrence. A primed request reads its prime alone (through the posterior, with its own
generator) before it joins. `stats` counts steps, rows per step (the batch-size histogram) and queue waits.
"""

from __future__ import annotations

import bisect
import collections
import ctypes
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Self, cast

import torch
from torch import Tensor

from .conditional import TextVRNN
from .distributions import RowGenerators, randn
from .fused import FusedSampler, FusedTextSampler, supports_text
from .fused import supports as fused_supports
from .rowwise import rowwise_copy
from .runtime import apply_threads
from .stepper import LoneRow, Stepper, first_row
from .vrnn import VRNN, draw, sampling_mode


@dataclass
class _Request:
    steps: int
    generator: torch.Generator
    temperature: float
    bias: float
    mode: str
    prime: Tensor | None
    future: Future
    submitted: float = field(default_factory=time.monotonic)
    out: list[Tensor] = field(default_factory=list)
    # the fused step's (model.fused): the result, filled in place, and the random numbers of all its steps
    result: Tensor | None = None
    done: int = 0
    chunk: tuple[Tensor, Tensor] | None = None


# The most steps one native call of an engine runs (model.fused: one call per step costs Python's overhead per step;
# several in one call cost a waiting request at most this many steps before it joins).
MAX_CALL_STEPS = 16
WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT_WAITS = 1000


@dataclass
class EngineStats:
    steps: int = 0
    requests: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)  # rows per step -> steps
    # submit -> joined the batch, per request: the latest RECENT_WAITS, and all of them as a histogram
    # (counts per WAIT_BUCKETS_S upper bound, the last one above them all) with their sum, in bounded memory
    queue_wait_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_WAITS))
    wait_counts: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS_S) + 1))
    wait_sum_s: float = 0.0

    def mean_batch(self) -> float:
        total = sum(self.batch_sizes.values())
        return sum(k * v for k, v in self.batch_sizes.items()) / total if total else 0.0

    def record_steps(self, rows: int, steps: int = 1) -> None:
        """`steps` steps of a batch of `rows` rows ran."""
        self.steps += steps
        self.batch_sizes[rows] += steps

    def record_wait(self, seconds: float) -> None:
        self.queue_wait_s.append(seconds)
        self.wait_counts[bisect.bisect_left(WAIT_BUCKETS_S, seconds)] += 1
        self.wait_sum_s += seconds

    def snapshot(self) -> dict:
        """A copy safe to take from another thread while the engine runs: {"steps", "requests",
        "batch_sizes": {rows: steps}, "wait_buckets_s", "wait_counts", "wait_sum_s"}."""
        sizes: dict[int, int] = {}
        for _ in range(10):
            try:
                sizes = dict(self.batch_sizes)
                break
            except RuntimeError:  # the engine added a new batch size while this copied
                continue
        return {
            "steps": self.steps,
            "requests": self.requests,
            "batch_sizes": sizes,
            "wait_buckets_s": WAIT_BUCKETS_S,
            "wait_counts": list(self.wait_counts),
            "wait_sum_s": self.wait_sum_s,
        }


class BatchThread:
    """What the batchers share (`SamplingEngine`, `scoring.ScoringBatcher`): requests queued behind a condition, a
    daemon thread running the subclass's `_loop`, `stop`, liveness, and stepping in the caller's thread."""

    thread_name = "vrnn-batcher"

    def __init__(self) -> None:
        self._waiting: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def _enqueue(self, request: Any) -> Future:
        with self._cond:
            self._waiting.append(request)
            self._cond.notify_all()
        return request.future

    def start(self) -> Self:
        """Run the batch loop in a daemon thread (until `stop`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop once it holds no request (it finishes those it has) and wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the batch loop's thread is running (started, not stopped, not dead)."""
        return self._thread is not None and self._thread.is_alive()

    def run_until_idle(self) -> None:
        """Step in the calling thread until nothing is waiting or running (tests, batch jobs)."""
        while self.step():
            pass

    def step(self) -> bool:
        raise NotImplementedError

    def _loop(self) -> None:
        raise NotImplementedError


class StepEngine(BatchThread):
    """The step loop the sampling engines share: admit waiting requests at a step boundary, run one step of every
    row, finish the rows that are done (`_admit`, `_step`, `_clear`: the subclass's; `_rows`: what it runs)."""

    threads: int
    max_wait_s: float
    max_batch: int
    _rows: list

    # ------------------------------------------------------------------ the batch loop

    def _loop(self) -> None:
        apply_threads(self.threads)  # this thread's own OpenMP setting (model.runtime): its creator's
        while True:
            with self._cond:
                while not self._waiting and not self._rows and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._waiting and not self._rows:
                    return
                first = self._waiting[0] if self._waiting and not self._rows else None
            if first is not None and self.max_wait_s > 0:  # an idle engine lets companions arrive
                time.sleep(max(0.0, first.submitted + self.max_wait_s - time.monotonic()))
            self.step()

    def _steps_now(self, left: int, rows: int) -> int:
        """How many steps the next native call runs: up to MAX_CALL_STEPS, no more than any row has left, and one
        while a request waits for a free row (it joins at the next step boundary)."""
        if self.max_batch > rows:
            with self._cond:
                if self._waiting:
                    return 1
        return max(1, min(left, MAX_CALL_STEPS))

    def _admit(self) -> None:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

    def _fail(self, e: Exception) -> None:
        """A fault of a step fails the requests in it; the engine keeps serving, its batch emptied (`_clear`)."""
        for r in self._rows:
            if not r.future.done():
                r.future.set_exception(e)
        self._clear()

    def _clear(self) -> None:
        raise NotImplementedError

    def step(self) -> bool:
        """Admit waiting requests, run one step for every row, finish rows that are done. False when idle."""
        with torch.inference_mode():  # (once per step: entering it costs as much as a small product)
            self._admit()
            if not self._rows:
                return False
            try:
                self._step()
            except Exception as e:
                self._fail(e)
        return True


class SamplingEngine(StepEngine):
    thread_name = "vrnn-sampling-engine"

    def __init__(self, model: VRNN, max_batch: int = 16, max_wait_s: float = 0.0, paired: bool | None = None):
        if max_batch < 1 or not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        super().__init__()
        self.model = model.eval()
        # A paired model (VRNN.samples_paired) runs every step of every batch through the paired stepper, whose rows
        # are their solo bits at any batch; the others run a lone row through the plain stepper and a batch through
        # a copy of the same class that is row-invariant inside (model.rowwise).
        # decided at this thread's thread count, which the batch loop then takes too (model.runtime.apply_threads): a
        # kernel's choice, and so whether pairing pays, depends on it
        self.threads = torch.get_num_threads()
        self.paired = model.samples_paired if paired is None else paired  # (VRNN.sample's `paired` must agree)
        # where the library runs, a paired model's steps are one native call for the whole batch (model.fused);
        # elsewhere the stepper's, a row-invariant copy's and a lone paired row's (above a zero row), made only then
        self.fused = FusedSampler(self.model) if self.paired and fused_supports(self.model) else None
        if self.fused is None:
            self.fast = cast(VRNN, rowwise_copy(self.model))
            self.stepper = Stepper(self.model, paired=self.paired)
            self._lone = LoneRow(self.model)
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.stats = EngineStats()
        self._rows: list[_Request] = []
        self._h: Tensor | None = None
        self._c: Tensor | None = None
        self._settings: Any = None  # the fused step's ctypes arrays of the rows' draw settings

    # ------------------------------------------------------------------ client side

    def submit(
        self,
        steps: int,
        seed: int | None = None,
        temperature: float = 1.0,
        bias: float = 0.0,
        mean: bool | str = False,
        prime: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Future:
        """Queue one sample of `steps` steps; its Future's result is (steps, x_dim) in the normalised space.
        Arguments as `VRNN.sample` with num_samples=1 (`seed` makes the generator when none is given)."""
        mode = sampling_mode(steps, temperature, bias, mean)
        if prime is not None and (prime.dim() != 2 or prime.shape[1] != self.model.config.x_dim or not len(prime)):
            raise ValueError(f"prime must be (T0, {self.model.config.x_dim}), got {tuple(prime.shape)}")
        if generator is None:
            generator = torch.Generator(device=self.model.device)
            if seed is not None:
                generator.manual_seed(seed)
        return self._enqueue(_Request(steps, generator, float(temperature), float(bias), mode, prime, Future()))

    def _clear(self) -> None:
        self._rows, self._h, self._c, self._settings = [], None, None, None

    def _admit(self) -> None:
        joined: list[tuple[_Request, Tensor, Tensor]] = []
        while len(self._rows) + len(joined) < self.max_batch:
            with self._cond:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            if not request.future.set_running_or_notify_cancel():
                continue
            try:
                h, c = self._start_state(request)
            except Exception as e:
                request.future.set_exception(e)
                continue
            self.stats.record_wait(time.monotonic() - request.submitted)
            self.stats.requests += 1
            joined.append((request, h, c))
        if not joined:
            return
        hs = [h for _, h, _ in joined]
        cs = [c for _, _, c in joined]
        if self._h is not None and self._c is not None:
            n = len(self._rows)  # (a lone paired row's state has a second row: not theirs)
            hs.insert(0, self._h[:n])
            cs.insert(0, self._c[:n])
        self._h, self._c = torch.cat(hs), torch.cat(cs)
        self._rows.extend(r for r, _, _ in joined)
        self._settings = None

    def _start_state(self, request: _Request) -> tuple[Tensor, Tensor]:
        m = self.model
        if request.prime is None:
            return m._zero_state(1)
        x_tm, _ = m._prepare(request.prime.unsqueeze(0), None)
        return m._posterior_pass(x_tm, m._noise(request.generator)).state  # alone, as VRNN.sample reads it

    def _step(self) -> None:
        if self.fused is not None:
            self._step_fused(self.fused)
        else:
            self._step_torch()

    def _step_fused(self, fused: FusedSampler) -> None:
        """Steps of every row in one native call (`model.fused`; `_steps_now` says how many): each row reads its own
        random numbers, all drawn from its generator when it joins (chunk by chunk, as `VRNN.sample` draws them), and
        writes its frames into its result in place."""
        rows, h, c = self._rows, self._h, self._c
        assert h is not None and c is not None
        n = len(rows)
        normals, uniforms, outs = [], [], []
        for r in rows:
            if r.chunk is None:  # all its numbers now (as VRNN.sample draws them, chunk by chunk)
                r.chunk = fused.randoms_ahead(r.generator, 1, r.steps)
                r.result = torch.empty(r.steps, fused.x_dim, dtype=torch.float32)
            assert r.result is not None
            nrm, uni = r.chunk
            normals.append(nrm.data_ptr() + r.done * fused.normals * 4)
            uniforms.append(uni.data_ptr() + r.done * fused.uniforms * 4)
            outs.append(r.result.data_ptr() + r.done * fused.x_dim * 4)
        if self._settings is None:  # (the rows' draw settings, made again when rows come or go)
            self._settings = fused.arrays([fused.settings(r.mode, r.temperature, r.bias) for r in rows])
        steps = self._steps_now(min(r.steps - r.done for r in rows), n)
        self.stats.record_steps(n, steps)
        fused.call(h, c, steps, normals, uniforms, outs, self._settings)
        keep = []
        for i, r in enumerate(rows):
            r.done += steps
            if r.done == r.steps:
                r.future.set_result(r.result)
            else:
                keep.append(i)
        if len(keep) < n:
            self._rows = [rows[i] for i in keep]
            self._settings = None
            index = torch.tensor(keep, dtype=torch.long)
            self._h = h.index_select(0, index) if keep else None
            self._c = c.index_select(0, index) if keep else None

    def _step_torch(self) -> None:
        fast, rows = self.fast, self._rows
        assert self._h is not None and self._c is not None
        h, c = self._h, self._c
        n = len(rows)
        self.stats.record_steps(n)
        noise = None
        if fast.phi_z is not None:
            gens = _generators(rows, range(n))
            noise = randn((1, n, fast.config.z_dim), gens, device=h.device, dtype=h.dtype, row_dim=1)[0]
        lean = n == 1 or self.paired  # a row alone, or paired rows: the stepper (no module machinery)
        # A paired row alone keeps a second row in the state (dropped when others join), so that every product runs
        # on a pair as it is: the solo sampler's arithmetic (VRNN.sample), without padding each product.
        lone = n == 1 and self.stepper.pads_lone_row(h)
        if lone:
            if h.shape[0] == 1:
                h, c = self._lone.state(h, c)
            if noise is not None:
                noise = self._lone.noise(noise)
        if lean:
            params, pz = self.stepper.emit(h, noise)
            if lone:
                params = first_row(params)
        elif noise is None:
            params, pz = fast.decoder(h), None
        else:
            assert fast.phi_z is not None
            mu_p, std_p = fast._prior(h)
            pz = fast.phi_z(mu_p + std_p * noise)
            params = fast.decoder(pz, h)
        head = fast.decoder.head
        groups: dict[tuple[str, float, float], list[int]] = collections.defaultdict(list)
        if n == 1:
            groups[(rows[0].mode, rows[0].temperature, rows[0].bias)] = [0]
        else:
            for i, r in enumerate(rows):
                groups[(r.mode, r.temperature, r.bias)].append(i)
        if len(groups) == 1:  # every row draws with the same settings (always so for one row): no scatter
            (mode, temperature, bias), idx = next(iter(groups.items()))
            x, emitted = draw(head, params, mode, _generators(rows, idx), temperature, bias)
        else:
            x = h.new_empty(n, fast.config.x_dim)
            emitted = h.new_empty(n, fast.config.x_dim)
            for (mode, temperature, bias), idx in groups.items():
                sub = params if len(idx) == n else _rows_of(params, idx)
                x[idx], emitted[idx] = draw(head, sub, mode, _generators(rows, idx), temperature, bias)
        if lone:
            x = self._lone.input(x)
        if lean:
            self._h, self._c = self.stepper.advance(x, pz, h, c)
        else:
            px = fast.phi_x(x)
            self._h, self._c = fast.rnn(px if pz is None else torch.cat([px, pz], dim=-1), (h, c))
        keep = []
        # one copy of the step's rows, then a view per row: two operations a step instead of two a row (a view of
        # `emitted` itself would keep the step's parameters alive in the mean modes)
        for i, (r, row) in enumerate(zip(rows, emitted[:n].clone().unbind(0), strict=True)):
            r.out.append(row)
            if len(r.out) == r.steps:
                r.future.set_result(torch.stack(r.out))
            else:
                keep.append(i)
        if len(keep) < n:
            self._rows = [rows[i] for i in keep]
            index = torch.tensor(keep, dtype=torch.long, device=h.device)
            self._h = self._h.index_select(0, index) if keep else None
            self._c = self._c.index_select(0, index) if keep else None


def _generators(rows: list[_Request], idx: Sequence[int]) -> torch.Generator | RowGenerators:
    """The random streams of rows `idx`: one generator per row; a single row's own generator draws the same."""
    return rows[idx[0]].generator if len(idx) == 1 else RowGenerators([rows[i].generator for i in idx])


def _rows_of(params: tuple, idx: list[int]) -> tuple:
    """The rows `idx` of an output head's parameter tuple (a NamedTuple of tensors, some None)."""
    index = torch.tensor(idx, dtype=torch.long)
    return type(params)(*(None if f is None else f.index_select(0, index.to(f.device)) for f in params))


@dataclass
class _TextRequest:
    texts: list[str]
    max_steps: int | None
    generator: torch.Generator
    temperature: float
    bias: float
    mode: str
    prime: tuple[Tensor, str] | None
    future: Future
    submitted: float = field(default_factory=time.monotonic)
    # set when it is submitted: its lines (model.conditional.Lines), their int32 characters, frames and window weights
    # (filled in place), each line's done flag and steps written, the steps run, the random numbers of all its steps
    lines: Any = None
    codes: list[Tensor] = field(default_factory=list)
    out: Tensor | None = None
    phis: list[Tensor] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    t: int = 0
    chunk: tuple[Tensor, Tensor] | None = None

    @property
    def rows(self) -> int:
        return len(self.texts)


class TextEngine(StepEngine):
    """Continuous batching of a text model's requests (`TextVRNN.sample`'s arguments, each a Future of its
    TextSample): a request's lines join the running batch at a step boundary (its prime read alone first, through the
    posterior, with its own generator) and leave when all of them are written or its cap is reached. The step is
    `model.fused`'s `text_sample`, one native call for every line of every request, each line reading its request's
    random numbers and writing in place, so a request gets bit for bit what `TextVRNN.sample` gives it alone. A
    request with more lines than `max_batch` runs when the batch is empty. Needs the native library
    (`fused.supports_text`)."""

    thread_name = "vrnn-text-engine"

    def __init__(self, model: TextVRNN, max_batch: int = 16, max_wait_s: float = 0.0):
        if max_batch < 1 or not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        if not supports_text(model):
            raise ValueError("this text model does not sample through the fused step here (fused.supports_text)")
        super().__init__()
        self.model = model.eval()
        self.threads = torch.get_num_threads()
        self.fused = FusedTextSampler(self.model)
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.stats = EngineStats()
        self._rows: list[_TextRequest] = []  # the requests running (each with one row per line)
        self._state: tuple[Tensor, Tensor, Tensor] | None = None
        self._settings: Any = None

    def submit(
        self,
        texts: list[str],
        max_steps: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        bias: float = 0.0,
        mean: bool | str = False,
        prime: tuple[Tensor, str] | None = None,
        generator: torch.Generator | None = None,
    ) -> Future:
        """Queue `TextVRNN.sample(texts, max_steps, temperature, bias, generator, mean, prime)`; its Future's result
        is that TextSample (`seed` makes the generator when none is given). Bad texts fail the Future with the
        sampler's ValueError."""
        mode = sampling_mode(None, temperature, bias, mean)
        if generator is None:
            generator = torch.Generator(device=self.model.device)
            if seed is not None:
                generator.manual_seed(seed)
        request = _TextRequest(
            list(texts), max_steps, generator, float(temperature), float(bias), mode, prime, Future()
        )
        try:  # (in the caller's thread: a prime is read without holding up the batch's steps)
            self._start(request)
        except Exception as e:
            request.future.set_exception(e)
            return request.future
        return self._enqueue(request)

    def _admit(self) -> None:
        joined: list[_TextRequest] = []
        rows = sum(r.rows for r in self._rows)
        while True:
            with self._cond:
                if not self._waiting:
                    break
                nxt = self._waiting[0]
                if rows and rows + nxt.rows > self.max_batch:
                    break
                self._waiting.popleft()
            if not nxt.future.set_running_or_notify_cancel():
                continue
            self.stats.record_wait(time.monotonic() - nxt.submitted)
            self.stats.requests += 1
            joined.append(nxt)
            rows += nxt.rows
        if not joined:
            return
        parts = ([] if self._state is None else [self._state]) + [r.lines.state for r in joined]
        h, c, kappa = (torch.cat(p).contiguous() for p in zip(*parts, strict=True))
        self._state = (h, c, kappa)
        self._rows.extend(joined)
        self._settings = None

    def _start(self, r: _TextRequest) -> None:
        """Read the request's prime and set up its buffers (TextVRNN.begin_lines: its checks, its errors), before it
        waits for a place in the batch."""
        lines = self.model.begin_lines(r.texts, r.max_steps, r.generator, r.prime, sampler=self.fused)
        r.lines = lines
        r.codes, r.out, r.phis = self.fused.buffers(lines.codes, lines.cap)
        r.done, r.ended = [0] * r.rows, [lines.cap] * r.rows
        r.chunk = self.fused.randoms_ahead(r.generator, r.rows, lines.cap)  # (as TextVRNN.sample draws them)

    def _clear(self) -> None:
        self._rows, self._state, self._settings = [], None, None

    def _step(self) -> None:
        fused, requests, state = self.fused, self._rows, self._state
        assert state is not None
        n = sum(r.rows for r in requests)
        codes, lengths, done, normals, uniforms, outs, phis = [], [], [], [], [], [], []
        for r in requests:
            assert r.chunk is not None and r.out is not None
            nrm, uni = r.chunk
            for i, cd in enumerate(r.codes):
                codes.append(cd.data_ptr())
                lengths.append(len(cd))
                done.append(r.done[i])
                normals.append(nrm[i].data_ptr() + r.t * fused.normals * 4)
                uniforms.append(uni[i].data_ptr() + r.t * fused.uniforms * 4)
                outs.append(r.out[i].data_ptr() + r.t * fused.x_dim * 4)
                phis.append(r.phis[i].data_ptr() + r.t * len(cd) * 4)
        if self._settings is None:  # (made again when requests come or go)
            rows = [fused.settings(r.mode, r.temperature, r.bias) for r in requests for _ in range(r.rows)]
            self._settings = fused.arrays(rows)
        flags, ended = (ctypes.c_int * n)(*done), (ctypes.c_int * n)()
        steps = self._steps_now(min(r.lines.cap - r.t for r in requests), n)
        ran = fused.call_text(
            state, steps, codes, (ctypes.c_int * n)(*lengths), flags, ended, normals, uniforms, outs, phis,
            self._settings,
        )  # fmt: skip
        self.stats.record_steps(n, ran)
        keep: list[int] = []
        kept: list[_TextRequest] = []
        row = 0
        for r in requests:
            for i in range(r.rows):
                if flags[row + i] and not r.done[i]:
                    r.done[i], r.ended[i] = 1, r.t + ended[row + i] + 1
            r.t += ran
            if all(r.done) or r.t == r.lines.cap:
                assert r.out is not None
                sample = self.model.finish_lines(
                    r.lines, r.out[:, : r.t], [p[: r.t] for p in r.phis], r.ended, [bool(d) for d in r.done]
                )
                r.future.set_result(sample)
            else:
                kept.append(r)
                keep.extend(range(row, row + r.rows))
            row += r.rows
        if len(kept) < len(requests):
            self._rows = kept
            self._settings = None
            index = torch.tensor(keep, dtype=torch.long)
            h, c, kappa = (t.index_select(0, index) for t in state)
            self._state = (h, c, kappa) if keep else None
