"""Fixtures of the API tests: tiny checkpoints and TestClients of apps built on them (embedded mode)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apikit import make_settings, write_checkpoints, write_gmm_checkpoints
from fastapi.testclient import TestClient

from app.main import create_app


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("api-checkpoints"))


@pytest.fixture(scope="module")
def client(checkpoint_dir):
    with TestClient(create_app(make_settings(checkpoint_dir))) as c:
        yield c


@pytest.fixture(scope="session")
def gmm_checkpoint_dir(tmp_path_factory) -> Path:
    """Mixture-output checkpoints only: the defaults of both modalities sample a GMM."""
    return write_gmm_checkpoints(tmp_path_factory.mktemp("api-gmm-checkpoints"))


@pytest.fixture(scope="module")
def gmm_client(gmm_checkpoint_dir):
    with TestClient(create_app(make_settings(gmm_checkpoint_dir))) as c:
        yield c
