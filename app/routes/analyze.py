"""POST /analyze/latent: the latent variables' KL and movement over an input (the paper's Figure 2)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from ..deps import BackendDep, MetricsDep, RequireApiKey, SettingsDep
from ..dispatch import run_job
from ..inputs import data_openapi, read_data
from ..schemas import AnalyzeRequest, LatentResult
from . import docs

router = APIRouter(prefix="/analyze", tags=["analyze"], dependencies=[RequireApiKey])


@router.post(
    "/latent",
    summary="Latent analysis of an input (JSON, or the Figure 2 plot as PNG)",
    response_class=Response,
    responses={
        200: {
            "model": LatentResult,
            "description": "Per-frame KL and delta_mu (JSON), or with ?format=png the plot",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "headers": docs.RESULT_HEADERS,
        },
        202: docs.ACCEPTED,
        **docs.JOB_ERRORS,
    },
    openapi_extra=data_openapi(AnalyzeRequest),
)
async def analyze_latent(
    request: Request,
    settings: SettingsDep,
    backend: BackendDep,
    metrics: MetricsDep,
    format: Annotated[Literal["json", "png"], Query(description="json (default) or png")] = "json",
) -> Response:
    """The same inputs as POST /score. Needs a model with latent variables (VRNN or VRNN-I): the default of
    the input's modality that has them when `model` is not given."""
    params, _ = await read_data(request, AnalyzeRequest, settings)
    return await run_job(
        request, backend, settings, metrics, "analyze_latent", {**params.model_dump(), "format": format}
    )
