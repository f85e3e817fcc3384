"""The service's one Settings object: every knob, read from environment variables, with its default and why.

Each field is read from the upper-case environment variable of its name (`REDIS_URL`, `SYNC_WAIT_S`, ...);
tests pass values to `Settings(...)` directly. `get_settings` is the dependency routes name (`SettingsDep`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    redis_url: str | None = Field(
        None,
        description="Redis for the RQ job queue (e.g. redis://localhost:6379/0). None (unset or empty): embedded "
        "mode, where the API process runs the job functions itself in a small thread pool, so one command serves "
        "the checkpoints with nothing else running.",
    )
    checkpoint_dir: Path = Field(
        Path("checkpoints"),
        description="Folder of NAME.safetensors + NAME.json checkpoints: loaded in embedded mode, read for "
        "metadata only (no torch) in Redis mode.",
    )
    queue_name: str = Field("vrnn", description="RQ queue the API enqueues to and `python -m worker` listens on.")
    host: str = Field("127.0.0.1", description="`python -m app` binds here; 0.0.0.0 in containers.")
    port: int = Field(8000, ge=1, le=65535, description="`python -m app` listens here.")
    max_upload_bytes: int = Field(
        10 * MIB,
        ge=1,
        description="Largest input file (upload, or decoded data_b64 / prime): 10 MiB is about 5 minutes of "
        "16 kHz 16-bit speech, far more than a latent plot can show. Larger: 413.",
    )
    max_body_bytes: int = Field(
        16 * MIB,
        ge=1,
        description="Largest request body, checked against Content-Length and counted while streaming: room for "
        "a MAX_UPLOAD_BYTES file in base64 (4/3 larger) inside JSON, or in multipart. Larger: 413.",
    )
    sync_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long a synchronous call waits for its job; one that outlasts it answers 202 + Location "
        "like `Prefer: respond-async` (the job keeps running: work is never dropped).",
    )
    job_timeout_s: int = Field(
        300,
        ge=1,
        description="Redis mode: a worker stops a job running longer and the call answers 504. (A job whose "
        "worker died is recovered by heartbeat, about 100 s later: see worker.queueing.enqueue.) A job that waited "
        "this long while no worker is alive on the queue is failed (503, 'no worker'), so that a polling client "
        "always sees an end. Embedded jobs cannot be stopped and have no timeout.",
    )
    redis_timeout_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="Redis mode: the longest wait for one Redis command (connecting: at most 2 s). A Redis that is "
        "down or hung makes requests answer 503 after this, never hang.",
    )
    result_ttl_s: int = Field(3600, ge=1, description="How long a finished job's result can be fetched.")
    failure_ttl_s: int = Field(3600, ge=1, description="How long a failed job's error can be fetched.")
    job_retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Redis mode: extra attempts for a job whose attempt failed for a reason other than its input "
        "(its worker died, a CUDA or Redis error); bad input and timeouts are not retried.",
    )
    max_queued_jobs: int = Field(
        100,
        ge=1,
        description="Backpressure: a submission while this many jobs wait answers 503 + Retry-After (RQ has no "
        "queue cap of its own). Embedded mode counts jobs waiting for a thread.",
    )
    max_jobs_per_client: int = Field(
        8,
        ge=0,
        description="Fairness: jobs one client may have queued or running at once (client = its API key when "
        "API_KEYS is set, else its remote address); one more answers 429 + Retry-After. 0: no per-client cap. "
        "Counted across API processes in Redis mode.",
    )
    retry_after_s: int = Field(
        5, ge=1, description="Retry-After (seconds) of 503 and 429 answers (queue full, not ready, client at its cap)."
    )
    embedded_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Embedded mode: threads running jobs at once.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="PyTorch intra-op threads of the process that runs jobs. 0: the available cores (CPU affinity "
        "and cgroup quota) divided among the EMBEDDED_WORKERS job threads, at least 1, because job runners that "
        "each use every core fight over them and serve fewer requests under load than one at a time. "
        "`python -m worker` reads the same variable (default 1: one single-threaded worker per core).",
    )
    batch_max: int = Field(
        16,
        ge=0,
        le=256,
        description="Embedded mode: generation requests for the same model share one step-level batch of at most "
        "this many rows (model.engine.SamplingEngine, one per model); every seed still gives the bytes it gives "
        "alone. Generation jobs then run in BATCH_MAX threads of their own (they wait on the batch), beside the "
        "EMBEDDED_WORKERS threads of the other jobs. 0 or 1: no batching, each generation job samples alone under "
        "the model's lock in the EMBEDDED_WORKERS pool.",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="Embedded mode, with batching: how long an idle sampling engine waits for companions before its "
        "first step (0: start at once; later requests join the running batch at a step boundary anyway).",
    )
    device: str = Field(
        "auto",
        description="Embedded mode: where the models run, auto (CUDA when PyTorch sees a GPU), cpu or cuda. "
        "Workers read their own DEVICE.",
    )
    max_stored_jobs: int = Field(
        256,
        ge=1,
        description="Embedded mode: finished jobs kept in memory (results included) besides RESULT_TTL_S; the "
        "oldest finished ones go first.",
    )
    api_keys: str = Field(
        "",
        repr=False,
        description="Comma-separated API keys. When set, every route except /, /static, /healthz, /readyz, "
        "/metrics and the OpenAPI docs needs `X-API-Key: <one of them>` (else 401). Keys are never logged or "
        "echoed.",
    )
    log_level: str = Field("info", description="uvicorn's log level for `python -m app`.")

    @cached_property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def embedded(self) -> bool:
        return not self.redis_url


def get_settings() -> Settings:
    """Settings from the environment (one instance per app: `create_app` keeps it on app.state)."""
    return Settings()
