"""GET /jobs/{id} (a job's state) and GET /jobs/{id}/result (its result: the synchronous call's answer)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ..backends import JobPendingError
from ..deps import BackendDep, RequireApiKey
from ..dispatch import accepted, result_response, state_body
from ..schemas import JobState
from . import docs

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[RequireApiKey])


@router.get("/{job_id}", summary="A job's state", response_model=JobState, responses=docs.errors(401, 404, 503))
async def read_job(job_id: str, request: Request, backend: BackendDep) -> dict:
    """queued, started, finished or failed (with `error`, and `error_status`, the status the synchronous call
    would have answered), with its times in ISO 8601 UTC."""
    return state_body(request, await run_in_threadpool(backend.status, job_id))


@router.get(
    "/{job_id}/result",
    summary="A job's result",
    response_class=Response,
    responses={
        200: {"description": "The same body and headers as the synchronous call (WAV, SVG, PNG or JSON)"},
        202: {**docs.ACCEPTED, "description": "Not finished yet: the job's state; ask again after Retry-After."},
        **docs.errors(401, 404, 413, 422, 503),
    },
)
async def read_job_result(job_id: str, request: Request, backend: BackendDep) -> Response:
    """Finished: the body the synchronous call returns. Failed: the error it would have answered (422 bad
    input, 404 unknown model, ...). Still queued or running: 202 with the job's state and Retry-After
    (not an error: the result is coming). Unknown or expired: 404."""
    try:
        result = await run_in_threadpool(backend.result, job_id)
    except JobPendingError as pending:
        return accepted(request, pending.info)
    return result_response(result, job_id)
