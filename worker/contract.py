"""The contract at the seam between app/ and worker/, written once: the job kinds and their parameters, the errors a
job raises on purpose with the HTTP status each answers, the one parser of a failed job's error text, what an upload
is by its first bytes, and a checkpoint's public description (GET /models).

Plain Python, no torch: the API process imports it in Redis mode. docs/ARCHITECTURE.md shows where it sits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A job is a call of the function of worker.jobs named by its kind on a JSON-safe dict of these parameters.
PARAMS: dict[str, tuple[str, ...]] = {
    "generate_speech": ("model", "duration_s", "seed", "temperature", "mean", "prime_b64"),
    "generate_handwriting": (
        "model",
        "steps",
        "seed",
        "bias",
        "temperature",
        "prime_b64",
        "stroke_width",
        "color",
        "format",
    ),
    "score": ("model", "num_samples", "data_b64", "filename"),
    "analyze_latent": ("model", "data_b64", "filename", "format"),
    "list_models": (),
}
KINDS = tuple(PARAMS)
# The defaults of the parameters that have one (the API's request models and the job functions both use them).
DEFAULT_DURATION_S = 2.0  # seconds of speech; the paper's Figure 3 samples are 2.0 s long
DEFAULT_STEPS = 700  # pen steps of handwriting: about one IAM-OnDB line
DEFAULT_NUM_SAMPLES = 40  # the paper's K for the IS estimate
DEFAULT_COLOR = "#1a1a1a"
DEFAULT_STROKE_WIDTH = 2.0


# Errors ------------------------------------------------------------------------------------------------------------


class JobError(Exception):
    """An error a job raises on purpose; `status` is the HTTP status of the synchronous call."""

    status = 500


class JobInputError(JobError, ValueError):
    """Invalid input (a parameter, an upload): 422 with this message, which says what to change."""

    status = 422


class InputTooLargeError(JobInputError):
    """Input over a size limit of `worker.limits` (bytes, seconds of audio, pen points): 413."""

    status = 413


class UnsupportedMediaError(JobInputError):
    """An upload of the wrong kind (not audio, not strokes, or the other modality than the model's): 415."""

    status = 415


class UnknownModelError(JobError, LookupError):
    """No loaded checkpoint has that name, or none of the requested modality is loaded: 404."""

    status = 404

    def __str__(self) -> str:  # LookupError/KeyError-style quoting would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


POISON_ERROR = "PoisonJobError"
# Each error by class name (as a failed job's record or traceback names it) -> HTTP status; any other: 500.
ERROR_STATUS = {
    **{c.__name__: c.status for c in (JobInputError, InputTooLargeError, UnsupportedMediaError, UnknownModelError)},
    "JobTimeoutException": 504,  # RQ: the job outran JOB_TIMEOUT_S
    "NoWorkerError": 503,  # the API: no live worker took the job in JOB_TIMEOUT_S
}
# Server-side failures whose message is safe and useful to pass on (the rest stay in the worker's log).
PUBLIC_ERRORS = ("JobTimeoutException", "AbandonedJobError", "NoWorkerError", POISON_ERROR)
INTERNAL_ERROR_MESSAGE = "the job failed on the server (an internal error, logged by the worker); retrying may help"
ABANDONED_MESSAGE = "the worker running this job stopped (killed or lost) before the job finished"


def error_info(exc: BaseException) -> dict[str, Any]:
    """A job's exception -> {"type", "message", "status"}, as the worker records it for the API."""
    kind = type(exc).__name__
    message = ABANDONED_MESSAGE if kind == "AbandonedJobError" else str(exc) or kind
    status = exc.status if isinstance(exc, JobError) else ERROR_STATUS.get(kind, 500)
    return {"type": kind, "message": message[:2000], "status": status}


def parse_error(text: str | None) -> dict[str, Any] | None:
    """A failed job's exception text (RQ's traceback string, or "Name: message") -> error_info's dict for its last
    exception, or None when the text names none."""
    text = (text or "").rstrip()
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0:  # the last exception: the first unindented line after its frames
        lines = text[at:].splitlines()[1:]
        while lines and (not lines[0] or lines[0][0].isspace()):
            lines.pop(0)
        text = "\n".join(lines)
    head, _, message = text.partition(": ")
    kind = head.rsplit(".", 1)[-1].strip()
    if not kind.isidentifier():
        return None
    return {"type": kind, "message": message.strip() or kind, "status": ERROR_STATUS.get(kind, 500)}


def public(error: dict[str, Any] | None) -> tuple[int, str]:
    """(HTTP status, message) the API answers for a failed job's error: bad input and the PUBLIC_ERRORS word for
    word, anything else a 500 whose details stay in the worker's log."""
    error = error or {}
    status = int(error.get("status", 500))
    if error.get("type") in PUBLIC_ERRORS or 400 <= status < 500:
        return status, str(error.get("message") or INTERNAL_ERROR_MESSAGE)
    return 500, INTERNAL_ERROR_MESSAGE


# Uploads -----------------------------------------------------------------------------------------------------------

# What `sniff` accepts, for the OpenAPI document: the file's first bytes decide, not its Content-Type.
CONTENT_RULE = (
    "The content decides what it is, not its name or Content-Type: RIFF/RF64 WAVE, FLAC, Ogg or AIFF audio, a "
    ".npy array (\\x93NUMPY), or text (UTF-8, BOM and leading whitespace allowed) starting with '<' (IAM-OnDB "
    "XML), '[' or '{' (JSON strokes); anything else: 415."
)


def sniff(data: bytes) -> str | None:
    """The modality of an upload by its first bytes (CONTENT_RULE): "speech", "handwriting", or None."""
    head = data[:64]
    if (head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE") or head[:4] in (b"fLaC", b"OggS"):
        return "speech"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "speech"
    if head[:6] == b"\x93NUMPY":
        return "handwriting"
    text = data[:256].decode("utf-8", "ignore").lstrip("\ufeff \t\r\n")
    return "handwriting" if text[:1] in ("<", "[", "{") else None


# Checkpoints -------------------------------------------------------------------------------------------------------

MAX_METADATA_BYTES = 1024 * 1024  # a checkpoint's JSON is a few kB; anything this large is not one


def model_summary(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint's public description in GET /models (normalisation statistics and the like stay private)."""
    cfg = meta["config"]
    modality = cfg.get("modality")
    return {
        "name": name,
        "display_name": meta.get("name"),
        "modality": modality,
        "family": cfg.get("family"),
        "output": cfg.get("output"),
        "latent": cfg.get("family") != "rnn",
        "sample_rate": meta.get("sample_rate") if modality == "speech" else None,
        "frame_size": meta.get("frame_size", cfg.get("x_dim")),
        "params": meta.get("params"),
        "metrics": meta.get("metrics", {}),
        "dataset": meta.get("dataset", {}),
        "created": meta.get("created"),
    }


def looks_like_checkpoint(path: Path) -> bool:
    """Whether a JSON file is a checkpoint's metadata (a config object and a format version), not some other JSON."""
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            return False
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("config"), dict) and "format_version" in meta
