"""Error answers: every error body is {"detail": "<what went wrong and what to change>"}.

422 invalid input, 413 too large, 415 wrong media type, 401 no or wrong API key, 404 unknown model or
job, 429 + Retry-After when the client has MAX_JOBS_PER_CLIENT jobs queued or running, 503 + Retry-After when
the queue is full or nobody can run jobs. Bad input never gives a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.contract import describe

from .backends import ClientLimitError, JobFailedError, QueueFullError, UnavailableError, UnknownJobError

log = logging.getLogger(__name__)


def error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def describe_errors(errors: Iterable[dict[str, Any]], model: type[BaseModel] | None = None) -> str:
    """Validation errors -> "invalid request: " and worker.contract.describe's sentences (the API's field names)."""
    return "invalid request: " + describe(errors, model)


def validate(model: type[BaseModel], data: Any) -> Any:
    """`model.model_validate(data)`, with failures as 422 answers that name the allowed parameters."""
    from fastapi import HTTPException

    try:
        return model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as e:
        raise HTTPException(422, describe_errors(e.errors(include_url=False), model)) from None


def retry_after(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


def install(app: FastAPI, retry_after_s: int) -> None:
    """Register the handlers that turn exceptions into the answers above."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: Sequence[Any] = exc.errors()
        return error(422, describe_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UnknownJobError)
    async def unknown_job(request: Request, exc: UnknownJobError) -> JSONResponse:
        return error(404, f"no job {str(exc)[:80]!r}: never submitted, or its result has expired")

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return error(503, f"the job queue is full ({exc}); retry later", retry_after(retry_after_s))

    @app.exception_handler(ClientLimitError)
    async def client_limit(request: Request, exc: ClientLimitError) -> JSONResponse:
        detail = f"too many jobs at once: {exc} (MAX_JOBS_PER_CLIENT); wait for one to finish, then retry"
        return error(429, detail, retry_after(retry_after_s))

    @app.exception_handler(UnavailableError)
    async def unavailable(request: Request, exc: UnavailableError) -> JSONResponse:
        return error(503, f"jobs cannot run now: {exc}; retry later", retry_after(retry_after_s))

    @app.exception_handler(JobFailedError)
    async def job_failed(request: Request, exc: JobFailedError) -> JSONResponse:
        return error(exc.status_code, exc.message, {"X-Job-Id": exc.job_id})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error(500, "internal server error (logged); retrying may help")
