from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from grader.api_errors import api_errors
from grader.deps import CurrentUser, InstructorUser, PublishDep, SessionDep, SettingsDep
from grader.errors import error_responses
from grader.exercises.service import visible_exercise
from grader.integrity.split import hide_private
from grader.submissions import service
from grader.submissions.intake import take_upload
from grader.submissions.schemas import (
    SubmissionCreated,
    SubmissionOut,
    SubmissionPage,
    submission_url,
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


@router.post(
    "/exercises/{slug}/submissions",
    status_code=202,
    response_model=SubmissionCreated,
    openapi_extra=_UPLOAD_BODY,
    # 409: the exercise has no test set yet, or first_only after the deadline; 403: deadline.
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429),
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
    submission_id = await take_upload(
        request, session, user=user, slug=slug, settings=settings, publish=publish
    )
    return SubmissionCreated(id=submission_id, status="QUEUED", url=submission_url(submission_id))


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionOut,
    responses=api_errors(401, 404, 422),
)
def get_submission(submission_id: int, user: CurrentUser, session: SessionDep) -> SubmissionOut:
    row = service.get_submission(session, user=user, submission_id=submission_id)
    return hide_private(session, SubmissionOut.from_row(row), submission=row, viewer=user)


@router.get("/submissions", response_model=SubmissionPage, responses=api_errors(401, 404, 422))
def list_submissions(
    user: CurrentUser,
    session: SessionDep,
    exercise: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=service.MAX_ID)] = 0,
    all_users: bool = False,
) -> SubmissionPage:
    """The caller's submissions, newest first (instructors: `all_users=true` for everyone's)."""
    ex = visible_exercise(session, slug=exercise, user=user) if exercise else None
    page = service.list_submissions(
        session, user=user, exercise=ex, limit=limit, offset=offset, all_users=all_users
    )
    return SubmissionPage(
        items=[hide_private(session, SubmissionOut.from_row(s), submission=s, viewer=user)
               for s in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.post(
    "/submissions/{submission_id}/rescore",
    response_model=SubmissionCreated,
    # 409: it is still being graded.
    responses=api_errors(401, 403, 404, 409, 422),
)
def rescore_submission(
    submission_id: int, user: InstructorUser, session: SessionDep, publish: PublishDep
) -> SubmissionCreated:
    sub = service.get_submission(session, user=user, submission_id=submission_id)
    service.rescore_submissions(
        session, exercise=sub.exercise, publish=publish, submission_id=submission_id
    )
    return SubmissionCreated(id=submission_id, status="QUEUED", url=submission_url(submission_id))
