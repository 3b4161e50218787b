"""Page tests against the real app (SQLite file, real Redis broker, no worker)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from grader.auth import service as auth_service
from grader.auth.models import Role
from grader.config import Settings
from grader.db import session_scope
from grader.exercises import service as exercises
from tests.support.app import running_app, test_settings
from tests.support.models import write_small_test_set
from tests.support.services import redis_url_for, require_redis

REDIS_URL = redis_url_for("web")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "web-test-password"


@pytest.fixture(scope="session")
def web_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    require_redis(REDIS_URL)
    data_dir = tmp_path_factory.mktemp("web-data")
    settings = test_settings(data_dir, broker_url=REDIS_URL)
    testset = write_small_test_set(data_dir / "small.csv", count=16)
    with session_scope(settings.sqlalchemy_url) as session:
        exercise = exercises.create_exercise(
            session, slug="web-ex", title="Web exercise", settings=settings, daily_limit=5
        )
        exercises.set_test_set(session, exercise=exercise, csv_path=testset, settings=settings)
    return settings


@pytest.fixture(scope="session")
def web_app(web_settings: Settings) -> Iterator[TestClient]:
    with running_app(web_settings) as client:
        yield client


def make_user(settings: Settings, role: Role = Role.STUDENT) -> str:
    username = f"{role.value[:3]}-{uuid.uuid4().hex[:8]}"
    with session_scope(settings.sqlalchemy_url) as session:
        auth_service.create_user(
            session, actor=None, username=username, role=role, password=PASSWORD
        )
    return username


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def upload_by_form(
    client: TestClient, slug: str, model: Path, filename: str | None = None
) -> httpx.Response:
    """Send `model` through the exercise page's upload form, as its script does (the CSRF
    token in a header, JSON back)."""
    token = csrf_from(client.get(f"/exercises/{slug}").text)
    with model.open("rb") as fh:
        return client.post(
            f"/exercises/{slug}/submissions",
            files={"file": (filename or model.name, fh)},
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )


def browser(web_app: TestClient) -> TestClient:
    """A fresh cookie jar on the same app (one browser)."""
    return TestClient(web_app.app, follow_redirects=False)


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    page = client.get("/login")
    assert page.status_code == 200
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(page.text)},
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def student(web_app: TestClient, web_settings: Settings) -> TestClient:
    return log_in(browser(web_app), make_user(web_settings))


@pytest.fixture
def instructor(web_app: TestClient, web_settings: Settings) -> TestClient:
    return log_in(browser(web_app), make_user(web_settings, Role.INSTRUCTOR))


@pytest.fixture
def anonymous(web_app: TestClient) -> TestClient:
    return browser(web_app)


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.models import write_linear_model

    return write_linear_model(tmp_path_factory.mktemp("models") / "linear.pt")


@pytest.fixture(scope="session", autouse=True)
def _stop_sandbox() -> Iterator[None]:
    # Grading in-process (test_preview) starts this process's sandbox fork server.
    yield
    from grader.grading.sandbox import shutdown

    shutdown()
