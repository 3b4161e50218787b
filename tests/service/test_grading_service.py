"""The worker-side grading service, called in-process on SQLite and PostgreSQL: one-way
status, one result per submission, lost attempts, rescoring, leaderboard on real results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from grader.config import Settings
from grader.db import session_scope
from grader.submissions import grading
from grader.submissions.models import Result, Status, Submission
from tests.service.conftest import Api
from tests.support.models import write_linear_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("m") / "model.pt", seed=3)


def _results(settings: Settings, sid: int) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalar(select(func.count(Result.id)).where(Result.submission_id == sid)) or 0


def test_grading_records_one_result_and_redelivery_is_a_no_op(
    settings: Settings, make_student: Any, make_exercise: Any, model: Path
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, model).json()["id"]
    assert grading.grade_submission(settings, sid) == "FAILED"
    first = student.get(f"/api/v1/submissions/{sid}").json()
    assert first["status"] == "FAILED" and first["passed"] is False
    assert first["result"]["n_images"] == 64 and len(first["result"]["per_keypoint_rmse_px"]) == 15
    assert first["result"]["evaluator_version"] and first["result"]["torch_version"]
    assert first["finished_at"] and first["attempts"] == 1
    # A redelivered task: nothing changes, status does not move back.
    assert grading.grade_submission(settings, sid) == "skipped"
    again = student.get(f"/api/v1/submissions/{sid}").json()
    assert again["status"] == "FAILED" and again["attempts"] == 1
    assert again["score"] == first["score"]
    assert _results(settings, sid) == 1


def test_a_live_claim_is_not_stolen_but_a_dead_one_is(
    settings: Settings, make_student: Any, make_exercise: Any, model: Path
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, model).json()["id"]
    import os
    import socket

    # Someone alive (pid 1) on this host holds it: a duplicate delivery must not grade.
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == sid)
            .values(
                status=Status.RUNNING.value,
                attempts=1,
                claimed_by=f"{socket.gethostname()}:1",
                started_at=func.now(),
            )
        )
    assert grading.grade_submission(settings, sid) == "skipped"
    # Its holder died (a pid that cannot exist): the next delivery re-claims and grades.
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == sid)
            .values(claimed_by=f"{socket.gethostname()}:{2**22 + os.getpid() % 1000}")
        )
    assert grading.grade_submission(settings, sid) == "FAILED"
    body = student.get(f"/api/v1/submissions/{sid}").json()
    assert body["attempts"] == 2 and _results(settings, sid) == 1


def test_after_max_lost_attempts_it_ends_as_infra_error_and_is_not_counted(
    settings: Settings, make_student: Any, make_exercise: Any, model: Path
) -> None:
    student, slug = make_student(), make_exercise(daily_limit=1)
    sid = student.upload(slug, model).json()["id"]
    assert student.get(f"/api/v1/exercises/{slug}").json()["remaining_today"] == 0
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == sid)
            .values(
                status=Status.RUNNING.value,
                attempts=settings.max_attempts,
                claimed_by="elsewhere:1",
                started_at=None,
            )
        )
    assert grading.grade_submission(settings, sid) == "skipped"
    body = student.get(f"/api/v1/submissions/{sid}").json()
    assert body["status"] == "ERROR" and body["failure_reason"] == "INFRA_ERROR"
    assert body["failure_message"]
    assert _results(settings, sid) == 0
    assert student.get(f"/api/v1/exercises/{slug}").json()["remaining_today"] == 1


def test_rescore_requeues_and_regrades_against_the_new_version(
    settings: Settings,
    admin: Api,
    make_student: Any,
    make_exercise: Any,
    model: Path,
    small_test_set: Path,
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, model).json()["id"]
    grading.grade_submission(settings, sid)
    with small_test_set.open("rb") as fh:
        admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("v2.csv", fh)})
    requeued = admin.post(f"/api/v1/exercises/{slug}/rescore")
    assert requeued.status_code == 200 and requeued.json()["requeued"] == [sid]
    assert student.get(f"/api/v1/submissions/{sid}").json()["status"] == "QUEUED"
    assert _results(settings, sid) == 0
    grading.grade_submission(settings, sid)
    body = student.get(f"/api/v1/submissions/{sid}").json()
    assert body["status"] == "FAILED" and body["result"]["testset_version"] == 2


def test_leaderboard_ranks_best_scores_and_anonymises_for_students(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, tmp_path: Path
) -> None:
    slug = make_exercise()
    alice, bob = make_student(), make_student()
    for who, seed in ((alice, 1), (bob, 2), (bob, 5)):
        sid = who.upload(slug, write_linear_model(tmp_path / f"{seed}.pt", seed=seed)).json()["id"]
        grading.grade_submission(settings, sid)
    board = admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    assert [e["rank"] for e in board] == [1, 2]
    scores = [e["best_score"] for e in board]
    assert scores == sorted(scores, reverse=True)
    by_name = {e["name"]: e for e in board}
    assert by_name[bob.username]["attempts"] == 2 and by_name[alice.username]["attempts"] == 1
    seen_by_alice = alice.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    names = {e["name"] for e in seen_by_alice}
    assert alice.username in names and bob.username not in names
    assert [e["is_me"] for e in seen_by_alice].count(True) == 1
    mine = alice.get("/api/v1/exercises").json()
    best = {e["slug"]: e for e in mine}[slug]["my_best_score"]
    assert best == by_name[alice.username]["best_score"]
