"""REST API on SQLite and PostgreSQL, with a real Redis broker (tasks checked in the queue)."""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update

from grader.auth import service as auth_service
from grader.auth.models import ApiToken
from grader.config import Settings
from grader.db import begin_write, get_sessionmaker, session_scope
from grader.errors import Conflict, NotFound
from grader.exercises import service as exercises_service
from grader.exercises.models import Exercise
from grader.submissions.models import Status, Submission
from grader.submissions.service import rescore_submissions
from tests.service.conftest import Api
from tests.support.models import write_linear_model, write_pickle


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("models") / "linear.pt")


def _queued_ids(broker: redis.Redis, queue: str = "cpu") -> list[int]:
    import json

    ids = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(__import__("base64").b64decode(message["body"]))
        ids.append(body[0][0])
    return ids


def test_login_and_token_errors(app_client: Any, make_student: Any) -> None:
    student = make_student()
    bad = app_client.post(
        "/api/v1/auth/token", data={"username": student.username, "password": "x"}
    )
    assert bad.status_code == 401 and "detail" in bad.json()
    assert app_client.get("/api/v1/exercises").status_code == 401
    wrong = app_client.get("/api/v1/exercises", headers={"Authorization": "Bearer grd_nope"})
    assert wrong.status_code == 401
    me = student.get("/api/v1/auth/me").json()
    assert me["username"] == student.username and me["role"] == "student"


def test_tokens_are_stored_hashed_and_revocable(settings: Settings, make_student: Any) -> None:
    student = make_student()
    created = student.post("/api/v1/tokens", json={"name": "laptop"})
    assert created.status_code == 201
    token, token_id = created.json()["access_token"], created.json()["id"]
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_hash, row.prefix)
    as_new = Api(student.client, token, student.username)
    assert as_new.get("/api/v1/auth/me").status_code == 200
    assert student.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    assert as_new.get("/api/v1/auth/me").status_code == 401


@pytest.mark.parametrize("token_id", [0, -1, 2**31, 2**63, 10**30])
def test_revoking_a_token_id_beyond_any_row_is_404(
    settings: Settings, make_student: Any, make_exercise: Any, admin: Api, token_id: int
) -> None:
    # Found by the schemathesis run: PostgreSQL refused the comparison (integer out of
    # range) and SQLite's driver could not bind the number, both a 500.
    student, slug = make_student(), make_exercise()
    assert student.delete(f"/api/v1/tokens/{token_id}").status_code == 404
    assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 404
    with session_scope(settings.sqlalchemy_url) as session:
        exercise = session.scalars(select(Exercise).where(Exercise.slug == slug)).one()
        with pytest.raises(NotFound):
            rescore_submissions(
                session, exercise=exercise, publish=lambda *_: None, submission_id=token_id
            )


def test_students_cannot_use_instructor_endpoints(make_student: Any, make_exercise: Any) -> None:
    student = make_student()
    slug = make_exercise()
    assert student.post("/api/v1/exercises", json={"slug": "x", "title": "x"}).status_code == 403
    assert student.post("/api/v1/users", json={"username": "zz"}).status_code == 403
    assert student.get(f"/api/v1/exercises/{slug}/grades.csv").status_code == 403
    assert student.post(f"/api/v1/exercises/{slug}/rescore").status_code == 403


def test_upload_is_stored_then_published_after_commit(
    settings: Settings,
    make_student: Any,
    make_exercise: Any,
    linear_model: Path,
    redis_broker: redis.Redis,
) -> None:
    student, slug = make_student(), make_exercise()
    response = student.upload(slug, linear_model)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "QUEUED" and body["url"] == f"/api/v1/submissions/{body['id']}"
    assert body["id"] in _queued_ids(redis_broker)
    sha = hashlib.sha256(linear_model.read_bytes()).hexdigest()
    stored = settings.uploads_dir / sha[:2] / f"{sha}.pt"
    assert stored.read_bytes() == linear_model.read_bytes()
    got = student.get(body["url"]).json()
    assert got["status"] == "QUEUED" and got["exercise"] == slug
    assert got["model_sha256"] == sha and got["original_filename"] == "linear.pt"
    assert got["result"] is None and got["score"] is None


def test_rejections_422_413_404(
    settings: Settings,
    make_student: Any,
    make_exercise: Any,
    linear_model: Path,
    tmp_path: Path,
    redis_broker: redis.Redis,
) -> None:
    student, slug = make_student(), make_exercise()
    before = len(_queued_ids(redis_broker))
    pickle = student.upload(slug, write_pickle(tmp_path / "pickle.pt"))
    assert pickle.status_code == 422
    assert pickle.json()["detail"].startswith("LOAD_ERROR")
    tiny = make_exercise(max_model_bytes=1000)
    too_big = student.upload(tiny, linear_model)
    assert too_big.status_code == 413 and "1000 bytes" in too_big.json()["detail"]
    assert student.upload("no-such-exercise", linear_model).status_code == 404
    assert len(_queued_ids(redis_broker)) == before  # nothing was queued for them
    with session_scope(settings.sqlalchemy_url) as session:
        assert (
            session.scalar(
                select(Submission.id).where(Submission.user.has(username=student.username))
            )
            is None
        )


def test_someone_elses_submission_is_not_found(
    make_student: Any, make_exercise: Any, linear_model: Path
) -> None:
    alice, bob, slug = make_student(), make_student(), make_exercise()
    sid = alice.upload(slug, linear_model).json()["id"]
    assert bob.get(f"/api/v1/submissions/{sid}").status_code == 404
    assert bob.get(f"/api/v1/submissions/{sid + 10**6}").status_code == 404
    assert bob.get("/api/v1/submissions").json()["total"] == 0


