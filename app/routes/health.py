"""GET /healthz (the process answers), /readyz (jobs can run), /metrics (Prometheus). No API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

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
    registered on the queue, and CHECKPOINT_DIR holds at least one model. 503 with `reasons` otherwise."""
    ok, reasons = await run_in_threadpool(backend.ready)
    body = {"ready": ok, "mode": backend.mode, "reasons": reasons}
    headers = None if ok else {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse(body, status_code=200 if ok else 503, headers=headers)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Text exposition"}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)
