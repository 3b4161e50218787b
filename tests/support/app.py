"""The one way tests build the real application: Settings for a throwaway data directory,
the schema and the admin account, and a TestClient around `create_app` (lifespan included)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from grader.app import create_app
from grader.config import Settings
from grader.runtime.bootstrap import bootstrap
from tests.support.live_server import ADMIN_PASSWORD


def test_settings(data_dir: Path, *, broker_url: str, database_url: str | None = None,
                  **overrides: Any) -> Settings:
    """Settings for an app under test: no sweeper thread, the known admin password, and the
    database migrated (SQLite in `data_dir` unless `database_url` names another)."""
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url or f"sqlite:///{data_dir / 'grader.sqlite3'}",
        broker_url=broker_url,
        admin_password=ADMIN_PASSWORD,
        sweeper_enabled=False,
        environment="test",
        **{"worker_concurrency": 1, **overrides},
    )
    bootstrap(settings, demo=False)
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextmanager
def running_app(settings: Settings, **client_options: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings), **client_options) as client:
        yield client
