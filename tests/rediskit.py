"""A real Redis database for one test module: `with redis_db(url) as conn:`.

Each test file that talks to Redis has its own database number (11-14). The database is emptied
before and after, and a file lock serialises its users between concurrent test runs on this machine,
which would otherwise empty each other's data. No Redis answering: the test is skipped, saying why (under CI
it fails instead: see cikit.py)."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def redis_db(url: str) -> Iterator:
    redis = pytest.importorskip("redis")
    conn = redis.Redis.from_url(url)
    db = conn.connection_pool.connection_kwargs.get("db", 0)
    assert db != 0, "tests never use database 0"
    try:
        conn.ping()
    except redis.exceptions.ConnectionError as e:
        pytest.skip(f"needs a Redis server at {url}: {e}")
    with open(Path(tempfile.gettempdir()) / f"vrnn-tests-redis-db{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn.flushdb()  # this database only
        try:
            yield conn
        finally:
            conn.flushdb()
            conn.close()
