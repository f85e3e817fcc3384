"""The ASGI app: `app.main:app` (uvicorn), or `create_app(Settings(...))` in tests."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from . import errors
from .backends import make_backend
from .bodylimit import BodyLimitMiddleware
from .inputs import document_limits
from .metrics import Metrics, MetricsMiddleware, configure_access_log
from .routes import analyze, generate, health, jobs, models, page, score
from .routes.page import STATIC_DIR
from .settings import Settings, get_settings

log = logging.getLogger("app")

DESCRIPTION = """Variational RNNs (Chung et al. 2015) for speech and handwriting: sample speech as WAV and
handwriting as SVG, score inputs, and analyse the latent variables.

Every job endpoint answers synchronously, or with `Prefer: respond-async` at once with `202 Accepted` and
`Location: /jobs/{id}`; a synchronous call that outlasts the server's wait answers the same 202. Errors
are `{"detail": "..."}` saying what to change."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    configure_access_log(settings.log_level)  # app.access: one JSON line per request, with its X-Request-Id

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = make_backend(settings, metrics.observe_job)
        await run_in_threadpool(backend.start)  # embedded: loads every checkpoint once
        app.state.backend = backend
        metrics.queue_depth = backend.queue_depth
        metrics.bind(backend)  # scrape-time gauges: running and failed jobs, workers
        log.info("serving in %s mode, checkpoints from %s", backend.mode, settings.checkpoint_dir)
        try:
            yield
        finally:
            backend.close()

    # docs_url=None: /docs is served below from a vendored Swagger UI, not from a CDN, so that it works
    # on machines without internet access (like the demo page, which loads nothing from outside).
    app = FastAPI(title="VRNN service", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None)
    app.state.settings = settings
    app.state.metrics = metrics

    def openapi() -> dict[str, Any]:  # the document states this app's size limits (settings), not the defaults
        if app.openapi_schema is None:
            # A copy: FastAPI's document shares dicts with the routes' openapi_extra, which every app shares.
            app.openapi_schema = document_limits(copy.deepcopy(FastAPI.openapi(app)), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    errors.install(app, settings.retry_after_s)
    for module in (generate, score, analyze, jobs, models, health, page):
        app.include_router(module.router)
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")  # before /static
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API documentation",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, sees every answer
    return app


app = create_app()
