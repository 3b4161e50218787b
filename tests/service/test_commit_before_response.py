"""A route's writes are committed before its response is sent: a commit that fails becomes
an error response, never a 201 for a row that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from grader.exercises.models import Exercise
from tests.service.conftest import Api


@pytest.fixture
def exercise_commits_fail() -> Iterator[None]:
    """Every commit that would create an exercise fails as SQLite's lock does."""

    def mark(session: Session, *_: Any) -> None:
        if any(isinstance(obj, Exercise) for obj in session.new):
            session.info["creates_exercise"] = True

    def refuse(session: Session) -> None:
        if session.info.pop("creates_exercise", False):
            raise OperationalError("COMMIT", {}, Exception("database is locked"))

    event.listen(Session, "before_flush", mark)
    event.listen(Session, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", refuse)
        event.remove(Session, "before_flush", mark)


@pytest.mark.usefixtures("exercise_commits_fail")
def test_a_failed_commit_is_reported_not_acknowledged(admin: Api) -> None:
    response = admin.post("/api/v1/exercises", json={"slug": "never-saved", "title": "t"})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"


def test_the_exercise_is_readable_as_soon_as_it_is_acknowledged(admin: Api) -> None:
    created = admin.post("/api/v1/exercises", json={"slug": "saved-at-once", "title": "t"})
    assert created.status_code == 201, created.text
    assert admin.get("/api/v1/exercises/saved-at-once").status_code == 200
    assert admin.get("/api/v1/exercises/never-saved").status_code == 404
