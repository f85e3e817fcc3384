"""Request and response bodies. The request bodies are worker.contract's parameter models (the job functions
validate their parameters with the same models), so a request the API accepts is one the worker accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.contract import AnalyzeRequest, HandwritingRequest, ScoreRequest, SpeechRequest  # noqa: F401 (re-exported)

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
    text: str | None = Field(None, description="With `text`: the text (normalised) the scores are conditional on.")
    conditional: bool | None = Field(None, description="With `text`: true (the scores are log p(x | text)).")


class LatentResult(_Open):
    model: str
    frames: int
    kl: list[float] = Field(description="KL(q || prior) per frame (nats).")
    delta_mu: list[float] = Field(description="sum_j (mu_z,t - mu_z,t-1)^2 per frame: the paper's delta_t.")
    kl_per_dim: list[list[float]] = Field(description="KL per frame and latent dimension (nats).")
    space: str
    text: str | None = Field(None, description="With `text`: the text (normalised) the analysis is conditional on.")
    conditional: bool | None = Field(None, description="With `text`: true.")
    characters: list[str] | None = Field(None, description="With `text`: its characters, the columns of `phi`.")
    phi: list[list[float]] | None = Field(
        None, description="With `text`: the attention window's weight on each character (columns) per frame (rows)."
    )


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
