"""GET /models: the checkpoints the service can run."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ..deps import BackendDep, RequireApiKey
from ..schemas import ModelList
from . import docs

router = APIRouter(tags=["models"], dependencies=[RequireApiKey])


@router.get("/models", summary="Checkpoints and their metadata", response_model=ModelList, responses=docs.errors(401))
async def list_models(backend: BackendDep) -> dict:
    """Every loaded checkpoint (name, modality, family, output, metrics, ...) and, under `failed`, those that
    could not be loaded with the reason. In Redis mode this is read from CHECKPOINT_DIR's JSON files."""
    return await run_in_threadpool(backend.models)
