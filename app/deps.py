"""Dependencies, declared once: routes name `SettingsDep`, `BackendDep`, `MetricsDep`; protected routers
add `RequireApiKey`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from .backends import Backend
from .metrics import Metrics
from .settings import Settings

API_KEY_HEADER = "X-API-Key"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Needed when the server sets API_KEYS (comma-separated); otherwise ignored.",
)


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """401 unless API_KEYS is empty or the X-API-Key header holds one of its keys (compared in constant time)."""
    keys = settings.api_key_set
    if not keys:
        return
    given = (key or "").encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        what = "missing" if not key else "not a valid key"
        message = f"the {API_KEY_HEADER} header is {what}: send one of the server's API keys"
        raise HTTPException(401, message, {"WWW-Authenticate": "ApiKey"})


RequireApiKey = Depends(require_api_key)
