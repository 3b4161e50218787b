"""API tests on SQLite and PostgreSQL with a real Redis broker (no worker: tasks are
inspected in the queue, or graded in-process by calling the grading service)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from grader.config import Settings
from grader.db import get_engine
from tests.support.app import running_app, test_settings
from tests.support.live_server import ADMIN_PASSWORD
from tests.support.models import write_small_test_set
from tests.support.services import redis_url_for, require_redis, temporary_postgres_database

REDIS_URL = redis_url_for("service")


def _postgres_database() -> Iterator[str]:
    with temporary_postgres_database() as url:
        _engine_urls.append(url)
        try:
            yield url
        finally:
            _dispose_engines()


def _dispose_engines() -> None:
    # Close pooled connections so the database can be dropped.
    from grader.db import get_sessionmaker

    for url in _engine_urls:
        get_engine(url).dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


_engine_urls: list[str] = []


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "grader.sqlite3"
        yield f"sqlite:///{path}"
    else:
        yield from _postgres_database()


@pytest.fixture(scope="session")
def redis_broker() -> redis.Redis:
    return require_redis(REDIS_URL)


@pytest.fixture(scope="session")
def small_test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_test_set(tmp_path_factory.mktemp("testset") / "small.csv")


@pytest.fixture(scope="session")
def settings(
    backend: str, redis_broker: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    return test_settings(data_dir, broker_url=REDIS_URL, database_url=backend)


@pytest.fixture(scope="session")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with running_app(settings) as client:
        yield client


@dataclass
class Api:
    """A TestClient bound to one bearer token."""

    client: TestClient
    token: str
    username: str

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.client.patch(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.client.put(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def upload(self, slug: str, path: Path, **kw: Any) -> Any:
        with path.open("rb") as fh:
            return self.post(
                f"/api/v1/exercises/{slug}/submissions", files={"file": (path.name, fh)}, **kw
            )


def login(client: TestClient, username: str, password: str) -> str:
    response = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="session")
def admin(app_client: TestClient) -> Api:
    return Api(app_client, login(app_client, "admin", ADMIN_PASSWORD), "admin")


@pytest.fixture
def make_student(app_client: TestClient, admin: Api) -> Any:
    def make(student_id: str | None = None) -> Api:
        username = f"s-{uuid.uuid4().hex[:8]}"
        response = admin.post(
            "/api/v1/users",
            json={"username": username, "password": "student-pass", "student_id": student_id},
        )
        assert response.status_code == 201, response.text
        return Api(app_client, login(app_client, username, "student-pass"), username)

    return make


@pytest.fixture
def make_exercise(admin: Api, small_test_set: Path) -> Any:
    def make(**fields: Any) -> str:
        slug = f"ex-{uuid.uuid4().hex[:8]}"
        response = admin.post("/api/v1/exercises", json={"slug": slug, "title": slug, **fields})
        assert response.status_code == 201, response.text
        with small_test_set.open("rb") as fh:
            put = admin.put(
                f"/api/v1/exercises/{slug}/test-set", files={"file": ("small.csv", fh, "text/csv")}
            )
        assert put.status_code == 200, put.text
        return slug

    return make


@pytest.fixture(scope="session", autouse=True)
def _stop_sandbox() -> Iterator[None]:
    # In-process grading (test_grading_service) starts this process's fork server.
    yield
    from grader.grading.sandbox import shutdown

    shutdown()
