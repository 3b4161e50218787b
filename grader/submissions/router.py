from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from grader.auth.models import User
from grader.config import Settings
from grader.db import begin_write
from grader.deps import CurrentUser, InstructorUser, PublishDep, SessionDep, SettingsDep
from grader.errors import Invalid, PayloadTooLarge
from grader.exercises.models import Exercise
from grader.exercises.service import get_exercise
from grader.grading.archive import check_model_archive
from grader.grading.failures import FailureKind, GradingFailure
from grader.submissions import service
from grader.submissions.schemas import (
    SubmissionCreated,
    SubmissionOut,
    SubmissionPage,
    submission_url,
)
from grader.submissions.service import Publish
from grader.submissions.upload import (
    ReceivedFile,
    receive_model_upload,
    store_content_addressed,
)

router = APIRouter(tags=["submissions"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


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


@router.post(
    "/exercises/{slug}/submissions",
    status_code=202,
    response_model=SubmissionCreated,
    openapi_extra=_UPLOAD_BODY,
)
async def submit(
    slug: str,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    publish: PublishDep,
) -> SubmissionCreated:
    """Upload a TorchScript model (multipart field `file`); it is graded asynchronously."""
    # Everything that can refuse the upload runs before a byte of the body is read.
    exercise = await run_in_threadpool(_admit, session, user=user, slug=slug)
    received = await receive_model_upload(
        request, max_bytes=exercise.max_model_bytes, tmp_dir=settings.uploads_dir / ".incoming"
    )
    submission_id = await run_in_threadpool(
        _accept,
        session,
        user=user,
        exercise=exercise,
        received=received,
        settings=settings,
        publish=publish,
    )
    return SubmissionCreated(id=submission_id, status="QUEUED", url=submission_url(submission_id))


@router.get("/submissions/{submission_id}", response_model=SubmissionOut)
def get_submission(submission_id: int, user: CurrentUser, session: SessionDep) -> SubmissionOut:
    return SubmissionOut.from_row(
        service.get_submission(session, user=user, submission_id=submission_id)
    )


@router.get("/submissions", response_model=SubmissionPage)
def list_submissions(
    user: CurrentUser,
    session: SessionDep,
    exercise: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    all_users: bool = False,
) -> SubmissionPage:
    """The caller's submissions, newest first (instructors: `all_users=true` for everyone's)."""
    ex = get_exercise(session, slug=exercise) if exercise else None
    page = service.list_submissions(
        session, user=user, exercise=ex, limit=limit, offset=offset, all_users=all_users
    )
    return SubmissionPage(
        items=[SubmissionOut.from_row(s) for s in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.post("/submissions/{submission_id}/rescore", response_model=SubmissionCreated)
def rescore_submission(
    submission_id: int, user: InstructorUser, session: SessionDep, publish: PublishDep
) -> SubmissionCreated:
    sub = service.get_submission(session, user=user, submission_id=submission_id)
    service.rescore_submissions(
        session, exercise=sub.exercise, publish=publish, submission_id=submission_id
    )
    return SubmissionCreated(id=submission_id, status="QUEUED", url=submission_url(submission_id))
