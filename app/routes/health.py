"""GET /healthz (the process answers), /readyz (jobs can run), /metrics (Prometheus). No API key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..backends import BackendError
from ..deps import BackendDep, MetricsDep, SettingsDep
from ..metrics import CONTENT_TYPE
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> dict:
    """200 whenever the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `reasons` says why"}},
)
async def readyz(backend: BackendDep, settings: SettingsDep) -> JSONResponse:
    """Embedded mode: the checkpoints are loaded (at least one model). Redis mode: Redis answers, a worker is
    registered on the queue, and CHECKPOINT_DIR holds at least one model. 503 with `reasons` otherwise.
    `failed` lists the checkpoints that could not be loaded (ready or not: the others keep serving)."""
    # Both at once: with Redis hung each waits REDIS_TIMEOUT_S, and the probe should not wait twice.
    (ok, reasons), failed = await asyncio.gather(run_in_threadpool(backend.ready), run_in_threadpool(_failed, backend))
    body = {"ready": ok, "mode": backend.mode, "reasons": reasons, "failed": failed}
    headers = None if ok else {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse(body, status_code=200 if ok else 503, headers=headers)


def _failed(backend) -> dict[str, str]:
    """Checkpoints that could not be loaded: they do not make the service unready (the others serve), but are
    reported."""
    try:
        return dict(backend.models().get("failed") or {})
    except BackendError:
        return {}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Text exposition"}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)
