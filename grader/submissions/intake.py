"""Taking in one model upload, for the REST API and the web form alike.

Everything that can refuse the upload (auth, deadline, daily limit) runs before a byte of the
body is read; the body streams with a size cap; the archive check, the content-addressed store
(fsynced) and the row's commit follow, and only then is the task published.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from grader.auth.models import User
from grader.config import Settings
from grader.db import begin_write
from grader.errors import Invalid, PayloadTooLarge
from grader.exercises.models import Exercise
from grader.exercises.service import get_exercise
from grader.grading.archive import check_model_archive
from grader.grading.failures import FailureKind, GradingFailure
from grader.submissions import service
from grader.submissions.service import Publish
from grader.submissions.upload import (
    ReceivedFile,
    receive_model_upload,
    store_content_addressed,
)


def _admit(session: Session, *, user: User, slug: str) -> Exercise:
    exercise = get_exercise(session, slug=slug, include_unpublished=user.is_instructor)
    service.check_can_submit(session, user=user, exercise=exercise)
    # End the admission transaction now (same hop): no connection or lock is held while a slow
    # client streams its body (a deadline rush would otherwise exhaust the pool).
    session.commit()
    return exercise


def _accept(
    session: Session,
    *,
    user: User,
    exercise: Exercise,
    received: ReceivedFile,
    settings: Settings,
    publish: Publish,
) -> int:
    try:
        check_model_archive(received.path, max_bytes=exercise.max_model_bytes)
    except GradingFailure as exc:
        received.path.unlink(missing_ok=True)
        if exc.kind is FailureKind.TOO_LARGE:
            raise PayloadTooLarge(f"{exc.kind}: {exc.message}") from None
        raise Invalid(f"{exc.kind}: {exc.message}") from None
    store_content_addressed(received, uploads_dir=settings.uploads_dir)
    begin_write(session)
    submission = service.create_submission(
        session, user=user, exercise=exercise, upload=received, publish=publish
    )
    # Commit in this thread hop (see begin_write); the task is published right after.
    session.commit()
    return submission.id


async def take_upload(
    request: Request,
    session: Session,
    *,
    user: User,
    slug: str,
    settings: Settings,
    publish: Publish,
) -> int:
    """Admit, receive and accept one upload; returns the new submission's id."""
    exercise = await run_in_threadpool(_admit, session, user=user, slug=slug)
    received = await receive_model_upload(
        request, max_bytes=exercise.max_model_bytes, tmp_dir=settings.uploads_dir / ".incoming"
    )
    return await run_in_threadpool(
        _accept,
        session,
        user=user,
        exercise=exercise,
        received=received,
        settings=settings,
        publish=publish,
    )
