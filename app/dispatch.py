"""Running a job for a route: submit, then either answer 202 at once (`Prefer: respond-async`) or wait up to
SYNC_WAIT_S and answer with the result, falling back to 202 when the job outlasts the wait (it keeps
running; the client polls its Location)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .backends import Backend
from .metrics import Metrics
from .settings import Settings

JOB_HEADER = "X-Job-Id"


def prefers(request: Request) -> tuple[bool, float | None]:
    """RFC 7240 `Prefer`: (respond-async asked for, the `wait=N` preference in seconds or None)."""
    asynchronous, wait = False, None
    for header in request.headers.getlist("prefer"):
        for token in header.split(","):
            name, _, value = token.split(";", 1)[0].strip().partition("=")
            name = name.strip().lower()
            if name == "respond-async":
                asynchronous = True
            elif name == "wait":
                with contextlib.suppress(ValueError):
                    wait = max(0.0, float(value.strip().strip('"')))
    return asynchronous, wait


def client_id(request: Request, settings: Settings) -> str | None:
    """Who submits, for MAX_JOBS_PER_CLIENT: the API key (hashed; RequireApiKey has checked it) when API_KEYS is
    set, else the remote address. None (no cap) when the cap is off or the address is unknown."""
    if settings.max_jobs_per_client <= 0:
        return None
    key = request.headers.get("x-api-key")
    if settings.api_key_set and key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    host = request.client.host if request.client else None
    return f"addr:{host}" if host else None


def job_url(request: Request, job_id: str) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}/jobs/{job_id}"


def state_body(request: Request, info: dict[str, Any]) -> dict[str, Any]:
    url = job_url(request, info["id"])
    return {**info, "location": url, "result_url": f"{url}/result"}


def accepted(request: Request, info: dict[str, Any]) -> JSONResponse:
    """202 with the job's state, Location: /jobs/{id}, and when to look again."""
    url = job_url(request, info["id"])
    headers = {"Location": url, JOB_HEADER: info["id"], "Retry-After": "1"}
    return JSONResponse(state_body(request, info), status_code=202, headers=headers)


def result_response(result: dict[str, Any], job_id: str) -> Response:
    """A job's result dict (docs/SERVICE.md) -> the HTTP response: its media type, headers and body."""
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    headers[JOB_HEADER] = job_id
    media_type = result.get("media_type") or "application/octet-stream"
    if "json" in result:
        return JSONResponse(result["json"], media_type=media_type, headers=headers)
    body = base64.b64decode(result.get("body_b64") or "")
    return Response(body, media_type=media_type, headers=headers)


async def run_job(
    request: Request, backend: Backend, settings: Settings, metrics: Metrics, kind: str, params: dict[str, Any]
) -> Response:
    client = client_id(request, settings)
    asynchronous, wait = prefers(request)
    if asynchronous:
        job_id = await run_in_threadpool(backend.submit, kind, params, client)
        metrics.submitted.labels(kind).inc()
        info = await run_in_threadpool(backend.status, job_id)
        response = accepted(request, info)
        response.headers["Preference-Applied"] = "respond-async"
        return response
    timeout = settings.sync_wait_s if wait is None else min(wait, settings.sync_wait_s)

    def submit_and_wait() -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        # one trip to the thread pool for the whole synchronous call (each trip costs a thread handoff)
        job_id = backend.submit(kind, params, client)
        metrics.submitted.labels(kind).inc()
        return job_id, *backend.wait_result(job_id, timeout)  # raises JobFailedError for a failed job

    job_id, info, result = await run_in_threadpool(submit_and_wait)
    if result is None:
        return accepted(request, info)
    return result_response(result, job_id)
