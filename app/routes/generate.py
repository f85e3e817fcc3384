"""POST /generate/speech (WAV) and /generate/handwriting (SVG, or JSON offsets)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from ..deps import BackendDep, MetricsDep, RequireApiKey, SettingsDep
from ..dispatch import run_job
from ..inputs import decode_b64, encode_b64, json_body, json_openapi
from ..schemas import HandwritingRequest, SpeechRequest
from . import docs

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[RequireApiKey])


@router.post(
    "/speech",
    summary="Sample speech as a WAV file",
    response_class=Response,
    responses={
        200: docs.binary({"audio/wav": "16-bit PCM mono at the model's sample rate"}, docs.SAMPLE_HEADERS),
        202: docs.ACCEPTED,
        **docs.JOB_ERRORS,
    },
    openapi_extra=json_openapi(SpeechRequest),
)
async def generate_speech(
    request: Request,
    settings: SettingsDep,
    backend: BackendDep,
    metrics: MetricsDep,
    body: Annotated[SpeechRequest, json_body(SpeechRequest)],
) -> Response:
    """Draw `duration_s` seconds of speech (or the decoder mean, `mean: true`), optionally continuing `prime`."""
    params = body.job_params()
    if body.prime_b64 is not None:
        params["prime_b64"] = encode_b64(decode_b64(body.prime_b64, "prime", settings))
    return await run_job(request, backend, settings, metrics, "generate_speech", params)


@router.post(
    "/handwriting",
    summary="Sample handwriting as SVG (or JSON pen offsets)",
    response_class=Response,
    responses={
        200: docs.binary(
            {
                "image/svg+xml": "one <path> per stroke",
                "application/json": "with ?format=json: the pen offsets [[dx, dy, pen], ...], y up",
            },
            docs.HANDWRITING_HEADERS,
        ),
        202: docs.ACCEPTED,
        **docs.JOB_ERRORS,
    },
    openapi_extra=json_openapi(HandwritingRequest),
)
async def generate_handwriting(
    request: Request,
    settings: SettingsDep,
    backend: BackendDep,
    metrics: MetricsDep,
    body: Annotated[HandwritingRequest, json_body(HandwritingRequest)],
    format: Annotated[Literal["svg", "json"], Query(description="svg (default) or json offsets")] = "svg",
) -> Response:
    """Draw `steps` pen steps of handwriting, optionally continuing `prime` (IAM-OnDB XML or JSON strokes)."""
    params = body.job_params(format)
    if body.prime_b64 is not None:
        params["prime_b64"] = encode_b64(decode_b64(body.prime_b64, "prime", settings))
    return await run_job(request, backend, settings, metrics, "generate_handwriting", params)
