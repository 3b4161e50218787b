"""Best result per student, ranks, and the grades export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Integer,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.orm import Session

from grader.auth.models import Role, User
from grader.errors import Forbidden
from grader.exercises.models import Exercise, LeaderboardVisibility
from grader.grading.failures import FailureKind
from grader.integrity.split import best_parts, public_bests
from grader.leaderboard.models import StandingRow
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
    last_submitted_at: datetime | None = None
    best_result_id: int | None = None


def _counted() -> ColumnElement[bool]:
    """A submission counts as an attempt unless it ended because we failed (INFRA_ERROR)."""
    return or_(
        Submission.status != Status.ERROR.value,
        func.coalesce(Submission.failure_reason, "") != FailureKind.INFRA_ERROR.value,
    )


def recompute_standings(session: Session, exercise_id: int, user_id: int | None = None) -> None:
    """Rewrite the standings rows of one student (or, with user_id None, of every student) in
    an exercise from their submissions and results. The one place that decides what a
    standing is: the best graded result (highest score, the earliest submission on ties, then
    the lowest id), the counted attempts, the latest submission.

    Call it in the transaction that changed the submissions or results, after the change.
    PostgreSQL: it first locks the exercise row (shared for one student, exclusive for all)
    and the student's row, so that two transactions finishing one student's results cannot
    each write a standing that misses the other's result: the second waits, and its queries
    then see the first's commit (READ COMMITTED takes a new snapshot per statement). SQLite's
    writers take turns anyway, and the locks are omitted there.
    """
    exercise_lock = select(Exercise.id).where(Exercise.id == exercise_id)
    if user_id is None:
        session.execute(exercise_lock.with_for_update(key_share=True)).all()
    else:
        session.execute(exercise_lock.with_for_update(read=True)).all()
        session.execute(
            select(User.id).where(User.id == user_id).with_for_update(key_share=True)
        ).all()
    replace_old, insert_new = _standings_statements(per_user=user_id is not None)
    params = {"exercise_id": exercise_id}
    if user_id is not None:
        params["user_id"] = user_id
    # On the session's connection, as plain SQL: with parameters, the ORM would read the
    # insert-from-select as a bulk insert of rows.
    connection = session.connection()
    connection.execute(replace_old, params)
    connection.execute(insert_new, params)


@lru_cache(maxsize=2)
def _standings_statements(*, per_user: bool) -> tuple[Delete, Insert]:
    """The delete and the insert-from-select that rewrite standings, built once (with bound
    parameters): building them is most of the cost of a recompute, which every upload and
    every result pays."""
    exercise_id = bindparam("exercise_id", type_=Integer)
    scope = [Submission.exercise_id == exercise_id]
    if per_user:
        scope.append(Submission.user_id == bindparam("user_id", type_=Integer))
    totals = (
        select(
            Submission.user_id.label("user_id"),
            func.count(case((_counted(), Submission.id))).label("attempts"),
            func.max(Submission.created_at).label("last_submitted_at"),
        )
        .where(*scope)
        .group_by(Submission.user_id)
        .subquery()
    )
    ranked = (
        select(
            Submission.user_id.label("user_id"),
            Result.id.label("result_id"),
            Result.score.label("score"),
            Result.passed.label("passed"),
            Submission.created_at.label("created_at"),
            Submission.late.label("late"),
            func.row_number()
            .over(
                partition_by=Submission.user_id,
                order_by=(Result.score.desc(), Submission.created_at, Submission.id),
            )
            .label("place"),
        )
        .join(Result, Result.submission_id == Submission.id)
        .where(*scope, Result.score.is_not(None))
        .subquery()
    )
    best = select(ranked).where(ranked.c.place == 1).subquery()
    rows = (
        select(
            exercise_id,
            totals.c.user_id,
            totals.c.attempts,
            totals.c.last_submitted_at,
            best.c.result_id,
            best.c.score,
            func.coalesce(best.c.passed, false()),
            best.c.created_at,
            func.coalesce(best.c.late, false()),
        )
        .select_from(totals.outerjoin(best, best.c.user_id == totals.c.user_id))
        .where(totals.c.attempts > 0)
    )
    old = delete(StandingRow).where(StandingRow.exercise_id == bindparam("exercise_id"))
    if per_user:
        old = old.where(StandingRow.user_id == bindparam("user_id"))
    new = insert(StandingRow).from_select(
        [
            "exercise_id",
            "user_id",
            "attempts",
            "last_submitted_at",
            "best_result_id",
            "best_score",
            "passed",
            "best_submitted_at",
            "best_late",
        ],
        rows,
    )
    return old, new


def standings(session: Session, *, exercise: Exercise) -> list[Standing]:
    """Every student with at least one counted submission, ranked by best score."""
    # Plain columns, not ORM objects: a class of 1,000 is read on every leaderboard view.
    rows = session.execute(
        select(
            StandingRow.user_id,
            User.username,
            User.display_name,
            User.student_id,
            StandingRow.best_score,
            StandingRow.passed,
            StandingRow.attempts,
            StandingRow.best_submitted_at,
            StandingRow.best_late,
            StandingRow.last_submitted_at,
            StandingRow.best_result_id,
        )
        .join(User, User.id == StandingRow.user_id)
        .where(StandingRow.exercise_id == exercise.id)
    ).all()
    out = [
        Standing(
            user_id,
            username,
            display_name,
            student_id,
            best_score,
            bool(passed),
            attempts,
            best_at,
            bool(late),
            last_submitted_at=last_at,
            best_result_id=best_result_id,
        )
        for (
            user_id, username, display_name, student_id, best_score, passed, attempts, best_at,
            late, last_at, best_result_id,
        ) in rows
    ]
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
    """user_id -> time of that user's latest submission to the exercise (any status), for the
    students with a standing."""
    rows = session.execute(
        select(StandingRow.user_id, StandingRow.last_submitted_at).where(
            StandingRow.exercise_id == exercise.id
        )
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
    ranked = standings(session, exercise=exercise)
    # A public/private split hides full scores from students until its reveal: they are
    # ranked by their best public score, as on Kaggle's public leaderboard.
    public = public_bests(session, exercise=exercise, viewer=viewer)
    if public is not None:
        ranked = _ranked_by_public(ranked, public)
    rows = []
    for position, s in enumerate(ranked, start=1):
        is_me = s.user_id == viewer.id
        name = s.display_name or s.username if reveal or is_me else f"Student {position}"
        rows.append(LeaderboardRow(s.rank, name, s.best_score, s.passed, s.attempts, is_me))
    return rows


def _ranked_by_public(
    ranked: list[Standing], public: dict[int, tuple[float | None, bool | None]]
) -> list[Standing]:
    shown = [
        replace(s, best_score=public.get(s.user_id, (None, None))[0],
                passed=bool(public.get(s.user_id, (None, None))[1]))
        for s in ranked
    ]
    shown.sort(key=lambda s: (s.best_score is None, -(s.best_score or 0.0)))
    rank = 0
    for i, s in enumerate(shown):
        if s.best_score is not None and (i == 0 or s.best_score != shown[i - 1].best_score):
            rank = i + 1
        s.rank = rank if s.best_score is not None else None
    return shown


def grades_csv(session: Session, *, exercise: Exercise) -> str:
    """One row per student on the roster (submitted or not)."""
    by_user = {s.user_id: s for s in standings(session, exercise=exercise)}
    # With a public/private split, both parts of each best result, and the verdict its pass
    # rule gives.
    parts = best_parts(session, exercise=exercise, result_ids=[
        s.best_result_id for s in by_user.values() if s.best_result_id is not None
    ])
    students = session.execute(
        select(User.id, User.username, User.student_id, User.display_name)
        .where(User.role == Role.STUDENT.value)
        .order_by(User.username)
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
            *(["public_score", "private_score"] if parts is not None else []),
        ]
    )
    for user_id, username, student_id, display_name in students:
        s = by_user.get(user_id)
        passed = s is not None and s.passed
        extra: list[str] = []
        if parts is not None:
            public, private, passed_by_rule = parts.get(
                s.best_result_id if s is not None and s.best_result_id else -1, (None, None, False)
            )
            passed = s is not None and passed_by_rule
            extra = ["" if v is None else repr(v) for v in (public, private)]
        writer.writerow(
            [
                username,
                student_id or "",
                display_name,
                "" if s is None or s.best_score is None else repr(s.best_score),
                "true" if passed else "false",
                "" if s is None or s.best_submitted_at is None else s.best_submitted_at.isoformat(),
                0 if s is None else s.attempts,
                "true" if s is not None and s.best_late else "false",
                *extra,
            ]
        )
    return buffer.getvalue()
