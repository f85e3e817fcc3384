"""Fixtures of the worker-process tests: Redis database 14 and a folder of tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from rediskit import redis_db
from workerkit import REDIS_URL, write_checkpoints


@pytest.fixture
def conn():
    """A client of database 14, emptied before and after, locked against concurrent runs."""
    with redis_db(REDIS_URL) as client:
        assert client.connection_pool.connection_kwargs["db"] == 14
        yield client


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))
