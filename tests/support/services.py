"""The system services the tests use for real: required in CI, skipped elsewhere if absent."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
# Each test package flushes its own Redis database index. GRADER_TEST_REDIS_BASE moves the
# three indexes, so two checkouts can run their suites at once against the same server.
_REDIS_BASE = int(os.environ.get("GRADER_TEST_REDIS_BASE", "12"))
_REDIS_OFFSETS = {"web": 0, "service": 1, "e2e": 2}


def redis_url_for(package: str) -> str:
    """The system Redis database reserved for one test package ("web", "service", "e2e")."""
    return f"redis://127.0.0.1:6379/{_REDIS_BASE + _REDIS_OFFSETS[package]}"


def require_redis(url: str) -> redis.Redis:
    """A client for the Redis database at `url`, emptied; fails in CI when unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis unreachable at {url}: {exc}")
    client.flushdb()
    return client


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped afterwards; yields its URL."""
    import psycopg

    name = f"grader_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
