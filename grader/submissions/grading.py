"""The worker side of a submission: claim it, grade it, record the result exactly once.

Every step is idempotent, so a redelivered or re-sent task is harmless:
- status moves QUEUED -> RUNNING -> PASSED/FAILED/ERROR through guarded UPDATEs;
- a RUNNING row is re-claimed only when its previous attempt is provably lost (same host and
  its process is gone) or has outlived `stale_after_s`;
- the result row is unique per submission, written in the same transaction as the final status.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import grader
from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.exercises.models import Exercise
from grader.exercises.service import max_time_limit_s
from grader.grading.architecture import architecture_digest
from grader.grading.failures import STUDENT_MESSAGES, FailureKind
from grader.grading.kinds import DEFAULT_KIND, get_kind
from grader.grading.kinds.base import json_parts
from grader.grading.plans import PlanHint
from grader.integrity import service as integrity
from grader.leaderboard.service import recompute_standings
from grader.submissions import events, plans
from grader.submissions.models import (
    TERMINAL,
    Preflight,
    Result,
    ResultPreview,
    Status,
    Submission,
)
from grader.submissions.preview import preview_samples
from grader.submissions.upload import model_storage_path

if TYPE_CHECKING:
    import numpy as np

    from grader.grading.engine import GradingOutcome

logger = logging.getLogger(__name__)


class InfrastructureError(RuntimeError):
    """Grading failed for a reason that is ours, not the student's; the task retries."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_lost(submission: Submission, *, stale_after: timedelta, me: str) -> bool:
    """Whether a RUNNING submission's current attempt can no longer finish."""
    if submission.claimed_by == me:
        return True  # our own earlier attempt, which has ended since we are running now
    now = utcnow()
    if submission.started_at is None or submission.started_at < now - stale_after:
        return True
    host, _, pid = (submission.claimed_by or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


@dataclass(frozen=True)
class Claim:
    submission_id: int
    model_path: Path
    model_sha256: str
    testset_path: Path
    testset_sha256: str | None
    testset_version: int
    threshold: float
    max_model_bytes: int
    time_limit_s: float | None
    user_id: int
    exercise_id: int
    kind: str = DEFAULT_KIND
    batch_one_only: bool = False  # the upload's check found it works only one image at a time


def claim(settings: Settings, submission_id: int, *, me: str) -> Claim | None:
    """Take the submission for this attempt, or None when there is nothing to do.

    The claim (RUNNING, attempts + 1) commits on its own before anything that can fail, so
    every failure after it counts as an attempt; see run_grading_task for handing it back.
    """
    taken = _take(settings, submission_id, me=me)
    events.submission_changed(settings, submission_id)  # claimed, or given up
    if not taken:
        return None
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        sub = session.get(Submission, submission_id)
        assert sub is not None
        exercise = session.get(Exercise, sub.exercise_id)
        assert exercise is not None
        if not exercise.testset_path:
            raise InfrastructureError(f"exercise {exercise.slug!r} has no test set")
        return Claim(
            submission_id=sub.id,
            model_path=model_storage_path(settings.uploads_dir, sub.model_sha256),
            model_sha256=sub.model_sha256,
            testset_path=Path(exercise.testset_path),
            testset_sha256=exercise.testset_sha256,
            testset_version=exercise.testset_version,
            threshold=exercise.threshold,
            max_model_bytes=exercise.max_model_bytes,
            # Never past the worker's own hard limit, whatever was stored.
            time_limit_s=None
            if exercise.time_limit_s is None
            else min(exercise.time_limit_s, max_time_limit_s(settings)),
            kind=exercise.kind,
            user_id=sub.user_id,
            exercise_id=sub.exercise_id,
            batch_one_only=bool(sub.preflight_batch_one_only),
        )


def _take(settings: Settings, submission_id: int, *, me: str) -> bool:
    """The guarded QUEUED/lost-RUNNING -> RUNNING update, committed; False: not ours to grade
    (finished, held by a live attempt, or just given up after max_attempts)."""
    stale_after = timedelta(seconds=settings.stale_after_s)
    with session_scope(settings.sqlalchemy_url) as session:
        sub = session.get(Submission, submission_id)
        if sub is None or sub.status in TERMINAL:
            return False
        if sub.status == Status.RUNNING.value and not claim_is_lost(
            sub, stale_after=stale_after, me=me
        ):
            logger.info("submission %s is being graded by %s", sub.id, sub.claimed_by)
            return False
        guard = (
            Submission.id == sub.id,
            Submission.status == sub.status,
            Submission.attempts == sub.attempts,
        )
        if sub.attempts >= settings.max_attempts:
            _give_up(session, guard, sub)
            logger.error("submission %s: %s attempts lost, giving up", sub.id, sub.attempts)
            return False
        claimed = session.execute(
            update(Submission)
            .where(*guard)
            .values(
                status=Status.RUNNING.value,
                attempts=Submission.attempts + 1,
                claimed_by=me,
                started_at=utcnow(),
                # A pre-flight still waiting is moot now: the grading's verdict counts.
                preflight_status=case(
                    (
                        Submission.preflight_status == Preflight.PENDING.value,
                        Preflight.SKIPPED.value,
                    ),
                    else_=Submission.preflight_status,
                ),
            )
        )
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _give_up(
    session: Session, guard: tuple[ColumnElement[bool], ...], sub: Submission
) -> bool:
    """End the submission as our failure (ERROR / INFRA_ERROR): it does not count against
    the student's daily limit, nor as an attempt on the leaderboard."""
    moved = session.execute(
        update(Submission)
        .where(*guard)
        .values(
            status=Status.ERROR.value,
            failure_reason=FailureKind.INFRA_ERROR.value,
            failure_message=STUDENT_MESSAGES[FailureKind.INFRA_ERROR],
            finished_at=utcnow(),
            claimed_by=None,
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    recompute_standings(session, sub.exercise_id, sub.user_id)
    return True


def release_claim(settings: Settings, submission_id: int, *, me: str) -> str:
    """Hand back our attempt after it failed: QUEUED again with the attempt counted, so the
    next delivery (the task's retry, or the sweeper's re-send) takes it at once instead of
    waiting for the claim to go stale; after max_attempts it ends ERROR / INFRA_ERROR.

    Returns "released", "gave up", or "not ours" (another attempt took over, or it ended).
    """
    with session_scope(settings.sqlalchemy_url) as session:
        sub = session.get(Submission, submission_id)
        if sub is None or sub.status != Status.RUNNING.value or sub.claimed_by != me:
            return "not ours"
        guard = (
            Submission.id == sub.id,
            Submission.status == Status.RUNNING.value,
            Submission.claimed_by == me,
            Submission.attempts == sub.attempts,
        )
        if sub.attempts >= settings.max_attempts:
            return "gave up" if _give_up(session, guard, sub) else "not ours"
        moved = session.execute(
            update(Submission)
            .where(*guard)
            .values(
                status=Status.QUEUED.value,
                claimed_by=None,
                started_at=None,
                # The retry is sent right after; if it is not, the sweeper finds the task
                # missing from the broker and sends it.
                sent_at=utcnow(),
            )
        )
        return "released" if moved.rowcount == 1 else "not ours"  # type: ignore[attr-defined]


def run_grading_task(settings: Settings, submission_id: int) -> str:
    """What the Celery task calls: grade_submission, and whatever raises after the claim
    hands the claim back (release_claim) before the exception goes on to the task's retry.
    So every delivery either finishes the submission or counts an attempt, and a submission
    ends (at worst ERROR / INFRA_ERROR after max_attempts) within max_attempts deliveries."""
    me = worker_identity()
    try:
        return grade_submission(settings, submission_id)
    except Exception:
        outcome = release_claim(settings, submission_id, me=me)
        events.submission_changed(settings, submission_id)
        logger.exception("submission %s: attempt failed (%s)", submission_id, outcome)
        if outcome == "gave up":
            return "gave up"
        raise



def grade_submission(settings: Settings, submission_id: int) -> str:
    """Grade one submission; returns what happened (for logs). Raises InfrastructureError
    (or anything unexpected) when the task should be retried."""
    from grader.grading.engine import grade_model_file
    from grader.grading.testdata.testsets import load_test_set

    me = worker_identity()
    job = claim(settings, submission_id, me=me)
    if job is None:
        return "skipped"
    if not job.model_path.is_file():
        raise InfrastructureError(f"stored model {job.model_path} is missing")
    kind = get_kind(job.kind)
    test_set = load_test_set(job.testset_path, kind=kind, cache_dir=settings.cache_dir)
    architecture = architecture_digest(job.model_path, max_bytes=job.max_model_bytes)
    hint = plans.known_plan(settings, model_sha256=job.model_sha256, architecture=architecture)
    # One sandboxed run grades the test set and then predicts the public preview images with
    # the same loaded model and plan, all under the exercise's one time limit.
    outcome = grade_model_file(
        job.model_path,
        test_set,
        threshold=job.threshold,
        max_model_bytes=job.max_model_bytes,
        settings=settings,
        time_limit_s=job.time_limit_s,
        plan_hint=hint,
        preview_images=preview_samples(kind.name) if settings.sandbox_enabled else None,
        batch_one_only=job.batch_one_only,
    )
    if outcome.failure_kind == FailureKind.INFRA_ERROR:
        raise InfrastructureError(outcome.failure_message or "the engine reported INFRA_ERROR")
    if outcome.status in (Status.PASSED.value, Status.FAILED.value):
        status, reason = outcome.status, None
    else:
        status, reason = Status.ERROR.value, outcome.status
    drawn = None if reason is not None or outcome.preview is None else kind.preview(outcome.preview)
    return _finish(
        settings, job, outcome=outcome, status=status, reason=reason, me=me, preview=drawn,
        labels=test_set.labels, architecture=architecture, hint=hint,
    )


def _finish(
    settings: Settings,
    job: Claim,
    *,
    outcome: GradingOutcome,
    status: str,
    reason: str | None,
    me: str,
    preview: list[list[list[float]]] | None = None,
    labels: np.ndarray | None = None,
    architecture: str | None = None,
    hint: PlanHint | None = None,
) -> str:
    # Worked out before the write transaction, which every upload also waits for on SQLite.
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        draft = integrity.prepare_grading(
            session, submission_id=job.submission_id, testset_sha256=job.testset_sha256,
            testset_version=job.testset_version, kind=job.kind, threshold=job.threshold,
            predictions=outcome.predictions, labels=labels,
        )
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            moved = session.execute(
                update(Submission)
                .where(
                    Submission.id == job.submission_id,
                    Submission.status == Status.RUNNING.value,
                    Submission.claimed_by == me,
                )
                .values(
                    status=status,
                    failure_reason=reason,
                    failure_message=outcome.failure_message,
                    finished_at=utcnow(),
                )
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                # Another attempt took over (ours was presumed lost); it records the result.
                session.rollback()
                return "superseded"
            result = Result(
                submission_id=job.submission_id,
                status=outcome.status,
                score=outcome.score,
                passed=outcome.passed,
                threshold=outcome.threshold,
                n_images=outcome.n_images,
                parts=json_parts(outcome.parts or []),
                details=dict(outcome.details or {}) or None,
                timings=dict(outcome.timings or {}),
                seconds=outcome.seconds,
                model_sha256=job.model_sha256,
                testset_sha256=job.testset_sha256,
                testset_version=job.testset_version,
                evaluator_version=grader.EVALUATOR_VERSION,
                torch_version=plans.torch_version(),
                device=settings.device,
                plan=(
                    {**outcome.plan.to_dict(), "trials": outcome.trials}
                    if outcome.plan else None
                ),
            )
            session.add(result)
            if draft is not None:
                integrity.record_grading(session, draft)
            if outcome.plan is not None:
                plans.remember_plan(
                    session, settings, model_sha256=job.model_sha256, plan=outcome.plan,
                    architecture=architecture, hint=hint,
                )
            session.flush()
            if preview is not None:
                session.add(ResultPreview(result_id=result.id, data=preview))
            # The student's best and attempts move with the result, in its transaction.
            recompute_standings(session, job.exercise_id, job.user_id)
            session.flush()
    except IntegrityError:
        logger.info("submission %s already has a result", job.submission_id)
        return "duplicate"
    events.submission_changed(settings, job.submission_id)
    logger.info("submission %s graded: %s score=%s", job.submission_id, status, outcome.score)
    return status


def mark_sent(settings: Settings, submission_id: int, *, sent: bool) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == submission_id, Submission.status.not_in(TERMINAL))
            .values(sent_at=utcnow() if sent else None)
        )


def submission_ids_with_status(settings: Settings, status: Status) -> list[int]:
    with session_scope(settings.sqlalchemy_url) as session:
        return list(session.scalars(select(Submission.id).where(Submission.status == status)))
