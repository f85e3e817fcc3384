"""The job functions: JSON-safe dict in, JSON-safe dict out (docs/SERVICE.md is the contract).

A `Jobs` object runs them on one checkpoint cache: the API's embedded mode holds one per app and calls it from a
thread pool (each model runs under its own lock; with a batching cache, BATCH_MAX > 1, generation instead joins the
model's step-level sampling engine, which gives the same bytes per seed: see worker.cache).
RQ imports the module-level functions by name (`worker.jobs.generate_speech`, ...), which run them on the
process's cache (`worker.cache.get_cache`).

A result is `{"media_type", "headers", "body_b64"}` (WAV, SVG, PNG) or `{"media_type":
"application/json", "headers", "json"}`. Bad input raises `JobInputError` (the API answers 422;
its subclasses `InputTooLargeError` and `UnsupportedMediaError` may become 413 and 415), an unknown
model `UnknownModelError` (404); anything else is a server fault. Uploads are decoded in memory,
never written to disk. Bounds live in `worker.limits`.

Determinism: generation with the same parameters and seed gives byte-identical bodies (on the same
device); `score` and `analyze_latent` take no seed and always give the same numbers for the same input
(the IS draws use a fixed seed, the analysis uses posterior means).
"""

from __future__ import annotations

import base64
import io
import math
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import numpy as np
import soundfile as sf
import torch

from model import inference, render
from model.scoring import score_batch
from model.text import check_lines
from model.text import normalise as normalise_text

from . import contract, limits
from .cache import ModelCache, get_cache
from .contract import InputTooLargeError, JobInputError, UnsupportedMediaError, decode_base64, parse_params, sniff

SCORE_SEED = 0  # the IS draws of `score` are seeded, so the same input always gets the same numbers

SPEECH_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".snd")
HANDWRITING_SUFFIXES = (".xml", ".json", ".npy")
SPEECH_MEDIA = "WAV or FLAC audio"
HANDWRITING_MEDIA = "IAM-OnDB lineStrokes XML or JSON strokes [[[x, y], ...], ...]"

_render_lock = threading.Lock()  # matplotlib's global state (fonts, rcParams) is not meant for threads


# Parameters ----------------------------------------------------------------------------------------
# Types, bounds and unknown names are checked by worker.contract.parse_params, base64 by its decode_base64.


def _seed(seed: int | None) -> int:
    return secrets.randbits(63) if seed is None else seed


def _b64(value: str | None, key: str) -> bytes | None:
    return None if value is None else decode_base64(value, key, limits.MAX_UPLOAD_BYTES)


# Uploads -------------------------------------------------------------------------------------------


def _suffix_modality(filename: str | None) -> str | None:
    suffix = PurePath(filename).suffix.lower() if filename else ""
    if suffix in SPEECH_SUFFIXES:
        return "speech"
    if suffix in HANDWRITING_SUFFIXES:
        return "handwriting"
    return None


def _media(modality: str) -> str:
    return SPEECH_MEDIA if modality == "speech" else HANDWRITING_MEDIA


def _data_modality(data: bytes, filename: str | None) -> str:
    """Which modality an upload is (for picking the default model): its suffix, else its content."""
    modality = _suffix_modality(filename) or sniff(data)
    if modality is None:
        what = f"{filename!r}" if filename else "the uploaded data"
        raise UnsupportedMediaError(
            f"{what} is neither speech audio nor handwriting; upload {SPEECH_MEDIA} (speech) or "
            f"{HANDWRITING_MEDIA} (handwriting)"
        )
    return modality


def _check_media(data: bytes, filename: str | None, modality: str, name: str) -> None:
    """Refuse an upload that is clearly of the other modality than the model's."""
    other = _suffix_modality(filename) or sniff(data)
    if other is not None and other != modality:
        what = f"{filename!r}" if filename else "the uploaded data"
        raise UnsupportedMediaError(
            f"{what} looks like {other} but model {name!r} is a {modality} model; upload {_media(modality)}, "
            f"or pick a {other} model (see /models)"
        )


