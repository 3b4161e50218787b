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


def test_every_router_ends_its_transactions_in_the_endpoints_thread() -> None:
    # A router made without UnitOfWorkRoute brings back the pool deadlock under bursts
    # (test_watching_live.py::test_a_burst_of_status_checks_never_starves_the_database_pool).
    from fastapi.routing import APIRoute

    from grader.auth.router import router as auth
    from grader.deps import UnitOfWorkRoute
    from grader.exercises.router import router as exercises
    from grader.integrity.router import router as integrity
    from grader.leaderboard.router import router as leaderboard
    from grader.ops.router import router as ops
    from grader.submissions.router import router as submissions
    from grader.web.pages_instructor import router as instructor_pages
    from grader.web.pages_integrity import router as integrity_pages
    from grader.web.pages_student import router as student_pages

    routers = (auth, exercises, integrity, leaderboard, ops, submissions, instructor_pages,
               integrity_pages, student_pages)
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) > 50
    assert [r.path for r in routes if not isinstance(r, UnitOfWorkRoute)] == []
