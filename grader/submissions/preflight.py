"""The pre-flight: at upload, load the model and run it on a few public faces in the sandbox.

A worker's pre-flight process (queue "<queue>-preflight", a process of its own, so it never
waits behind a grading) runs it within a second or two of the upload; one that could not
start within `preflight_max_wait_s` is skipped, so a rush cannot build a backlog of them.
LOAD_ERROR, BAD_OUTPUT and NON_FINITE end the submission at once, and it does not count
against the daily limit; a model that passes is graded as usual, and the student also learns
whether it works only one image at a time. Grading never waits for a pre-flight: if grading
starts first, the pre-flight is skipped and the grading's verdict is the one that counts.
"""

from __future__ import annotations

import logging

from sqlalchemy import update

from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.grading.engine import PASSED, preflight_model_file
from grader.grading.failures import FailureKind
from grader.submissions import events
from grader.submissions.models import Preflight, Status, Submission
from grader.submissions.service import PREFLIGHT_FAILURES
from grader.submissions.upload import model_storage_path

logger = logging.getLogger(__name__)

PREFLIGHT_IMAGES = 2


def run_preflight(settings: Settings, submission_id: int) -> str:
    """Check one upload; returns what happened (for logs)."""
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        sub = session.get(Submission, submission_id)
        if sub is None or sub.preflight_status != Preflight.PENDING.value:
            return "not pending"
        if sub.status != Status.QUEUED.value:
            return "grading began"
        waited = (utcnow() - sub.created_at).total_seconds()
        exercise = sub.exercise
        model_path = model_storage_path(settings.uploads_dir, sub.model_sha256)
        max_bytes = exercise.max_model_bytes
        kind = exercise.kind
        time_limit = min(
            exercise.time_limit_s or settings.default_time_limit_s,
            settings.preflight_time_limit_s,
        )
    if waited > settings.preflight_max_wait_s:
        return _record(settings, submission_id, Preflight.SKIPPED.value, None, None)
    outcome = preflight_model_file(
        model_path,
        images=PREFLIGHT_IMAGES,
        kind=kind,
        max_model_bytes=max_bytes,
        settings=settings,
        time_limit_s=time_limit,
    )
    if outcome.failure_kind is FailureKind.INFRA_ERROR:
        # Ours, not the student's: say nothing; the grading decides.
        logger.warning("pre-flight of %s: %s", submission_id, outcome.message)
        status, message, batch_one_only = Preflight.SKIPPED.value, None, None
    else:
        status, message, batch_one_only = outcome.status, outcome.message, outcome.batch_one_only
    return _record(settings, submission_id, status, message, batch_one_only)


def _record(
    settings: Settings, submission_id: int, status: str, message: str | None,
    batch_one_only: bool | None,
) -> str:
    now = utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        moved = session.execute(
            update(Submission)
            .where(
                Submission.id == submission_id,
                Submission.preflight_status == Preflight.PENDING.value,
            )
            .values(
                preflight_status=status,
                preflight_message=message,
                preflight_batch_one_only=batch_one_only,
                preflight_finished_at=now,
            )
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return "superseded"  # grading claimed it meanwhile: its verdict counts
        if status in PREFLIGHT_FAILURES:
            # Only while still waiting: a grading already under way reports the same failure.
            session.execute(
                update(Submission)
                .where(Submission.id == submission_id, Submission.status == Status.QUEUED.value)
                .values(
                    status=Status.ERROR.value,
                    failure_reason=status,
                    failure_message=message,
                    finished_at=now,
                )
            )
    events.submission_changed(settings, submission_id)
    logger.info("pre-flight of submission %s: %s", submission_id, status)
    return status if status != PASSED else "PASSED"
