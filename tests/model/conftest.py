"""Fixtures: one small model configuration per kind."""

from __future__ import annotations

import pytest
from modelkit import ALL_KINDS, LATENT_KINDS


@pytest.fixture(params=ALL_KINDS, ids=lambda k: "-".join(k))
def kind(request) -> tuple[str, str, str]:
    return request.param


@pytest.fixture(params=LATENT_KINDS, ids=lambda k: "-".join(k))
def latent_kind(request) -> tuple[str, str, str]:
    return request.param