def _check_audio_header(data: bytes, label: str) -> None:
    """Refuse audio that is unreadable, too long or at an odd rate before decoding any of it."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile raises its own RuntimeError subclass, or TypeError on odd input
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        detail = re.sub(r"^Error opening <[^>]*>: ", "", detail).rstrip(".")
        raise UnsupportedMediaError(f"{label}: not a readable audio file ({detail}); upload {SPEECH_MEDIA}") from None
    rate, frames = int(info.samplerate), int(info.frames)
    if not limits.MIN_AUDIO_SAMPLE_RATE <= rate <= limits.MAX_AUDIO_SAMPLE_RATE:
        raise JobInputError(
            f"{label}: sample rate {rate} Hz is outside {limits.MIN_AUDIO_SAMPLE_RATE}.."
            f"{limits.MAX_AUDIO_SAMPLE_RATE} Hz; upload a recording at a usual rate such as 16000 Hz"
        )
    seconds = frames / rate
    if seconds > limits.MAX_AUDIO_SECONDS:
        raise InputTooLargeError(
            f"{label}: {seconds:.1f} s of audio is more than the {limits.MAX_AUDIO_SECONDS:g} s allowed; "
            f"cut it to at most {limits.MAX_AUDIO_SECONDS:g} s"
        )


def _read_upload(meta: dict[str, Any], data: bytes, label: str) -> np.ndarray:
    """Uploaded bytes -> raw (T, D) frames or offsets for the model of `meta`; everything in memory."""
    modality = meta["config"]["modality"]
    if modality == "speech":
        _check_audio_header(data, label)
    try:
        x = inference.read_input(meta, data, label)
    except inference.InferenceError as e:
        text = str(e).rstrip(".")
        raise JobInputError(f"{text}{' ' if text.endswith('?') else '; '}upload {_media(modality)}") from None
    if modality == "handwriting" and len(x) > limits.MAX_HANDWRITING_POINTS:
        raise InputTooLargeError(
            f"{label}: {len(x)} pen points is more than the {limits.MAX_HANDWRITING_POINTS} allowed; send fewer strokes"
        )
    return x


def _check_sampled(raws: list[np.ndarray], name: str, seed: int, what: str) -> None:
    """FloatingPointError unless every value the model sampled is finite (a NaN would be a silent WAV or an
    invisible stroke, and the component draw does not check its probabilities: distributions._multinomial)."""
    if not all(np.isfinite(raw).all() for raw in raws):
        raise FloatingPointError(f"model {name!r} produced non-finite {what} (seed {seed})")


def _wrap(media_type: str, headers: dict[str, str], body: bytes | str) -> dict[str, Any]:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return {"media_type": media_type, "headers": headers, "body_b64": base64.b64encode(raw).decode("ascii")}


def _check_text(lines: list[str], alphabet: str, key: str) -> None:
    """Refuse text a model cannot write: every character outside `alphabet` named at once (model.text); an empty or
    too long line (the contract's bounds make this rare) likewise."""
    try:
        check_lines(lines, alphabet)
    except ValueError as e:
        raise JobInputError(f"'{key}': {e}") from None


def _json(headers: dict[str, str], obj: dict[str, Any]) -> dict[str, Any]:
    return {"media_type": "application/json", "headers": headers, "json": obj}


def _finite(x: float, what: str, name: str) -> float:
    if not math.isfinite(x):
        raise JobInputError(
            f"model {name!r} gives a non-finite {what} for this input; the data is far outside what it was "
            "trained on (check that it is speech audio or pen strokes of the usual scale)"
        )
    return float(x)


def _round_list(values: Any, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


# Jobs ----------------------------------------------------------------------------------------------


class Jobs:
    """The job functions on one checkpoint cache."""

    def __init__(self, cache: ModelCache):
        self.cache = cache

    def run(self, kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The job of `kind` (one of contract.KINDS) on `params`."""
        if kind not in contract.KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        return getattr(self, kind)(params)

    def _sample(self, name: str, model: Any, meta: dict[str, Any], **kwargs: Any) -> np.ndarray:
        """One sequence of `inference.generate`: through the model's sampling engine when the cache batches (the
        same bytes for the same seed, shared steps with concurrent requests, no lock), else under the model's lock."""
        engine = self.cache.engine(name)
        if engine is not None:
            return inference.generate(model, meta, engine=engine, **kwargs)[0]
        with self.cache.lock(name):
            return inference.generate(model, meta, **kwargs)[0]

    def generate_speech(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Sample speech -> 16-bit PCM mono WAV at the model's rate, exactly duration_s long."""
        p = parse_params("generate_speech", params)
        duration, seed, temperature, mean = p.duration_s, _seed(p.seed), p.temperature, p.mean
        prime_data = _b64(p.prime_b64, "prime_b64")
        model, meta, name = self.cache.get(p.model, "speech")
        prime = None
        if prime_data is not None:
            _check_media(prime_data, None, "speech", name)
            prime = _read_upload(meta, prime_data, "the prime")
        rate = inference.sample_rate(meta)
        raw = self._sample(
            name, model, meta, seconds=duration, seed=seed, temperature=temperature, mean=mean, prime=prime
        )
        _check_sampled([raw], name, seed, "audio")
        wave = raw.reshape(-1)[: max(1, round(duration * rate))]
        headers = {"X-Model": name, "X-Seed": str(seed), "X-Output": "mean" if mean else "sample"}
        headers["X-Sample-Rate"] = str(rate)
        return _wrap("audio/wav", headers, inference.render_sample(meta, wave))

    def generate_handwriting(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Sample a line of handwriting -> SVG, or with format "json" the raw pen offsets."""
        p = parse_params("generate_handwriting", params)
        steps, seed, temperature = p.steps, _seed(p.seed), p.temperature
        bias = contract.HANDWRITING_BIAS if p.bias is None else p.bias
        try:
            color = render.check_colour(p.color)
        except ValueError as e:
            raise JobInputError(str(e)) from None
        prime_data = _b64(p.prime_b64, "prime_b64")
        if p.text is not None:
            return self._write_text(p, seed, color, prime_data)
        if prime_data is None and p.prime_text is None:
            invented = self._invent(p, seed)
            if invented is not None:
                return self._write_text(p, seed, color, None, invented)
        if p.style is not None:
            raise JobInputError(
                "'style' is the style to write 'text' in; send 'text' (the lines to write) too, or remove 'style'"
            )
        if p.prime_text is not None:
            raise JobInputError(
                "'prime_text' is the text of a primed line for 'text'; send 'text' (the lines to write) too, or remove "
                "'prime_text'"
            )
        model, meta, name = self.cache.get(p.model, "handwriting")
        prime = None
        if prime_data is not None:
            _check_media(prime_data, None, "handwriting", name)
            prime = _read_upload(meta, prime_data, "the prime")
        raw = self._sample(name, model, meta, steps=steps, seed=seed, temperature=temperature, bias=bias, prime=prime)
        _check_sampled([raw], name, seed, "pen offsets")
        headers = {"X-Model": name, "X-Seed": str(seed), "X-Output": "sample"}
        if p.format == "json":
            offsets = inference.offset_rows(raw)
            return _json(
                headers,
                {
                    "model": name,
                    "seed": seed,
                    "output": "sample",
                    "steps": steps,
                    "columns": ["dx", "dy", "pen"],
                    "note": "offsets in input units, y up; pen = 1 on the last point of each stroke",
                    "offsets": offsets,
                },
            )
        svg = render.handwriting_svg(raw, stroke_width=p.stroke_width, color=color)
        return _wrap("image/svg+xml", headers, svg)

    def _invent(self, p: contract.HandwritingParams, seed: int) -> tuple[str, str] | None:
        """(text model, a line of text it makes up) for a request without text, prime or prime text (model.wordlm:
        drawn from the request's seed, short enough for `steps`), or None where the request samples an unconditional
        line: it names an unconditional model, no text model with a word model is loaded, or its `steps` fit no word
        (none of that with `style`, which needs a text model, or with a text model named: JobInputError)."""
        found = self.cache.inventor(p.model)
        if found is None:
            return None
        name, lm = found
        text = lm.line(seed, p.steps)
        if text is None:
            if p.model is None and p.style is None:
                return None  # an unconditional line of that many steps, as without a word model
            need = math.ceil((lm.steps_per_char or 1) * min(len(w) for w in lm.words))
            raise JobInputError(
                f"steps={p.steps} leave no room for a word of the lines model {name!r} makes up; ask for at least "
                f"{need} steps, or send 'text'"
            )
        return name, text

    def _write_text(
        self,
        p: contract.HandwritingParams,
        seed: int,
        color: str,
        prime_data: bytes | None,
        invented: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write `p.text` (one line per "\\n"), or the line `invented` by `_invent`, with a text-conditioned model
        under its lock -> SVG with the lines one under another, or with format "json" each line's text and raw pen
        offsets. An invented line's text is in the X-Text header too."""
        if invented is None:
            assert p.text is not None
            model, meta, name = self.cache.get(p.model, "handwriting", text=True)
            lines = [normalise_text(line) for line in p.text.split("\n")]
        else:
            model, meta, name = self.cache.get(invented[0], "handwriting", text=True)
            lines = [invented[1]]
        alphabet = model.config.alphabet
        _check_text(lines, alphabet, "text")
        prime, prime_text = None, p.prime_text
        if p.style is not None:  # one of the model's own lines and its text, as 'prime' with 'prime_text'
            if prime_data is not None or p.prime_text is not None:
                raise JobInputError(
                    "'style' primes the model with one of its own lines, and 'prime' with 'prime_text' with yours; "
                    "send one of them: remove 'style', or remove 'prime' and 'prime_text'"
                )
            style = self.cache.style(name, p.style)
            prime, prime_text = style.offsets, style.text
        if p.prime_text is not None:
            _check_text([p.prime_text], alphabet, "prime_text")
        if prime_data is not None and p.prime_text is None:
            raise JobInputError(
                f"a prime for model {name!r}, which writes text, needs the text written in it: send 'prime_text', or "
                "remove 'prime'"
            )
        if prime_data is None and p.prime_text is not None:
            raise JobInputError(
                "'prime_text' is the text of the 'prime' line; send that line as 'prime' too, or remove 'prime_text'"
            )
        if prime_data is not None:
            _check_media(prime_data, None, "handwriting", name)
            prime = _read_upload(meta, prime_data, "the prime")
        # `steps` at its default: the model's cap (40 per character; 700 would cut a long line short).
        cap = None if p.steps == contract.DEFAULT_STEPS else p.steps
        kwargs = dict(
            max_steps=cap,
            seed=seed,
            temperature=p.temperature,
            bias=contract.TEXT_BIAS if p.bias is None else p.bias,
            prime=prime,
            prime_text=prime_text,
        )
        try:
            engine = self.cache.engine(name)  # (a text model's TextEngine: the same bytes, steps shared, no lock)
            if engine is not None:
                raws, finished = inference.generate_text(model, meta, lines, engine=engine, **kwargs)
            else:
                with self.cache.lock(name):
                    raws, finished = inference.generate_text(model, meta, lines, **kwargs)
        except inference.InferenceError as e:
            raise JobInputError(str(e)) from None
        _check_sampled(raws, name, seed, "pen offsets")
        headers = {"X-Model": name, "X-Seed": str(seed), "X-Output": "sample"}
        if invented is not None:
            headers["X-Text"] = lines[0]  # the made-up line (the alphabet is ASCII: a valid header value)
        if p.format == "json":
            doc = inference.text_sample_json(name, seed, lines, cap, finished, raws)
            return _json(headers, doc if invented is None else {**doc, "invented": True})
        svg = render.handwriting_lines_svg(raws, stroke_width=p.stroke_width, color=color)
        return _wrap("image/svg+xml", headers, svg)

    def _upload(
        self, p: contract.DataRequest, latent: bool = False
    ) -> tuple[Any, dict[str, Any], str, np.ndarray, str | None, str | None]:
        """The model and the uploaded input of score/analyze_latent -> (model, meta, name, raw input, filename, text):
        the named model, else the default of the data's modality; with `p.text` (the text written in a handwriting
        upload) a model that writes text (the text default unless named), and the text normalised and checked
        against its alphabet (else None)."""
        data = _b64(p.data_b64, "data_b64")
        assert data is not None
        filename = PurePath(p.filename.replace("\\", "/")).name or None if p.filename else None  # a label, never opened
        name = p.model
        if p.text is not None:
            modality = _data_modality(data, filename)
            if modality != "handwriting":
                what = f"{filename!r}" if filename else "the uploaded data"
                raise JobInputError(
                    f"'text' is the text written in a handwriting upload, but {what} is {modality}; remove 'text', "
                    f"or upload {HANDWRITING_MEDIA}"
                )
            model, meta, name = self.cache.get(name, latent=latent, text=True, upload=True)
            _check_media(data, filename, meta["config"]["modality"], name)
            text = normalise_text(p.text)
            _check_text([text], model.config.alphabet, "text")
            return model, meta, name, _read_upload(meta, data, filename or "the uploaded file"), filename, text
        if name is None:
            model, meta, name = self.cache.get(None, _data_modality(data, filename), latent=latent)
        else:
            model, meta, name = self.cache.get(name, latent=latent, upload=True)
            _check_media(data, filename, meta["config"]["modality"], name)
        return model, meta, name, _read_upload(meta, data, filename or "the uploaded file"), filename, None

    def score(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """ELBO and log-likelihood of an uploaded file: exact for RNNs, the IS estimate with num_samples draws
        for VRNNs (model.inference.elbo_and_likelihood, as `python -m model.evaluate`). With `text`, a text model's
        scores conditional on it, under the model's lock (model.inference.score_text; never batched)."""
        p = parse_params("score", params)
        k = p.num_samples
        model, meta, name, x_raw, _, text = self._upload(p)
        cfg = model.config
        exact = not cfg.has_latent
        x = inference.normalised(meta, x_raw, model.device)[0]
        scorer = None if text is not None else self.cache.scorer(name)  # unconditional requests side by side
        if scorer is not None:
            scored = inference.wait_result(scorer, scorer.submit(x, k, SCORE_SEED))
        else:
            with self.cache.lock(name):
                if text is not None:
                    scored = inference.score_text(model, x, text, k, SCORE_SEED)
                else:
                    (scored,) = score_batch(model, [x], k, [SCORE_SEED])
        per_frame = scored.per_frame.numpy()
        frames = len(x_raw)
        elbo = _finite(scored.elbo, "ELBO", name)
        log_likelihood = _finite(scored.log_likelihood, "log-likelihood", name)
        if not np.isfinite(per_frame).all():
            _finite(math.nan, "per-frame ELBO", name)
        jac = inference.norm_stats(meta).log_jacobian_per_frame
        result = {
            "model": name,
            "family": cfg.family,
            "output": cfg.output,
            "modality": cfg.modality,
            **({} if text is None else {"text": text, "conditional": True}),
            "elbo": elbo,
            "log_likelihood": log_likelihood,
            "exact": exact,
            "num_samples": 1 if exact else k,
            "frames": frames,
            "nats_per_frame": log_likelihood / frames,
            "per_frame": _round_list(per_frame),
            "space": "normalised",
            "units": "nats per sequence (per_frame: nats per frame)",
            "raw": {
                "elbo": elbo + frames * jac,
                "log_likelihood": log_likelihood + frames * jac,
                "nats_per_frame": (log_likelihood + frames * jac) / frames,
            },
        }
        return _json({"X-Model": name}, result)

    def analyze_latent(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The paper's Figure 2 for an uploaded file: KL per step (and per latent dimension) and delta_t,
        as JSON lists or, with format "png", the plot. Needs a VRNN or VRNN-I model. With `text`, a text model's
        analysis given the text, with the attention weights (phi) on each of its characters per step."""
        p = parse_params("analyze_latent", params)
        model, meta, name, x_raw, filename, text = self._upload(p, latent=True)
        with self.cache.lock(name), torch.no_grad():
            x = inference.normalised(meta, x_raw, model.device)
            analysis = model.analyze(x) if text is None else model.analyze(x, [text])
        headers = {"X-Model": name}
        if p.format == "png":
            with _render_lock:
                png = inference.latent_png(model, meta, analysis, x_raw, filename, text=text)
            return _wrap("image/png", headers, png)
        cfg = model.config
        units = "kl: nats per frame; delta_mu: squared distance of posterior means (latent units)"
        extra: dict[str, Any] = {}
        if text is not None:
            units += "; phi: the attention window's weight on each character (columns) at each frame (rows)"
            extra = {
                "text": text,
                "conditional": True,
                "characters": list(text),
                "phi": _round_list(analysis.phi[0].cpu()),
            }
        return _json(
            headers,
            {
                "model": name,
                "family": cfg.family,
                "modality": cfg.modality,
                "frames": len(x_raw),
                "z_dim": cfg.z_dim,
                "kl": _round_list(analysis.kl[0].cpu()),
                "delta_mu": _round_list(analysis.delta_mu[0].cpu()),
                "kl_per_dim": _round_list(analysis.kl_per_dim[0].cpu()),
                **extra,
                "space": "normalised",
                "units": units,
            },
        )

    def list_models(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Metadata of every loaded checkpoint, and the ones that failed to load."""
        parse_params("list_models", params)
        return _json({}, self.cache.describe())


def _entry_point(kind: str) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    def run(params: dict[str, Any] | None = None) -> dict[str, Any]:
        return Jobs(get_cache()).run(kind, params)

    run.__name__ = run.__qualname__ = kind
    return run


# RQ's entry points (worker.queueing.JOB_FUNCTIONS names them): the jobs on the process's cache.
generate_speech = _entry_point("generate_speech")
generate_handwriting = _entry_point("generate_handwriting")
score = _entry_point("score")
analyze_latent = _entry_point("analyze_latent")
list_models = _entry_point("list_models")
