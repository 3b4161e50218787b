"""The standings table (one row per student and exercise) always equals a recomputation from
the whole history: after grading, after an attempt is given up, after rescoring, and when
several results of one student are written at the same moment (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from grader.config import Settings
from grader.db import session_scope
from grader.exercises.models import Exercise
from grader.grading.engine import GradingOutcome
from grader.grading.failures import FailureKind
from grader.leaderboard.models import StandingRow
from grader.submissions import grading
from grader.submissions.models import Result, ResultPreview, Status, Submission
from tests.service.conftest import Api
from tests.support.models import write_linear_model

Expected = tuple[int, datetime, int | None, float | None, bool, datetime | None, bool]


def _exercise_id(settings: Settings, slug: str) -> int:
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        ex = session.scalar(select(Exercise.id).where(Exercise.slug == slug))
        assert ex is not None
        return ex


def _from_scratch(settings: Settings, exercise_id: int) -> dict[int, Expected]:
    """What every student's standing must be, from all their submissions and results, the
    straightforward way (in Python, over every row)."""
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        rows = session.execute(
            select(Submission, Result)
            .outerjoin(Result, Result.submission_id == Submission.id)
            .where(Submission.exercise_id == exercise_id)
        ).all()
    by_user: dict[int, list[tuple[Submission, Result | None]]] = {}
    for sub, res in rows:
        by_user.setdefault(sub.user_id, []).append((sub, res))
    out: dict[int, Expected] = {}
    for user_id, history in by_user.items():
        counted = [
            s for s, _ in history
            if not (s.status == Status.ERROR.value
                    and s.failure_reason == FailureKind.INFRA_ERROR.value)
        ]
        if not counted:
            continue
        graded = [(s, r) for s, r in history if r is not None and r.score is not None]
        graded.sort(key=lambda sr: (-(sr[1].score or 0.0), sr[0].created_at, sr[0].id))
        last = max(s.created_at for s, _ in history)
        if graded:
            s, r = graded[0]
            out[user_id] = (len(counted), last, r.id, r.score, r.passed, s.created_at, s.late)
        else:
            out[user_id] = (len(counted), last, None, None, False, None, False)
    return out


def _stored(settings: Settings, exercise_id: int) -> dict[int, Expected]:
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        rows = session.scalars(
            select(StandingRow).where(StandingRow.exercise_id == exercise_id)
        ).all()
        return {
            r.user_id: (
                r.attempts, r.last_submitted_at, r.best_result_id, r.best_score, r.passed,
                r.best_submitted_at, r.best_late,
            )
            for r in rows
        }


def _assert_consistent(settings: Settings, exercise_id: int) -> dict[int, Expected]:
    expected = _from_scratch(settings, exercise_id)
    assert _stored(settings, exercise_id) == expected
    return expected


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    return [write_linear_model(folder / f"m{seed}.pt", seed=seed) for seed in (1, 2, 3)]


def test_standings_follow_uploads_grading_give_ups_and_rescores(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, models: list[Path]
) -> None:
    slug = make_exercise()
    exercise_id = _exercise_id(settings, slug)
    alice, bob = make_student(), make_student()
    sids = [alice.upload(slug, m).json()["id"] for m in models]
    bob_sid = bob.upload(slug, models[0]).json()["id"]
    # Accepted but not graded: listed with their attempts and no score.
    standing = _assert_consistent(settings, exercise_id)
    assert sorted(v[0] for v in standing.values()) == [1, 3]
    assert all(v[3] is None for v in standing.values())

    for sid in sids:
        grading.grade_submission(settings, sid)
        _assert_consistent(settings, exercise_id)
    board = {e["name"]: e for e in admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()[
        "entries"]}
    scores = [
        alice.get(f"/api/v1/submissions/{sid}").json()["result"]["score"] for sid in sids
    ]
    assert board[alice.username]["best_score"] == max(scores)
    assert board[alice.username]["attempts"] == 3 and board[alice.username]["rank"] == 1
    assert board[bob.username]["best_score"] is None and board[bob.username]["rank"] is None

    # Bob's only attempt is lost max_attempts times: ours, so it stops counting.
    me = "test-host:1"
    assert grading.claim(settings, bob_sid, me=me) is not None
    once = settings.model_copy(update={"max_attempts": 1})
    assert grading.release_claim(once, bob_sid, me=me) == "gave up"
    assert bob.username not in {
        e["name"] for e in admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    }
    _assert_consistent(settings, exercise_id)

    # Rescoring one submission, then all: the best falls back to what is still graded.
    best_sid = sids[scores.index(max(scores))]
    assert admin.post(f"/api/v1/submissions/{best_sid}/rescore").status_code == 200
    standing = _assert_consistent(settings, exercise_id)
    assert standing[_user_id(settings, best_sid)][3] == sorted(scores)[-2]
    assert admin.post(f"/api/v1/exercises/{slug}/rescore").status_code == 200
    standing = _assert_consistent(settings, exercise_id)
    # Bob's given-up submission is queued again too, so it counts again.
    assert [v[3] for v in standing.values()] == [None, None]
    for sid in reversed(sids):
        grading.grade_submission(settings, sid)
    _assert_consistent(settings, exercise_id)
    board = {e["name"]: e for e in admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()[
        "entries"]}
    assert board[alice.username]["best_score"] == max(scores)


def _user_id(settings: Settings, sid: int) -> int:
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        uid = session.scalar(select(Submission.user_id).where(Submission.id == sid))
        assert uid is not None
        return uid


def _outcome(score: float) -> GradingOutcome:
    return GradingOutcome(
        status=Status.FAILED.value, score=score, passed=False, threshold=1.0, n_images=64,
        parts=[score] * 15, seconds=0.1,
    )


def test_results_of_one_student_written_at_once_all_reach_the_standing(
    settings: Settings, make_student: Any, make_exercise: Any, models: list[Path]
) -> None:
    """Several workers finish one student's submissions at the same moment: each standing
    write must see the others' results (PostgreSQL: they take turns on the student's row)."""
    slug = make_exercise(daily_limit=None)
    exercise_id = _exercise_id(settings, slug)
    student = make_student()
    sids = [student.upload(slug, models[i % len(models)]).json()["id"] for i in range(6)]
    claims = []
    for n, sid in enumerate(sids):
        me = f"test-host:{1000 + n}"
        job = grading.claim(settings, sid, me=me)
        assert job is not None
        claims.append((job, me))
    # The best score is written by one of the middle writers, not the last.
    scores = [50.0, 20.0, 90.0, 40.0, 30.0, 10.0]
    start = threading.Barrier(len(claims))
    outcomes: list[str] = []

    def finish(index: int) -> None:
        job, me = claims[index]
        start.wait()
        outcomes.append(
            grading._finish(
                settings, job, outcome=_outcome(scores[index]), status=Status.FAILED.value,
                reason=None, me=me, preview=[[[1.0, 2.0]]],
            )
        )

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(claims))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [Status.FAILED.value] * len(claims)
    standing = _assert_consistent(settings, exercise_id)
    (attempts, _, _, best, *_), = standing.values()
    assert attempts == 6 and best == 90.0
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        previews = session.scalars(
            select(ResultPreview.data)
            .join(Result, Result.id == ResultPreview.result_id)
            .where(Result.submission_id.in_(sids))
        ).all()
    assert list(previews) == [[[[1.0, 2.0]]]] * 6
