"""The system services the tests use for real: required in CI, skipped elsewhere if absent."""

from __future__ import annotations

import os

import pytest
import redis


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
