"""Fixtures: one small model configuration per kind; the small alphabet demo corpus (4 writers, 24 lines with text)."""

from __future__ import annotations

import pytest
from modelkit import ALL_KINDS, LATENT_KINDS


@pytest.fixture(params=ALL_KINDS, ids=lambda k: "-".join(k))
def kind(request) -> tuple[str, str, str]:
    return request.param


@pytest.fixture(params=LATENT_KINDS, ids=lambda k: "-".join(k))
def latent_kind(request) -> tuple[str, str, str]:
    return request.param


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The small handwriting demo corpus whose texts cover the text models' alphabet (built in about a second; read
    only by its tests)."""
    from model.prepare import main as prepare

    out = tmp_path_factory.mktemp("alphabet-small")
    assert prepare(["handwriting-demo", "--out", str(out), "--size", "small", "--texts", "alphabet", "--quiet"]) == 0
    return out
