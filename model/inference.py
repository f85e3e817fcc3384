"""Inference on trained checkpoints: load one, sample from it, read an input for it, score and analyse an input.

The library under the command lines (`python -m model.sample`, `python -m model.evaluate`) and the service's job
functions (worker.jobs):

    model, meta = load(path, device="auto")                          # model.runtime's device rule
    raws = generate(model, meta, num=2, seconds=2.0, seed=0)         # list of raw (T, D) arrays
    wav = render_sample(meta, raws[0])                               # WAV bytes or SVG text
    x_raw = read_input(meta, "input.wav")                            # a path or the file's bytes
    elbo, log_lik = elbo_and_likelihood(model, normalised(meta, x_raw, model.device), None, 40, generator)
    analysis, x_raw = analyze_file(model, meta, "input.wav")

Bad arguments, files and checkpoints raise InferenceError (a ValueError) with a message that names what is wrong.
"""

from __future__ import annotations

import json
import math
import secrets
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch

from . import defaults, render
from .checkpoint import CheckpointError, load_checkpoint, read_metadata
from .data import DataError, NormStats, frames_from_audio, load_audio, read_handwriting
from .data.handwriting import load_handwriting_file
from .runtime import resolve_device
from .text import UnsupportedCharactersError
from .vrnn import VRNN, LatentAnalysis

if TYPE_CHECKING:
    from .conditional import TextAnalysis, TextVRNN
    from .engine import SamplingEngine
    from .scoring import ScoreResult

DEFAULT_SECONDS = 2.0  # the paper's Figure 3 samples are 2.0 s long
DEFAULT_HANDWRITING_STEPS = 700  # about one IAM-OnDB line (the service's default too)
MAX_NUM = 1000
MAX_STEPS = 1_000_000
MAX_SECONDS = 3600.0


class InferenceError(ValueError):
    """A bad argument, file or checkpoint (the command lines print the message and exit with status 2)."""


def norm_stats(meta: dict[str, Any], source: str = "checkpoint") -> NormStats:
    """The checkpoint's NormStats, checked against its model config."""
    if "normalisation" not in meta:
        raise InferenceError(
            f"{source}: its JSON has no 'normalisation' stats, so samples cannot be mapped back to "
            "audio or pen offsets (checkpoints written by `python -m model.train` have them)"
        )
    try:
        stats = NormStats.from_dict(meta["normalisation"])
    except DataError as e:
        raise InferenceError(f"{source}: {e}") from None
    cfg = meta["config"]
    if stats.modality != cfg.get("modality") or stats.frame_size != cfg.get("x_dim"):
        raise InferenceError(
            f"{source}: normalisation stats ({stats.modality}, frame size {stats.frame_size}) do not match the "
            f"model ({cfg.get('modality')}, x_dim {cfg.get('x_dim')})"
        )
    return stats