def test_daily_limit_429_and_infra_errors_do_not_count(
    settings: Settings, make_student: Any, make_exercise: Any, linear_model: Path
) -> None:
    student, slug = make_student(), make_exercise(daily_limit=2)
    first = student.upload(slug, linear_model).json()["id"]
    assert student.get(f"/api/v1/exercises/{slug}").json()["remaining_today"] == 1
    assert student.upload(slug, linear_model).status_code == 202
    limited = student.upload(slug, linear_model)
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 86401
    # Our own failure gives the attempt back.
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == first)
            .values(status=Status.ERROR.value, failure_reason="INFRA_ERROR")
        )
    assert student.get(f"/api/v1/exercises/{slug}").json()["remaining_today"] == 1
    assert student.upload(slug, linear_model).status_code == 202


def test_deadline_policies(make_student: Any, make_exercise: Any, linear_model: Path) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    student = make_student()
    reject = make_exercise(deadline=past, late_policy="reject")
    assert student.upload(reject, linear_model).status_code == 403
    late = make_exercise(deadline=past, late_policy="accept_late")
    accepted = student.upload(late, linear_model)
    assert accepted.status_code == 202
    assert student.get(accepted.json()["url"]).json()["late"] is True
    first_only = make_exercise(deadline=past, late_policy="first_only")
    assert student.upload(first_only, linear_model).status_code == 202
    assert student.upload(first_only, linear_model).status_code == 409


def test_list_is_own_newest_first_and_paginated(
    make_student: Any, make_exercise: Any, linear_model: Path
) -> None:
    student, slug = make_student(), make_exercise()
    ids = [student.upload(slug, linear_model).json()["id"] for _ in range(3)]
    page = student.get("/api/v1/submissions", params={"exercise": slug, "limit": 2}).json()
    assert page["total"] == 3
    assert [s["id"] for s in page["items"]] == ids[::-1][:2]
    rest = student.get("/api/v1/submissions", params={"exercise": slug, "offset": 2}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]]


def test_test_set_upload_validates_and_versions(admin: Api, make_exercise: Any) -> None:
    slug = make_exercise()
    before = admin.get(f"/api/v1/exercises/{slug}").json()
    assert before["testset_version"] == 1 and before["testset_n_images"] == 64
    bad = admin.put(
        f"/api/v1/exercises/{slug}/test-set",
        files={"file": ("bad.csv", b"left_eye_center_x,Image\n1,2 3\n", "text/csv")},
    )
    assert bad.status_code == 422 and "Invalid test set" in bad.json()["detail"]
    assert admin.get(f"/api/v1/exercises/{slug}").json()["testset_version"] == 1


def test_update_exercise_and_validation(admin: Api, make_exercise: Any) -> None:
    slug = make_exercise()
    changed = admin.patch(f"/api/v1/exercises/{slug}", json={"threshold": 50, "daily_limit": 3})
    assert changed.status_code == 200
    assert changed.json()["threshold"] == 50 and changed.json()["daily_limit"] == 3
    assert admin.patch(f"/api/v1/exercises/{slug}", json={"queue": "tpu"}).status_code == 422
    dup = admin.post("/api/v1/exercises", json={"slug": slug, "title": "again"})
    assert dup.status_code == 409


def test_grades_export_lists_every_student(
    admin: Api, make_student: Any, make_exercise: Any
) -> None:
    slug = make_exercise()
    student = make_student(student_id=f"id-{slug}")
    response = admin.get(f"/api/v1/exercises/{slug}/grades.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = {r["username"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert rows[student.username]["student_id"] == f"id-{slug}"
    assert rows[student.username]["best_score"] == "" and rows[student.username]["attempts"] == "0"


def _wait_until_blocked_on_a_lock(session: Any, timeout: float = 20.0) -> None:
    """PostgreSQL: until some other transaction waits on a row or index lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the second request never reached its INSERT")


@pytest.mark.parametrize("taken", ["slug", "username", "student_id"])
def test_a_name_taken_by_a_concurrent_request_is_a_conflict(settings: Settings, taken: str) -> None:
    # Found by the schemathesis run on PostgreSQL: two requests creating the same exercise
    # both passed the "already exists?" check before either committed; the second INSERT then
    # failed on the unique constraint, a 500 instead of the 409.
    name = f"race-{uuid.uuid4().hex[:8]}"

    def create(session: Any, suffix: str) -> None:
        if taken == "slug":
            exercises_service.create_exercise(session, slug=name, title="t", settings=settings)
        else:
            auth_service.create_user(
                session,
                actor=None,
                username=name if taken == "username" else name + suffix,
                student_id=name if taken == "student_id" else None,
                password="race-password",
            )

    maker = get_sessionmaker(settings.sqlalchemy_url)
    first = maker()
    begin_write(first)
    create(first, "-a")
    outcome: list[BaseException | None] = []

    def second_request() -> None:
        with maker() as second:
            try:
                begin_write(second)  # SQLite: waits here for the first to commit
                create(second, "-b")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            second.rollback()

    thread = threading.Thread(target=second_request)
    thread.start()
    try:
        if first.get_bind().dialect.name == "postgresql":
            with maker() as observer:
                _wait_until_blocked_on_a_lock(observer)
        first.commit()
    finally:
        first.close()
        thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert ("Student id" in str(outcome[0])) == (taken == "student_id")
