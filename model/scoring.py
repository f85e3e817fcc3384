"""Scoring requests batched across callers: the K importance samples of several sequences side by side.

Concurrent `score` requests for one model (each a sequence, its K and its seed) wait in a queue; a background thread
takes those with the same K together, pads them into one batch, and runs the per-frame ELBO pass and the K-sample
log-weights once for all of them. Each sequence draws its noise from its own generator (`distributions.
RowGenerators`), so it gets the draws it gets alone; the batched matrix products round differently from a batch of
one, so a batched score equals the solo one to float rounding (about 1e-7 relative), not bit for bit, and a
request that runs alone gets exactly the solo result. Memory stays within what one request may use: a batch holds at
most `max_batch` sequences and at most `budget` of (sequences x K x longest T) (`log_weights` chunks beyond that).

    scorer = ScoringBatcher(model, max_batch=8).start()
    future = scorer.submit(x, num_samples=40, seed=0)       # x (T, D) in the model's normalised space
    per_frame, elbo, log_likelihood = future.result()
    scorer.stop()
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .distributions import RowGenerators
from .engine import BatchThread, EngineStats
from .runtime import apply_threads
from .vrnn import VRNN

# sequences x K x frames of one batch at most: what a single request may ask (K = 200 of a 60 s recording at
# 16 kHz, 4800 frames), so batching never needs more memory than the largest request alone.
DEFAULT_BUDGET = 200 * 4800


@dataclass
class ScoreResult:
    per_frame: Tensor  # (T,) the ELBO per frame, one z draw per step (float64)
    elbo: float  # the K-sample ELBO estimate (exact log-likelihood for RNNs)
    log_likelihood: float  # the K-sample IS estimate (exact for RNNs)


@dataclass(eq=False)  # compared by identity (the queue removes the very request)
class _Request:
    x: Tensor
    k: int
    seed: int
    future: Future
    submitted: float = field(default_factory=time.monotonic)


def score_batch(model: VRNN, xs: list[Tensor], k: int, seeds: list[int]) -> list[ScoreResult]:
    """Score sequences xs[i] (T_i, D) together, each with its own seed: the per-frame ELBO (one z draw per step) and
    the K-sample (ELBO, IS) pair of `model.inference.elbo_and_likelihood`, as `worker.jobs` scores one alone."""
    dev = model.device
    lengths = [len(x) for x in xs]
    x = torch.zeros(len(xs), max(lengths), xs[0].shape[1], device=dev, dtype=xs[0].dtype)
    mask = torch.zeros(len(xs), max(lengths), dtype=torch.bool, device=dev)
    for i, (seq, n) in enumerate(zip(xs, lengths, strict=True)):
        x[i, :n], mask[i, :n] = seq, True

    def streams() -> Any:  # torch.Generator | RowGenerators (VRNN's noise takes either)
        gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
        return gens[0] if len(gens) == 1 else RowGenerators(gens)

    with torch.no_grad():
        out = model(x, mask if len(xs) > 1 else None, generator=streams())
        per_frame = (-(out.nll + out.kl)).double()
        if model.config.has_latent:
            log_w = model.log_weights(x, mask if len(xs) > 1 else None, num_samples=k, generator=streams()).double()
            elbos, lls = log_w.mean(0), torch.logsumexp(log_w, 0) - math.log(k)
        else:
            elbos = lls = out.elbo.double()
    return [ScoreResult(per_frame[i, : lengths[i]].cpu(), float(elbos[i]), float(lls[i])) for i in range(len(xs))]


class ScoringBatcher(BatchThread):
    thread_name = "vrnn-scoring-batcher"

    def __init__(self, model: VRNN, max_batch: int = 8, max_wait_s: float = 0.0, budget: int = DEFAULT_BUDGET):
        if max_batch < 1 or budget < 1 or not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise ValueError(
                f"need max_batch, budget >= 1 and max_wait_s >= 0, got {max_batch}, {budget}, {max_wait_s}"
            )
        super().__init__()
        self.model = model.eval()
        self.max_batch, self.max_wait_s, self.budget = max_batch, max_wait_s, budget
        self.stats = EngineStats()  # steps: batches run; batch_sizes: sequences per batch; queue waits

    def submit(self, x: Tensor, num_samples: int, seed: int) -> Future:
        """Queue one sequence x (T, D) in the model's normalised space; the Future's result is a ScoreResult."""
        if x.dim() != 2 or x.shape[1] != self.model.config.x_dim or not len(x):
            raise ValueError(f"x must be (T, {self.model.config.x_dim}) with T >= 1, got {tuple(x.shape)}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self._enqueue(_Request(x, num_samples, seed, Future()))

    def _loop(self) -> None:
        apply_threads()
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._waiting:
                    return
                first = self._waiting[0]
            if self.max_wait_s > 0:  # let companions arrive
                time.sleep(max(0.0, first.submitted + self.max_wait_s - time.monotonic()))
            self.step()

    def _take(self) -> list[_Request]:
        """The oldest request and the waiting ones with its K that fit the batch's bounds, in arrival order."""
        with self._cond:
            if not self._waiting:
                return []
            first = self._waiting[0]
            batch: list[_Request] = []
            longest = 0
            for r in list(self._waiting):
                t = max(longest, len(r.x))
                if (
                    r.k != first.k
                    or len(batch) == self.max_batch
                    or (batch and (len(batch) + 1) * r.k * t > self.budget)
                ):
                    continue
                batch.append(r)
                longest = t
                self._waiting.remove(r)
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def step(self) -> bool:
        """Run one batch of waiting requests; False when nothing waits."""
        batch = self._take()
        if not batch:
            with self._cond:
                return bool(self._waiting)
        now = time.monotonic()
        for r in batch:
            self.stats.record_wait(now - r.submitted)
        self.stats.requests += len(batch)
        self.stats.record_steps(len(batch))
        try:
            results = score_batch(self.model, [r.x for r in batch], batch[0].k, [r.seed for r in batch])
        except Exception as e:  # this batch's requests fail; the batcher keeps serving
            for r in batch:
                r.future.set_exception(e)
            return True
        for r, res in zip(batch, results, strict=True):
            r.future.set_result(res)
        return True
