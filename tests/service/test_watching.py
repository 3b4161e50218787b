"""Watching a submission: the ETag, If-None-Match and what a 304 may (not) reveal, through the
real app on SQLite and PostgreSQL with a real Redis; state changes go through the real
grading service (claim, release) as a worker would make them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from grader.config import Settings
from grader.db import get_engine
from grader.submissions.grading import claim, release_claim
from tests.support.models import write_linear_model

ME = "test-host:1"


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("models") / "linear.pt")


@contextmanager
def statements(settings: Settings) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile."""
    seen: list[str] = []
    engine = get_engine(settings.sqlalchemy_url)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_unchanged_is_304_without_the_body_and_a_change_is_200(
    settings: Settings, make_student: Any, make_exercise: Any, linear_model: Path
) -> None:
    student = make_student()
    slug = make_exercise(daily_limit=None)
    sid = student.upload(slug, linear_model).json()["id"]
    url = f"/api/v1/submissions/{sid}"

    first = student.get(url)
    assert first.status_code == 200 and first.json()["status"] == "QUEUED"
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "no-cache" in first.headers["cache-control"]

    with statements(settings) as cheap:
        again = student.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # Weak and listed forms match too (If-None-Match compares weakly).
    assert student.get(url, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    with statements(settings) as full:
        assert student.get(url).status_code == 200
    # The 304 reads the submission once (beside the token lookup), never its result, exercise
    # or owner; the full answer needs more.
    reads = [s for s in cheap if "submissions" in s]
    assert len(reads) == 1, cheap
    assert len(cheap) < len(full), (cheap, full)

    # A worker claims it: the old tag no longer matches.
    assert claim(settings, sid, me=ME) is not None
    changed = student.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "RUNNING"
    running = changed.headers["etag"]
    assert running != etag
    assert student.get(url, headers={"If-None-Match": running}).status_code == 304
    # Handed back (same status as at first, one attempt more): still a new tag.
    assert release_claim(settings, sid, me=ME) == "released"
    back = student.get(url, headers={"If-None-Match": running})
    assert back.status_code == 200 and back.json()["status"] == "QUEUED"
    assert back.headers["etag"] not in (etag, running)


def test_a_queued_submission_changes_when_the_queue_moves(
    settings: Settings, make_student: Any, make_exercise: Any, linear_model: Path
) -> None:
    student = make_student()
    slug = make_exercise(daily_limit=None)
    ahead = student.upload(slug, linear_model).json()["id"]
    behind = student.upload(slug, linear_model).json()["id"]
    url = f"/api/v1/submissions/{behind}"
    etag = student.get(url).headers["etag"]
    assert student.get(url, headers={"If-None-Match": etag}).status_code == 304
    # The one ahead starts: the one behind is nearer the front, so its answer may differ.
    assert claim(settings, ahead, me=ME) is not None
    assert student.get(url, headers={"If-None-Match": etag}).status_code == 200


def test_someone_elses_submission_is_404_with_or_without_a_tag(
    make_student: Any, make_exercise: Any, linear_model: Path, admin: Any
) -> None:
    owner, other = make_student(), make_student()
    slug = make_exercise(daily_limit=None)
    sid = owner.upload(slug, linear_model).json()["id"]
    url = f"/api/v1/submissions/{sid}"
    etag = owner.get(url).headers["etag"]

    plain = other.get(url)
    for tag in (etag, "*", '"anything"'):
        tagged = other.get(url, headers={"If-None-Match": tag})
        assert tagged.status_code == 404, tag
        assert tagged.json() == plain.json() == {"detail": f"No submission {sid}."}
        assert "etag" not in tagged.headers
    # The same as a submission that does not exist.
    missing = other.get("/api/v1/submissions/99999999", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and "etag" not in missing.headers
    # Nor may the event stream be opened on it.
    assert other.get(f"{url}/events").status_code == 404
    # An instructor sees it, and the same tag.
    assert admin.get(url, headers={"If-None-Match": etag}).status_code == 304
