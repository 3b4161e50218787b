"""Best result per student, ranks, and the grades export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, not_, select
from sqlalchemy.orm import Session

from grader.auth.models import Role, User
from grader.errors import Forbidden
from grader.exercises.models import Exercise, LeaderboardVisibility
from grader.grading.failures import FailureKind
from grader.submissions.models import Result, Status, Submission


@dataclass
class Standing:
    user_id: int
    username: str
    display_name: str
    student_id: str | None
    best_score: float | None
    passed: bool
    attempts: int
    best_submitted_at: datetime | None
    best_late: bool
    rank: int | None = None


def standings(session: Session, *, exercise: Exercise) -> list[Standing]:
    """Every student with at least one counted submission, ranked by best score."""
    counted = not_(
        and_(
            Submission.status == Status.ERROR.value,
            Submission.failure_reason == FailureKind.INFRA_ERROR.value,
        )
    )
    attempts = dict(
        session.execute(
            select(Submission.user_id, func.count(Submission.id))
            .where(Submission.exercise_id == exercise.id, counted)
            .group_by(Submission.user_id)
        ).all()
    )
    # Best graded submission per user: highest score, earliest on ties.
    rows = session.execute(
        select(
            Submission.user_id, Result.score, Result.passed, Submission.created_at, Submission.late
        )
        .join(Result, Result.submission_id == Submission.id)
        .where(Submission.exercise_id == exercise.id, Result.score.is_not(None))
        .order_by(Submission.user_id, Result.score.desc(), Submission.created_at)
    ).all()
    best: dict[int, tuple[float | None, bool, datetime | None, bool]] = {}
    for user_id, score, passed, created_at, late in rows:
        if user_id not in best:
            best[user_id] = (score, passed, created_at, late)
    users = (
        {u.id: u for u in session.scalars(select(User).where(User.id.in_(set(attempts))))}
        if attempts
        else {}
    )
    out = []
    for user_id, n in attempts.items():
        user = users[user_id]
        score, passed, at, late = best.get(user_id, (None, False, None, False))
        out.append(
            Standing(
                user_id,
                user.username,
                user.display_name,
                user.student_id,
                score,
                bool(passed),
                n,
                at,
                bool(late),
            )
        )
    out.sort(key=lambda s: (s.best_score is None, -(s.best_score or 0.0), s.username))
    rank = 0
    previous: float | None = None
    for position, standing in enumerate(out, start=1):
        if standing.best_score is None:
            break
        if standing.best_score != previous:
            rank, previous = position, standing.best_score
        standing.rank = rank
    return out


def last_submitted(session: Session, *, exercise: Exercise) -> dict[int, datetime]:
    """user_id -> time of that user's latest submission to the exercise (any status)."""
    rows = session.execute(
        select(Submission.user_id, func.max(Submission.created_at))
        .where(Submission.exercise_id == exercise.id)
        .group_by(Submission.user_id)
    )
    return {user_id: at for user_id, at in rows}


@dataclass
class LeaderboardRow:
    rank: int | None
    name: str
    best_score: float | None
    passed: bool
    attempts: int
    is_me: bool


def leaderboard(session: Session, *, exercise: Exercise, viewer: User) -> list[LeaderboardRow]:
    visibility = LeaderboardVisibility(exercise.leaderboard_visibility)
    if visibility is LeaderboardVisibility.HIDDEN and not viewer.is_instructor:
        raise Forbidden("The leaderboard of this exercise is visible to instructors only.")
    reveal = viewer.is_instructor or visibility is LeaderboardVisibility.PUBLIC
    rows = []
    for position, s in enumerate(standings(session, exercise=exercise), start=1):
        is_me = s.user_id == viewer.id
        name = s.display_name or s.username if reveal or is_me else f"Student {position}"
        rows.append(LeaderboardRow(s.rank, name, s.best_score, s.passed, s.attempts, is_me))
    return rows


def grades_csv(session: Session, *, exercise: Exercise) -> str:
    """One row per student on the roster (submitted or not)."""
    by_user = {s.user_id: s for s in standings(session, exercise=exercise)}
    students = session.scalars(
        select(User).where(User.role == Role.STUDENT.value).order_by(User.username)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "username",
            "student_id",
            "display_name",
            "best_score",
            "passed",
            "submitted_at",
            "attempts",
            "late",
        ]
    )
    for user in students:
        s = by_user.get(user.id)
        writer.writerow(
            [
                user.username,
                user.student_id or "",
                user.display_name,
                "" if s is None or s.best_score is None else repr(s.best_score),
                "true" if s is not None and s.passed else "false",
                "" if s is None or s.best_submitted_at is None else s.best_submitted_at.isoformat(),
                0 if s is None else s.attempts,
                "true" if s is not None and s.best_late else "false",
            ]
        )
    return buffer.getvalue()
