"""Submissions: admission (deadline, daily limit), creation, queries, rescoring.

Session first, keyword-only, flush never commit. The grading side lives in grading.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Integer, and_, cast, delete, func, not_, or_, select, update
from sqlalchemy.orm import Session, joinedload

from grader.auth.models import User
from grader.config import Settings
from grader.db import MAX_ROW_ID, after_commit, is_row_id, utcnow
from grader.errors import Conflict, Forbidden, NotFound, RateLimited
from grader.exercises.models import Exercise, LatePolicy
from grader.grading.failures import FailureKind
from grader.integrity.changes import keep_replaced_results
from grader.integrity.models import Split
from grader.integrity.split import public_bests
from grader.leaderboard.service import recompute_standings
from grader.submissions.models import (
    TERMINAL,
    Preflight,
    Result,
    ResultPreview,
    Status,
    Submission,
)
from grader.submissions.upload import ReceivedFile


class Publish(Protocol):
    """Called after commit; returns normally once the broker has the grading task.
    `preflight`: send the quick check at upload first. `priority`: the task's broker priority
    when the caller already knows it (else looked up)."""

    def __call__(
        self, submission_id: int, queue: str, *, preflight: bool = False,
        priority: int | None = None,
    ) -> None: ...


# Broker priorities (kombu's Redis transport serves 0 first, FIFO within one priority): a
# student's oldest unfinished submission goes ahead of everyone's later ones, so nobody gets
# a second grading slot while another student's first submission waits.
FIRST_IN_LINE = 0
BEHIND = 9
_UNFINISHED = (Status.QUEUED.value, Status.RUNNING.value)

# A submission that ended because *we* failed does not use up a student's daily attempt.
_INFRA = and_(
    Submission.status == Status.ERROR.value,
    Submission.failure_reason == FailureKind.INFRA_ERROR.value,
)
# Neither does one whose pre-flight failed: the student heard at once and fixes the export.
PREFLIGHT_FAILURES = (
    FailureKind.LOAD_ERROR.value, FailureKind.BAD_OUTPUT.value, FailureKind.NON_FINITE.value,
)
_PREFLIGHT_FAILED = Submission.preflight_status.in_(PREFLIGHT_FAILURES)
_NOT_COUNTED = or_(_INFRA, _PREFLIGHT_FAILED)


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def submissions_today(
    session: Session,
    *,
    user: User,
    exercise: Exercise,
    now: datetime,
    failed_preflight: bool = False,
) -> int:
    """Today's submissions that count against the daily limit (or, with `failed_preflight`,
    those whose pre-flight failed)."""
    which = and_(_PREFLIGHT_FAILED, not_(_INFRA)) if failed_preflight else not_(_NOT_COUNTED)
    return (
        session.scalar(
            select(func.count(Submission.id)).where(
                Submission.user_id == user.id,
                Submission.exercise_id == exercise.id,
                Submission.created_at >= _day_start(now),
                which,
            )
        )
        or 0
    )


def remaining_today(
    session: Session, *, user: User, exercise: Exercise, now: datetime | None = None
) -> int | None:
    """Submissions the user may still make today (UTC); None when the exercise has no limit."""
    if exercise.daily_limit is None:
        return None
    used = submissions_today(session, user=user, exercise=exercise, now=now or utcnow())
    return max(exercise.daily_limit - used, 0)


def check_can_submit(
    session: Session,
    *,
    user: User,
    exercise: Exercise,
    settings: Settings,
    now: datetime | None = None,
) -> bool:
    """Raise if the user may not submit now; returns whether the submission will be late."""
    now = now or utcnow()
    if not exercise.testset_path:
        # Nothing could grade it: refuse now rather than accept an upload that cannot end.
        raise Conflict(f"The exercise {exercise.slug!r} has no test set yet.")
    late = exercise.deadline is not None and now > exercise.deadline
    if late:
        policy = LatePolicy(exercise.late_policy)
        if policy is LatePolicy.REJECT:
            raise Forbidden(f"The deadline for {exercise.slug!r} has passed ({exercise.deadline}).")
        if policy is LatePolicy.FIRST_ONLY:
            prior = session.scalar(
                select(func.count(Submission.id)).where(
                    Submission.user_id == user.id,
                    Submission.exercise_id == exercise.id,
                    not_(_NOT_COUNTED),
                )
            )
            if prior:
                raise Conflict(
                    f"The deadline for {exercise.slug!r} has passed and you already submitted."
                )
    retry_after = int((_day_start(now) + timedelta(days=1) - now).total_seconds()) + 1
    max_failed = settings.preflight_failures_per_day
    if settings.preflight_enabled and submissions_today(
        session, user=user, exercise=exercise, now=now, failed_preflight=True
    ) >= max_failed:
        raise RateLimited(
            f"{max_failed} uploads to {exercise.slug!r} failed their check today; "
            f"try again in {retry_after} s, after testing the export locally "
            "(`grader evaluate model.pt`).",
            headers={"Retry-After": str(retry_after)},
        )
    remaining = remaining_today(session, user=user, exercise=exercise, now=now)
    if remaining == 0:
        raise RateLimited(
            f"Daily limit of {exercise.daily_limit} submissions reached for {exercise.slug!r}; "
            f"try again in {retry_after} s (limits reset at 00:00 UTC).",
            headers={"Retry-After": str(retry_after)},
        )
    return late


def create_submission(
    session: Session,
    *,
    user: User,
    exercise: Exercise,
    upload: ReceivedFile,
    publish: Publish,
    settings: Settings,
) -> Submission:
    """Record an accepted upload and publish its task after commit (and, when enabled, the
    quick check at upload before it).

    The rules are checked again here under a lock on the student's row, held until the
    transaction ends: concurrent uploads by one student are admitted one at a time, so they
    cannot all pass the daily limit (PostgreSQL; SQLite's writers are serialised anyway). The
    caller stores the file after this returns and before it commits.
    """
    lock_student(session, user=user)
    now = utcnow()
    late = check_can_submit(session, user=user, exercise=exercise, settings=settings, now=now)
    preflight = settings.preflight_enabled
    submission = Submission(
        user_id=user.id,
        exercise_id=exercise.id,
        model_sha256=upload.sha256,
        model_size=upload.size,
        original_filename=upload.filename,
        status=Status.QUEUED.value,
        late=late,
        created_at=now,
        # Optimistic: if publishing fails it is reset to NULL; if we crash before publishing,
        # the sweeper finds it QUEUED with an old sent_at.
        sent_at=now,
        preflight_status=Preflight.PENDING.value if preflight else None,
    )
    session.add(submission)
    session.flush()
    recompute_standings(session, exercise.id, user.id)
    # Decided under the student's lock, in this transaction: no second session after commit.
    priority = _priority_behind(
        session, user_id=user.id, queue=exercise.queue, submission_id=submission.id
    )
    schedule_publish(
        session, submission_id=submission.id, queue=exercise.queue, publish=publish,
        preflight=preflight, priority=priority,
    )
    return submission


def lock_student(session: Session, *, user: User) -> None:
    """Take the student's row lock for the rest of the transaction (SQLite: a no-op, its
    writers hold the database lock). NO KEY: rows that only reference the user (tokens)
    are not blocked."""
    session.execute(select(User.id).where(User.id == user.id).with_for_update(key_share=True)).one()


def queue_priority(session: Session, *, submission_id: int) -> int:
    """FIRST_IN_LINE for the student's oldest unfinished submission on its queue, BEHIND for
    the others. Decided each time the task is sent (upload, retry, sweeper, rescore)."""
    row = session.execute(
        select(Submission.user_id, Exercise.queue)
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(Submission.id == submission_id)
    ).first()
    if row is None:
        return FIRST_IN_LINE
    user_id, queue = row
    return _priority_behind(session, user_id=user_id, queue=queue, submission_id=submission_id)


def _priority_behind(session: Session, *, user_id: int, queue: str, submission_id: int) -> int:
    earlier = session.scalar(
        select(Submission.id)
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(
            Submission.user_id == user_id,
            Submission.id < submission_id,
            Submission.status.in_(_UNFINISHED),
            Exercise.queue == queue,
        )
        .limit(1)
    )
    return FIRST_IN_LINE if earlier is None else BEHIND


def schedule_publish(
    session: Session, *, submission_id: int, queue: str, publish: Publish, preflight: bool = False,
    priority: int | None = None,
) -> None:
    after_commit(
        session, lambda: publish(submission_id, queue, preflight=preflight, priority=priority)
    )


MAX_ID = MAX_ROW_ID


def get_submission(session: Session, *, user: Viewer, submission_id: int) -> Submission:
    if not is_row_id(submission_id):
        raise NotFound(f"No submission {submission_id}.")
    submission = session.scalar(
        select(Submission)
        .options(joinedload(Submission.exercise), joinedload(Submission.result))
        .where(Submission.id == submission_id)
    )
    check_visible(
        user, owner_id=None if submission is None else submission.user_id,
        submission_id=submission_id,
    )
    assert submission is not None
    return submission


class Viewer(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def is_instructor(self) -> bool: ...


def check_visible(viewer: Viewer, *, owner_id: int | None, submission_id: int) -> None:
    """Its owner and instructors see a submission. Someone else's is "not found", like one
    that does not exist (owner_id None): never reveal that it exists."""
    if owner_id is None or (owner_id != viewer.id and not viewer.is_instructor):
        raise NotFound(f"No submission {submission_id}.")


@dataclass(frozen=True)
class Page:
    items: list[Submission]
    total: int


def list_submissions(
    session: Session,
    *,
    user: User,
    exercise: Exercise | None = None,
    limit: int = 20,
    offset: int = 0,
    all_users: bool = False,
) -> Page:
    conditions = [] if all_users and user.is_instructor else [Submission.user_id == user.id]
    if exercise is not None:
        conditions.append(Submission.exercise_id == exercise.id)
    total = session.scalar(select(func.count(Submission.id)).where(*conditions)) or 0
    if offset > MAX_ID:  # past any row (and beyond what PostgreSQL's OFFSET takes)
        return Page([], total)
    items = session.scalars(
        select(Submission)
        .options(
            joinedload(Submission.exercise),
            joinedload(Submission.result),
            joinedload(Submission.user),
        )
        .where(*conditions)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return Page(list(items), total)


def best_scores(session: Session, *, user: User) -> dict[int, tuple[float | None, bool]]:
    """exercise_id -> (best score, passed) over the user's graded submissions."""
    rows = session.execute(
        select(
            Submission.exercise_id, func.max(Result.score), func.max(cast(Result.passed, Integer))
        )
        .join(Result, Result.submission_id == Submission.id)
        .where(Submission.user_id == user.id)
        .group_by(Submission.exercise_id)
    )
    best = {ex_id: (score, bool(passed)) for ex_id, score, passed in rows}
    # Where a public/private split still hides full scores from this user: the public best.
    for exercise in session.scalars(
        select(Exercise).join(Split, Split.exercise_id == Exercise.id)
        .where(Exercise.id.in_(list(best)))
    ):
        public = public_bests(session, exercise=exercise, viewer=user, user_id=user.id)
        if public is not None:
            score, passed = public.get(user.id, (None, None))
            best[exercise.id] = (score, bool(passed))
    return best


