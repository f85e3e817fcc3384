"""Evaluate checkpoints on a corpus: the paper's Table 1 (ELBO >= and IS log-likelihood ~).

    python -m model.evaluate checkpoints/speech-vrnn-gmm.safetensors ... --data data/speech-demo [--split test]

Numbers are nats per sequence, averaged over sequences, in the normalised space the model was trained
in (as the paper reports them), plus nats per frame and the same in the raw data space (waveform
samples in [-1, 1], pen offsets in input units), which adds the normalisation's log-Jacobian so that
models trained with different statistics compare.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import defaults
from .checkpoint import CheckpointError, load_checkpoint
from .data import Corpus, DataError, NormStats, load_handwriting_corpus, load_speech_corpus, pad_batch
from .inference import elbo_and_likelihood
from .runtime import resolve_device
from .vrnn import VRNN

if TYPE_CHECKING:
    from .conditional import TextVRNN


@torch.no_grad()
def evaluate_sequences(
    model: VRNN | TextVRNN,
    sequences: Sequence[np.ndarray],
    stats: NormStats | None = None,
    num_samples: int = defaults.NUM_IS_SAMPLES,
    batch_size: int = 32,
    seed: int = 0,
    likelihood: bool = True,
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ELBO and log-likelihood of normalised sequences, averaged per sequence (nats).

    VRNNs: both come from the same K importance samples (ELBO: mean of the log-weights, with a sampled
    KL; log-likelihood: their log-mean-exp). likelihood=False gives the one-sample ELBO with the analytic
    KL alone (validation during training). RNNs: both are the exact log-likelihood. With `stats`, the
    raw-space figures are added. `kl_per_frame` is the analytic KL(q || p) per frame, summed over z's
    dimensions, with z drawn from q once (its own random stream: the other figures do not change);
    near 0 means the latent is unused (posterior collapse). A text-conditioned model takes `texts` (texts[i]: the
    text of sequences[i]) and every figure is conditional on them."""
    if not sequences:
        raise DataError("nothing to evaluate: the split is empty")
    model.eval()
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    g_kl = torch.Generator(device=device).manual_seed(seed + 1)
    elbo_sum = ll_sum = kl_sum = 0.0
    frames = 0
    exact = not model.config.has_latent
    for i in range(0, len(sequences), batch_size):
        x, mask = pad_batch(sequences[i : i + batch_size])
        x, mask = x.to(device), mask.to(device)
        cond = () if texts is None else (list(texts[i : i + batch_size]),)  # a text model's second argument
        if likelihood and not exact:
            # The service's /score computes the same pair (from the same K draws, so ELBO <= likelihood).
            elbo, ll = elbo_and_likelihood(model, x, mask, num_samples, g, *cond)
            elbo_sum += elbo.sum().item()
            ll_sum += ll.sum().item()
            kl_sum += model(x, *cond, mask=mask, generator=g_kl).kl.double().sum().item()
        else:
            out = model(x, *cond, mask=mask, generator=g)
            elbo = out.elbo.double().sum().item()
            kl_sum += out.kl.double().sum().item()
            elbo_sum += elbo
            ll_sum += elbo  # exact for the RNN; unused when likelihood=False
        frames += int(mask.sum())
    n = len(sequences)
    result: dict[str, Any] = {
        "sequences": n,
        "frames": frames,
        "elbo": elbo_sum / n,
        "elbo_per_frame": elbo_sum / frames,
        "kl_per_frame": kl_sum / frames,
        "exact": exact,
        "space": "normalised",
    }
    if likelihood:
        result.update(
            log_likelihood=ll_sum / n,
            log_likelihood_per_frame=ll_sum / frames,
            num_samples=1 if exact else num_samples,
        )
    if stats is not None:
        jac = stats.log_jacobian_per_frame * frames  # summed over all frames of the split
        raw = {"elbo": (elbo_sum + jac) / n, "elbo_per_frame": (elbo_sum + jac) / frames}
        if likelihood:
            raw.update(log_likelihood=(ll_sum + jac) / n, log_likelihood_per_frame=(ll_sum + jac) / frames)
        result["raw"] = raw
    for k, v in result.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise FloatingPointError(f"{k} is {v}: the model produced a non-finite value")
    return result


def load_corpus(data: str | Path, modality: str, chunk_seconds: float | None = None, point_stride: int = 1) -> Corpus:
    """The corpus at `data` for `modality` (speech: split into chunks of `chunk_seconds`, None keeps files whole;
    handwriting: lines thinned to every `point_stride`-th point, NormStats.point_stride)."""
    if modality == "speech":
        return load_speech_corpus(data, chunk_seconds=chunk_seconds)
    return load_handwriting_corpus(data, point_stride=point_stride)


def evaluate_checkpoint(
    path: str | Path,
    data: str | Path,
    split: str = "test",
    num_samples: int = defaults.NUM_IS_SAMPLES,
    device: str = "cpu",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Load a checkpoint and score a split of `data` with the checkpoint's own normalisation."""
    model, meta = load_checkpoint(path, device=device)
    cfg = model.config
    chunk = (meta.get("dataset") or {}).get("chunk_seconds") if cfg.modality == "speech" else None
    corpus = load_corpus(data, cfg.modality, chunk)
    stats = NormStats.from_dict(meta["normalisation"]) if "normalisation" in meta else corpus.stats
    splits = ("train", "valid", "test") if split == "all" else (split,)
    # Re-normalise with the checkpoint's statistics: the corpus was normalised with its own.
    seqs = [stats.preprocess(corpus.stats.denormalise(x)) for s in splits for x in corpus.split(s)]
    result = evaluate_sequences(model, seqs, stats, num_samples=num_samples, batch_size=batch_size)
    return {
        "model": Path(path).stem,
        "name": cfg.name,
        "family": cfg.family,
        "output": cfg.output,
        "split": split,
        **result,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The paper's Table 1 layout: ELBO (>=) and log-likelihood (exact = or IS ~) per sequence."""
    head = f"{'model':<32} {'name':<14} {'ELBO':>12} {'log-lik':>14} {'nats/frame':>11} {'seqs':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ll = f"{'=' if r['exact'] else '~'} {r['log_likelihood']:.1f}"
        elbo = f"{'=' if r['exact'] else '>='} {r['elbo']:.1f}"
        lines.append(
            f"{r['model']:<32} {r['name']:<14} {elbo:>12} {ll:>14} {r['log_likelihood_per_frame']:>11.3f} "
            f"{r['sequences']:>6}"
        )
    lines.append("nats per sequence in the normalised space (as the paper); higher is better; = exact, ~ IS estimate")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluate",
        description="Score checkpoints on a corpus: ELBO and log-likelihood per sequence (the paper's Table 1).",
        epilog="example: python -m model.evaluate checkpoints/*.safetensors --data data/speech-demo --split test",
    )
    parser.add_argument("checkpoints", nargs="+", help="NAME.safetensors files (their NAME.json must sit beside them)")
    parser.add_argument("--data", required=True, help="corpus folder (the loader is picked from each model's modality)")
    parser.add_argument("--split", choices=["test", "valid", "train", "all"], default="test")
    parser.add_argument("--num-samples", type=int, default=defaults.NUM_IS_SAMPLES, help="K of the IS estimate (40)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.batch_size < 1:
        parser.error("--num-samples and --batch-size must be positive")
    try:
        device = str(resolve_device(args.device))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    try:
        for path in args.checkpoints:
            rows.append(evaluate_checkpoint(path, args.data, args.split, args.num_samples, device, args.batch_size))
    except (CheckpointError, DataError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FloatingPointError) else 2
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
