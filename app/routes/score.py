"""POST /score: the ELBO and log-likelihood of an input under a model."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..deps import BackendDep, MetricsDep, RequireApiKey, SettingsDep
from ..dispatch import run_job
from ..inputs import data_openapi, read_data
from ..schemas import ScoreRequest, ScoreResult
from . import docs

router = APIRouter(tags=["score"], dependencies=[RequireApiKey])


@router.post(
    "/score",
    summary="Score an input: ELBO and log-likelihood (nats)",
    response_class=Response,
    responses={
        200: {"model": ScoreResult, "description": "Scores in nats", "headers": docs.RESULT_HEADERS},
        202: docs.ACCEPTED,
        **docs.JOB_ERRORS,
    },
    openapi_extra=data_openapi(ScoreRequest),
)
async def score(request: Request, settings: SettingsDep, backend: BackendDep, metrics: MetricsDep) -> Response:
    """Send the input as a multipart `file` (WAV/FLAC, IAM-OnDB XML or JSON strokes) with form fields `model`,
    `num_samples`, or as JSON with `data_b64` (and `filename`). Without `model` the default model of the
    input's modality scores it. `log_likelihood` is exact for RNNs and a `num_samples` importance-sampled
    estimate for VRNNs (never below the ELBO)."""
    params, _ = await read_data(request, ScoreRequest, settings)
    return await run_job(request, backend, settings, metrics, "score", params.model_dump())
