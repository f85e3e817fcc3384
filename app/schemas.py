"""Request and response bodies. Bounds are worker.limits' (the job functions enforce the same), so a
request the API accepts is one the worker accepts; defaults are worker.contract's (docs/SERVICE.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker import contract, limits  # plain constants (no torch): the bounds the job functions enforce


def _model_name() -> Any:
    return Field(
        None,
        min_length=1,
        max_length=limits.MAX_MODEL_NAME_CHARS,
        pattern=limits.MODEL_NAME_PATTERN,
        description="Checkpoint name (file stem, see GET /models; the names depend on the server's checkpoints): "
        f"letters, digits, '.', '_' and '-', at most {limits.MAX_MODEL_NAME_CHARS} characters. Omitted: the default "
        "model of the modality. A well-formed name that no loaded checkpoint has: 404.",
        examples=[None],
    )


def _seed() -> Any:
    return Field(
        None,
        ge=0,
        le=limits.MAX_SEED,
        description="Random seed: the same seed, model and parameters give the same bytes. Omitted: drawn at random "
        "and reported in the X-Seed header.",
    )


def _temperature() -> Any:
    return Field(
        1.0,
        gt=0,
        le=limits.MAX_TEMPERATURE,
        description=f"Scales the output distribution's spread (1: as trained): any number above 0 and at most "
        f"{limits.MAX_TEMPERATURE:g}. Near 0 the sample tends to the most likely mixture component's mean (tiny and "
        "subnormal values give that limit); above about 2 it is mostly noise.",
    )


class _Request(BaseModel):
    # Unknown fields are refused, so that a misspelt parameter is an error rather than silently ignored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SpeechRequest(_Request):
    model: str | None = _model_name()
    duration_s: float = Field(
        contract.DEFAULT_DURATION_S, ge=limits.MIN_DURATION_S, le=limits.MAX_DURATION_S, description="Seconds of audio."
    )
    seed: int | None = _seed()
    temperature: float = _temperature()
    mean: bool = Field(False, description="Emit the decoder mean instead of a sample (X-Output says which).")
    prime: str | None = Field(
        None, description="Base64 WAV or FLAC audio to continue from; the response holds only the continuation."
    )

    def job_params(self) -> dict[str, Any]:
        params = self.model_dump(exclude={"prime"})
        params["prime_b64"] = self.prime
        return params


class HandwritingRequest(_Request):
    model: str | None = _model_name()
    steps: int = Field(
        contract.DEFAULT_STEPS, ge=limits.MIN_STEPS, le=limits.MAX_STEPS, description="Pen steps (one line: about 700)."
    )
    seed: int | None = _seed()
    bias: float = Field(
        0.0,
        ge=0,
        le=limits.MAX_BIAS,
        description=f"Graves' sampling bias, from 0 (none) to {limits.MAX_BIAS:g}: higher writes neater.",
    )
    temperature: float = _temperature()
    prime: str | None = Field(
        None, description="Base64 IAM-OnDB XML or JSON strokes to continue from; the response holds the continuation."
    )
    stroke_width: float = Field(
        contract.DEFAULT_STROKE_WIDTH, gt=0, le=limits.MAX_STROKE_WIDTH, description="SVG stroke width in pixels."
    )
    color: str = Field(
        contract.DEFAULT_COLOR,
        max_length=40,
        description="Ink colour: #rgb, #rrggbb or a CSS name such as navy.",
        examples=["navy"],
    )

    def job_params(self, fmt: str) -> dict[str, Any]:
        params = self.model_dump(exclude={"prime"})
        params.update(prime_b64=self.prime, format=fmt)
        return params


class DataRequest(_Request):
    """The JSON form of /score and /analyze/latent (multipart uploads carry the same fields)."""

    model: str | None = _model_name()
    data_b64: str = Field(
        ...,
        min_length=1,
        description="Base64 (RFC 4648, with padding; whitespace and a `data:...;base64,` prefix are ignored) of the "
        "input: WAV/FLAC audio, IAM-OnDB XML or JSON strokes. Its decoded size is limited (MAX_UPLOAD_BYTES, 413).",
        json_schema_extra={"format": "byte", "contentEncoding": "base64"},
    )
    filename: str | None = Field(
        None, max_length=limits.MAX_FILENAME_CHARS, description="Its file name; the suffix picks the parser."
    )


class ScoreRequest(DataRequest):
    num_samples: int = Field(
        contract.DEFAULT_NUM_SAMPLES,
        ge=limits.MIN_NUM_SAMPLES,
        le=limits.MAX_NUM_SAMPLES,
        description="Importance samples K of the likelihood estimate (the paper: 40). Ignored by RNN models (exact).",
    )


class AnalyzeRequest(DataRequest):
    pass


# Responses (for the OpenAPI document; the bodies come from the job functions) --------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RawScores(_Open):
    elbo: float
    log_likelihood: float
    nats_per_frame: float


class ScoreResult(_Open):
    """Nats, in the normalised space of the model (`space`); `raw` in the raw data space."""

    model: str
    family: str
    output: str
    modality: str
    elbo: float = Field(description="Evidence lower bound of the sequence (nats).")
    log_likelihood: float = Field(description="log p(x): exact for RNNs, the K-sample IS estimate otherwise (nats).")
    exact: bool
    num_samples: int
    frames: int
    nats_per_frame: float
    per_frame: list[float] = Field(description="ELBO terms -(nll + kl) per frame (nats).")
    space: str = "normalised"
    raw: RawScores


class LatentResult(_Open):
    model: str
    frames: int
    kl: list[float] = Field(description="KL(q || prior) per frame (nats).")
    delta_mu: list[float] = Field(description="sum_j (mu_z,t - mu_z,t-1)^2 per frame: the paper's delta_t.")
    kl_per_dim: list[list[float]] = Field(description="KL per frame and latent dimension (nats).")
    space: str


class JobState(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "started", "finished", "failed"]
    enqueued_at: str | None = Field(description="ISO 8601 UTC.")
    started_at: str | None
    ended_at: str | None
    error: str | None = Field(description="Why it failed (bad input says what to change).")
    error_status: int | None = Field(description="The HTTP status the synchronous call would have answered.")
    location: str = Field(description="This job's URL.")
    result_url: str = Field(description="Where the result is once finished.")


class ModelList(_Open):
    models: list[dict[str, Any]]
    failed: dict[str, str] = Field(description="Checkpoints that could not be loaded, with the reason.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    mode: Literal["embedded", "redis"]
    reasons: list[str] = Field(description="Why it is not ready (empty when ready).")
    failed: dict[str, str] = Field(
        default_factory=dict,
        description="Checkpoints that could not be loaded, with the reason; the others keep serving (as /models).",
    )


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong and, for bad input, what to change.")
