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

from .backends import ClientLimitError, JobFailedError, QueueFullError, UnavailableError, UnknownJobError

log = logging.getLogger(__name__)

_SHOWN_CHARS = 60  # longest echo of a bad value in a message


def error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def describe_errors(errors: Iterable[dict[str, Any]], model: type[BaseModel] | None = None) -> str:
    """Pydantic / FastAPI validation errors -> one sentence per problem, each saying what to change."""
    parts = []
    for e in errors:
        kind = e.get("type", "")
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form", "header")]
        field = ".".join(loc)
        if kind == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "malformed")
            parts.append(f'the body is not valid JSON ({why}): send a JSON object such as {{"seed": 1}}')
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            parts.append(f"the body must be a JSON object of parameters, not {_shown(e.get('input'))}")
        elif kind == "missing":
            parts.append(f"'{field}' is required")
        elif kind == "extra_forbidden":
            allowed = f" (the parameters are {', '.join(model.model_fields)})" if model is not None else ""
            parts.append(f"'{field}' is not a parameter here; remove or correct it{allowed}")
        elif kind == "literal_error" or kind == "enum":
            parts.append(f"'{field}': {e.get('msg', 'not allowed')}, got {_shown(e.get('input'))}")
        else:
            msg = e.get("msg", "invalid")
            parts.append(f"'{field}': {msg[0].lower() + msg[1:] if msg else msg}, got {_shown(e.get('input'))}")
    return "invalid request: " + "; ".join(parts or ["the request could not be read"])


def validate(model: type[BaseModel], data: Any) -> Any:
    """`model.model_validate(data)`, with failures as 422 answers that name the allowed parameters."""
    from fastapi import HTTPException

    try:
        return model.model_validate(data)
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