def rescore_submissions(
    session: Session, *, exercise: Exercise, publish: Publish, submission_id: int | None = None
) -> list[int]:
    """Re-grade finished submissions (e.g. after a new test set version).

    The old result is deleted and the row goes back to QUEUED with its attempts reset; rows
    still QUEUED or RUNNING are left alone (they are graded against the current test set).
    """
    if submission_id is not None and not is_row_id(submission_id):
        raise NotFound(f"No submission {submission_id} in {exercise.slug!r}.")
    conditions = [Submission.exercise_id == exercise.id, Submission.status.in_(TERMINAL)]
    if submission_id is not None:
        conditions.append(Submission.id == submission_id)
    ids = list(session.scalars(select(Submission.id).where(*conditions)))
    if submission_id is not None and not ids:
        exists = session.scalar(
            select(Submission.id).where(
                Submission.id == submission_id, Submission.exercise_id == exercise.id
            )
        )
        if exists is None:
            raise NotFound(f"No submission {submission_id} in {exercise.slug!r}.")
        raise Conflict(f"Submission {submission_id} is still being graded.")
    if not ids:
        return []
    now = utcnow()
    # Kept, not overwritten: the instructor sees what the new version changed.
    keep_replaced_results(session, submission_ids=ids)
    results = select(Result.id).where(Result.submission_id.in_(ids))
    session.execute(delete(ResultPreview).where(ResultPreview.result_id.in_(results)))
    session.execute(delete(Result).where(Result.submission_id.in_(ids)))
    session.execute(
        update(Submission)
        .where(Submission.id.in_(ids), Submission.status.in_(TERMINAL))
        .values(
            status=Status.QUEUED.value,
            attempts=0,
            failure_reason=None,
            failure_message=None,
            claimed_by=None,
            started_at=None,
            finished_at=None,
            sent_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # The rescored results are gone until regraded: the standings fall back to what is left.
    if submission_id is None:
        recompute_standings(session, exercise.id)
    else:
        owner = session.scalar(select(Submission.user_id).where(Submission.id == submission_id))
        assert owner is not None
        recompute_standings(session, exercise.id, owner)
    session.expire_all()
    for sid in ids:
        schedule_publish(session, submission_id=sid, queue=exercise.queue, publish=publish)
    return ids


def stale_submissions(
    session: Session,
    *,
    now: datetime,
    stale_after: timedelta,
    limit: int = 500,
    statuses: tuple[Status, ...] = (Status.QUEUED, Status.RUNNING),
) -> list[tuple[int, str, str, str | None]]:
    """(id, queue, status, claimed_by) of submissions whose task may have been lost: QUEUED
    never sent or sent before `now - stale_after`, and every RUNNING one (the caller decides
    whether its attempt is lost)."""
    cutoff = now - stale_after
    conditions = []
    if Status.QUEUED in statuses:
        conditions.append(
            and_(
                Submission.status == Status.QUEUED.value,
                or_(Submission.sent_at.is_(None), Submission.sent_at < cutoff),
            )
        )
    if Status.RUNNING in statuses:
        conditions.append(Submission.status == Status.RUNNING.value)
    rows = session.execute(
        select(Submission.id, Exercise.queue, Submission.status, Submission.claimed_by)
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(or_(*conditions))
        .order_by(Submission.id)
        .limit(limit)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def queued_to_check(
    session: Session, *, sent_before: datetime, overdue_before: datetime, limit: int = 20_000
) -> tuple[list[tuple[int, str]], list[tuple[int, str, bool]]]:
    """QUEUED submissions for the sweeper: (never sent: [(id, queue)], sent before
    `sent_before`: [(id, queue, sent before `overdue_before`)]), oldest first."""
    rows = session.execute(
        select(Submission.id, Exercise.queue, Submission.sent_at)
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(
            Submission.status == Status.QUEUED.value,
            or_(Submission.sent_at.is_(None), Submission.sent_at < sent_before),
        )
        .order_by(Submission.id)
        .limit(limit)
    )
    never: list[tuple[int, str]] = []
    sent: list[tuple[int, str, bool]] = []
    for sid, queue, sent_at in rows:
        if sent_at is None:
            never.append((sid, queue))
        else:
            sent.append((sid, queue, sent_at < overdue_before))
    return never, sent
