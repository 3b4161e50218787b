"""Taking in one model upload, for the REST API and the web form alike.

Everything that can refuse the upload (auth, test set, deadline, daily limit) runs before a
byte of the body is read. The body streams with a size cap into a fsynced temp file, then the
archive check. Only then one short transaction decides for good: it re-checks the rules under
the student's row lock (concurrent uploads cannot all squeeze under the daily limit), moves
the file into content-addressed storage and commits the row; the task is published after the
commit. A refused upload leaves nothing behind: its temp file is removed, nothing was stored.
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
from grader.exercises.service import visible_exercise
from grader.grading.archive import check_model_archive
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import get_kind
from grader.submissions import service
from grader.submissions.service import Publish
from grader.submissions.upload import (
    ReceivedFile,
    receive_model_upload,
    store_content_addressed,
)


def _admit(session: Session, *, user: User, slug: str, settings: Settings) -> Exercise:
    exercise = visible_exercise(session, slug=slug, user=user)
    service.check_can_submit(session, user=user, exercise=exercise, settings=settings)
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
        try:
            model_format = check_model_archive(received.path, max_bytes=exercise.max_model_bytes)
        except GradingFailure as exc:
            message = exc.message_for(get_kind(exercise.kind))
            if exc.kind is FailureKind.TOO_LARGE:
                raise PayloadTooLarge(f"{exc.kind}: {message}") from None
            raise Invalid(f"{exc.kind}: {message}") from None
        begin_write(session)
        # Locks the student's row and re-checks the rules; raises (429, 409, 403) before
        # anything is stored.
        submission = service.create_submission(
            session, user=user, exercise=exercise, upload=received, publish=publish,
            settings=settings,
        )
        submission.model_format = model_format
        store_content_addressed(received, uploads_dir=settings.uploads_dir)
        # Commit in this thread hop (see begin_write); the task is published right after.
        session.commit()
        return submission.id
    except BaseException:
        session.rollback()
        raise
    finally:
        # Gone already when it was moved into storage (or shared an identical stored file).
        received.path.unlink(missing_ok=True)


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
    exercise = await run_in_threadpool(
        _admit, session, user=user, slug=slug, settings=settings
    )
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