def sample_rate(meta: dict[str, Any]) -> int:
    rate = meta.get("sample_rate", defaults.SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise InferenceError(f"checkpoint metadata: sample_rate must be a positive integer, got {rate!r}")
    return rate


@overload
def load(path: str | Path, device: str = "cpu", text: Literal[False] = False) -> tuple[VRNN, dict[str, Any]]: ...
@overload
def load(path: str | Path, device: str = "cpu", *, text: bool) -> tuple[VRNN | TextVRNN, dict[str, Any]]: ...
def load(path: str | Path, device: str = "cpu", text: bool = False) -> tuple[VRNN | TextVRNN, dict[str, Any]]:
    """Load a checkpoint for inference -> (model in eval mode on `device`, metadata). Never unpickles.

    A text-conditioned checkpoint (its config has an alphabet) loads as a `model.conditional.TextVRNN` when `text` is
    true (the service's cache); otherwise it is refused with a pointer to `load_text_checkpoint`, as before.
    Raises InferenceError naming the file when it is missing or not a usable checkpoint, or the device (model.runtime's
    rule: "auto", "cpu", "cuda", "cuda:N") when it is not there."""
    try:
        device = str(resolve_device(device))
    except ValueError as e:
        raise InferenceError(str(e)) from None
    p = Path(path)
    weights = p.with_suffix(".safetensors") if p.suffix in (".json", ".safetensors") else Path(f"{p}.safetensors")
    if not weights.exists() and not weights.with_suffix(".json").exists():
        raise InferenceError(f"{path}: no such checkpoint (expected NAME.safetensors with NAME.json beside it)")
    model: VRNN | TextVRNN
    try:
        if text and read_metadata(weights)["config"].get("alphabet"):
            from .conditional import load_text_checkpoint

            model, meta = load_text_checkpoint(path, device=device)
        else:
            model, meta = load_checkpoint(path, device=device)
    except CheckpointError as e:
        raise InferenceError(str(e)) from None
    norm_stats(meta, str(path))
    if meta["config"].get("modality") == "speech":
        sample_rate(meta)
    return model, meta


def steps_for(meta: dict[str, Any], seconds: float | None = None, steps: int | None = None) -> int:
    """Number of time steps to generate: `steps` if given, else `seconds` of speech (rounded up to whole
    frames), else the default (2.0 s of speech, 700 pen steps of handwriting)."""
    cfg = meta["config"]
    speech = cfg["modality"] == "speech"
    if steps is not None and seconds is not None:
        raise InferenceError("give either seconds or steps, not both")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise InferenceError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
        return steps
    if seconds is not None and not speech:
        raise InferenceError("seconds applies to speech; give handwriting a number of steps")
    if not speech:
        return DEFAULT_HANDWRITING_STEPS
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise InferenceError(f"seconds must be a number above 0 and at most {MAX_SECONDS:g}, got {seconds!r}")
    return max(1, math.ceil(seconds * sample_rate(meta) / cfg["x_dim"] - 1e-9))


def read_input(meta: dict[str, Any], source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """An input for the checkpoint's modality -> raw (T, D) frames or offsets (not normalised).

    Speech: WAV/FLAC (resampled to the model's rate, mixed to mono) cut into frames. Handwriting:
    IAM-OnDB XML, JSON strokes or offsets, or a .npy (T, 3) array. `source` is a path or the bytes."""
    cfg = meta["config"]
    label = name or (str(source) if isinstance(source, str | Path) else "input data")
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise InferenceError(f"{label}: no such file")
    try:
        if cfg["modality"] == "speech":
            wave = load_audio(source, sample_rate(meta), name=label)
            x = frames_from_audio(wave, cfg["x_dim"])
            if len(x) == 0:
                raise InferenceError(f"{label}: shorter than one frame ({cfg['x_dim']} samples)")
            return x
        if isinstance(source, bytes | bytearray):
            return read_handwriting(bytes(source), label)
        return load_handwriting_file(source, label)
    except DataError as e:
        raise InferenceError(str(e)) from None


def normalised(meta: dict[str, Any], x_raw: np.ndarray, device: Any) -> torch.Tensor:
    """Raw (T, D) input -> the model's normalised (1, T, D) float32 batch on `device`."""
    y = np.asarray(norm_stats(meta).preprocess(x_raw), dtype=np.float32)
    return torch.as_tensor(y).unsqueeze(0).to(device)


def generate(
    model: VRNN,
    meta: dict[str, Any],
    num: int = 1,
    steps: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    bias: float = 0.0,
    mean: bool | str = False,
    prime: np.ndarray | None = None,
    engine: SamplingEngine | None = None,
) -> list[np.ndarray]:
    """Draw `num` sequences -> list of raw (T, D) float32 arrays: speech frames (flatten one with
    `.reshape(-1)` for the waveform, floats in [-1, 1] about) or handwriting offsets (dx, dy, pen), y up.

    `mean=True` gives the decoder mean instead of a sample (the paper's sampling script saved that); the
    modes are VRNN.sample's (`SAMPLE_MODES`).
    `prime` is raw (T0, D) data (from `read_input`) read through the model first; the result holds
    only the continuation. The same `seed` gives the same arrays on the same device; seed None
    draws a fresh one.

    `engine` (a `model.engine.SamplingEngine` of this model, running) draws the one sequence (`num` must be 1) in
    the engine's shared batch instead of calling `model.sample` here: the same generator from the same seed, the
    same arguments, and so bit for bit the same arrays (the engine's guarantee); the caller needs no model lock."""
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_NUM:
        raise InferenceError(f"num must be a whole number from 1 to {MAX_NUM}, got {num!r}")
    n_steps = steps_for(meta, seconds, steps)
    stats = norm_stats(meta)
    seed = secrets.randbits(63) if seed is None else seed
    primed = None
    if prime is not None:
        prime = np.asarray(prime)
        if prime.ndim != 2 or prime.shape[1] != meta["config"]["x_dim"] or len(prime) == 0:
            raise InferenceError(f"prime must be raw data of shape (T, {meta['config']['x_dim']}), got {prime.shape}")
        primed = torch.as_tensor(np.asarray(stats.preprocess(prime), dtype=np.float32))
    if engine is not None:
        if num != 1:
            raise InferenceError(f"a sampling engine draws one sequence per request, got num={num}")
        if engine.model is not model:
            raise InferenceError("the sampling engine runs another model")
    options: dict[str, Any] = dict(
        steps=n_steps,
        temperature=temperature,
        generator=torch.Generator(device=model.device).manual_seed(int(seed)),
        prime=None if primed is None else primed.to(model.device),
        bias=bias,
        mean=mean,
    )
    try:
        if engine is not None:
            future = engine.submit(**options)
        else:
            with torch.no_grad():
                y = model.sample(num_samples=num, **options)
    except ValueError as e:  # temperature, bias: the model checks them (the engine as the model does)
        raise InferenceError(str(e)) from None
    if engine is not None:
        y = wait_result(engine, future).unsqueeze(0)  # (1, steps, D), as model.sample(num_samples=1) gives
    raw = stats.denormalise(y.detach().to("cpu", torch.float32).numpy())
    return [np.ascontiguousarray(r, dtype=np.float32) for r in raw]


def generate_text(
    model: TextVRNN,
    meta: dict[str, Any],
    texts: list[str],
    max_steps: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    bias: float = 0.0,
    mean: bool | str = False,
    prime: np.ndarray | None = None,
    prime_text: str | None = None,
    engine: Any = None,
) -> tuple[list[np.ndarray], list[bool]]:
    """Write each of `texts` (one line each, in one batch) with a text-conditioned model -> (raw (T_i, 3) float32
    pen offsets per line, y up; whether each line's stopping rule fired before `max_steps`).

    `max_steps` caps every line (None: the model's cap, `conditional.MAX_STEPS_PER_CHAR` steps per character of the
    longest line). `prime` is a raw (T0, 3) line (from `read_input`) whose text is `prime_text`: normalised as
    `generate` normalises a prime, read through the posterior first, and each line is written in its style. The same
    `seed` gives the same arrays on the same device, whether sampled alone or through the model's running
    `model.engine.TextEngine` (`engine`, shared with concurrent requests). Characters outside the model's alphabet raise
    `model.text.UnsupportedCharactersError` (a ValueError naming them); other bad arguments InferenceError."""
    if (prime is None) != (prime_text is None):
        raise InferenceError("a prime needs its text and a prime text needs its line: give both or neither")
    stats = norm_stats(meta)
    seed = secrets.randbits(63) if seed is None else seed
    primed = None
    if prime is not None and prime_text is not None:
        prime = np.asarray(prime)
        if prime.ndim != 2 or prime.shape[1] != meta["config"]["x_dim"] or len(prime) == 0:
            raise InferenceError(f"prime must be raw data of shape (T, {meta['config']['x_dim']}), got {prime.shape}")
        x0 = torch.as_tensor(np.asarray(stats.preprocess(prime), dtype=np.float32)).to(model.device)
        primed = (x0, prime_text)
    generator = torch.Generator(device=model.device).manual_seed(int(seed))
    kwargs: dict[str, Any] = dict(
        max_steps=max_steps, temperature=temperature, bias=bias, generator=generator, mean=mean, prime=primed
    )
    try:
        if engine is not None:
            out = wait_result(engine, engine.submit(list(texts), **kwargs))
        else:
            out = model.sample(list(texts), **kwargs)
    except UnsupportedCharactersError:
        raise
    except ValueError as e:  # temperature, bias, an empty or too long text: the model checks them
        raise InferenceError(str(e)) from None
    lines = [stats.denormalise(y.detach().to("cpu", torch.float32).numpy()) for y in out.offsets]
    return [np.ascontiguousarray(r, dtype=np.float32) for r in lines], list(out.finished)


def wait_result(batcher: Any, future: Future) -> Any:
    """A batcher's answer (`model.engine`, `model.scoring`), waited for in short slices: a batcher whose thread has
    died raises instead of leaving the caller waiting for ever (and an exception raised into the waiting thread, such
    as a job timeout, gets in)."""
    while True:
        try:
            return future.result(timeout=0.5)
        except FutureTimeoutError:
            if not batcher.alive and not future.done():
                raise RuntimeError(f"the {type(batcher).__name__} stopped before this request was served") from None


def render_sample(meta: dict[str, Any], raw: np.ndarray, fmt: str | None = None, **svg_options: Any) -> bytes | str:
    """One raw sample -> file contents: WAV bytes for speech; for handwriting SVG text (fmt "svg",
    the default; `svg_options` go to `render.handwriting_svg`) or JSON offsets (fmt "json")."""
    if meta["config"]["modality"] == "speech":
        return render.wav_bytes(np.asarray(raw).reshape(-1), sample_rate(meta))
    if fmt in (None, "svg"):
        return render.handwriting_svg(raw, **svg_options)
    if fmt == "json":
        return json.dumps(offset_rows(raw), separators=(",", ":")) + "\n"
    raise InferenceError(f"handwriting can be written as svg or json, not {fmt!r}")


def offset_rows(raw: np.ndarray) -> list[list[float | int]]:
    """Raw (T, 3) pen offsets -> JSON rows [[dx, dy, pen], ...]: offsets rounded to 4 decimals, pen 0 or 1."""
    return [[round(float(dx), 4), round(float(dy), 4), int(pen > 0.5)] for dx, dy, pen in np.asarray(raw)]


def text_sample_json(
    name: str,
    seed: int,
    texts: list[str],
    max_steps: int | None,
    finished: list[bool],
    raws: list[np.ndarray],
    output: str = "sample",
) -> dict[str, Any]:
    """`generate_text`'s lines as one JSON-safe document (the service's format=json answer for text, and what
    `python -m model.sample --text` writes to a .json file): the model, seed, texts, the per-line cap (None: the
    model's own), whether each line ended before it, and each line's offsets (`offset_rows`)."""
    return {
        "model": name,
        "seed": seed,
        "output": output,
        "texts": list(texts),
        "max_steps": max_steps,
        "finished": list(finished),
        "columns": ["dx", "dy", "pen"],
        "note": "per line of texts: offsets in input units, y up; pen = 1 on the last point of each "
        "stroke; finished: false where max_steps cut the line before its last character",
        "offsets": [offset_rows(raw) for raw in raws],
    }


def elbo_and_likelihood(
    model: VRNN | TextVRNN,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    num_samples: int,
    generator: torch.Generator,
    *texts: list[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence (ELBO, log-likelihood) in nats (float64, shape (B,)) of a normalised batch (B, T, D).

    RNNs: both are the exact log-likelihood. VRNNs: both come from the same K = `num_samples` importance samples
    (ELBO: the mean of the log-weights, with a sampled KL; log-likelihood: their log-mean-exp, the paper's IS
    estimate), so the reported ELBO is a K-sample estimate that never exceeds the reported likelihood. A text model
    takes its batch's texts after the generator, and both figures are conditional on them."""
    net: Any = model  # VRNN(x, mask, ...) or TextVRNN(x, texts, mask, ...)
    if not model.config.has_latent:
        elbo = net(x, *texts, mask=mask, generator=generator).elbo.double()
        return elbo, elbo
    log_w = net.log_weights(x, *texts, mask=mask, num_samples=num_samples, generator=generator).double()
    return log_w.mean(0), torch.logsumexp(log_w, 0) - math.log(num_samples)


def analyze_file(
    model: VRNN, meta: dict[str, Any], source: str | Path | bytes, name: str | None = None
) -> tuple[LatentAnalysis, np.ndarray]:
    """Read an input file (path or bytes) and run the latent analysis -> (LatentAnalysis of a batch of
    one, raw (T, D) input). The analysis uses posterior means, so it is deterministic."""
    if not model.config.has_latent:
        raise InferenceError(f"{model.config.name} has no latent variables to analyse; use a VRNN or VRNN-I checkpoint")
    x_raw = read_input(meta, source, name)
    with torch.no_grad():
        analysis = model.analyze(normalised(meta, x_raw, model.device))
    return analysis, x_raw


def latent_png(
    model: VRNN | TextVRNN,
    meta: dict[str, Any],
    analysis: LatentAnalysis | TextAnalysis,
    x_raw: np.ndarray,
    label: str | None = None,
    text: str | None = None,
) -> bytes:
    """The Figure 2 plot of `analyze_file`'s result, titled with the model's name and the input. A text model's
    analysis (`TextVRNN.analyze` of the line whose text is `text`) adds its attention weights as a fourth panel."""
    title = meta.get("name", model.config.name) + (f": {label}" if label else "")
    rate = sample_rate(meta) if meta["config"]["modality"] == "speech" else defaults.SAMPLE_RATE
    attention = getattr(analysis, "phi", None) if text is not None else None
    return render.latent_figure(
        analysis, x_raw, meta["config"]["modality"], sample_rate=rate, title=title, attention=attention, characters=text
    )


def score_text(model: TextVRNN, x: torch.Tensor, text: str, num_samples: int, seed: int) -> ScoreResult:
    """Score one normalised line x (T, 3) given its `text` -> ScoreResult (per-frame ELBO terms -(nll + kl) (T,)
    float64 with one z draw per step, ELBO, log-likelihood), as `model.scoring.score_batch` scores an unconditional
    line alone: the
    per-frame pass and `elbo_and_likelihood`'s K samples each from a generator seeded with `seed`. Both figures are
    conditional on the text (exact for the RNN family). Characters outside the alphabet raise
    `model.text.UnsupportedCharactersError`.

    The K samples run in groups of `text_samples_per_pass` (all at once unless K x T rows would take more than
    `defaults.NO_GRAD_CHUNK_BYTES`; then each group continues the same generator), so memory grows with T only."""
    dev = model.device
    xb = x.unsqueeze(0)
    with torch.no_grad():
        out = model(xb, [text], None, generator=torch.Generator(device=dev).manual_seed(seed))
        per_frame = (-(out.nll + out.kl)).double()[0].cpu()
        generator = torch.Generator(device=dev).manual_seed(seed)
        group = text_samples_per_pass(model, len(x), len(text))
        if not model.config.has_latent or group >= num_samples:
            elbo, log_likelihood = elbo_and_likelihood(model, xb, None, num_samples, generator, [text])
        else:
            log_w = torch.cat(
                [
                    model.log_weights(xb, [text], None, min(group, num_samples - at), generator).double()
                    for at in range(0, num_samples, group)
                ]
            )
            elbo, log_likelihood = log_w.mean(0), torch.logsumexp(log_w, 0) - math.log(num_samples)
    from .scoring import ScoreResult

    return ScoreResult(per_frame, float(elbo[0]), float(log_likelihood[0]))


def text_samples_per_pass(model: TextVRNN, steps: int, characters: int) -> int:
    """How many importance samples of a `steps`-long line `TextVRNN.log_weights` may run in one pass within
    `defaults.NO_GRAD_CHUNK_BYTES` (at least 1): the pass keeps every step's state of every row (a rough upper count
    of the floats each row keeps per step, doubled for the transients)."""
    cfg = model.config
    floats = (
        6 * cfg.h_dim
        + len(cfg.alphabet)
        + characters
        + 6 * cfg.z_dim
        + (4 + 2 * cfg.mlp_layers) * cfg.mlp_width
        + 8 * cfg.n_components
        + 8
    )
    per_sample = 2 * 4 * floats * max(1, steps)
    return max(1, defaults.NO_GRAD_CHUNK_BYTES // per_sample)
