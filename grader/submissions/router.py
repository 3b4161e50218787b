from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from grader.auth.models import User
from grader.config import Settings
from grader.deps import (
    CurrentUser,
    InstructorUser,
    PublishDep,
    SessionDep,
    SettingsDep,
    UnitOfWorkRoute,
)
from grader.errors import api_errors, error_responses
from grader.exercises.service import visible_exercise
from grader.integrity.split import hide_private
from grader.ops.queueinfo import queue_info
from grader.submissions import events, service
from grader.submissions.intake import take_upload
from grader.submissions.models import Submission
from grader.submissions.schemas import (
    SubmissionCreated,
    SubmissionOut,
    SubmissionPage,
    submission_url,
)

router = APIRouter(tags=["submissions"], route_class=UnitOfWorkRoute)

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


# A client may keep the body but must ask again each time (with If-None-Match).
_REVALIDATE = {"Cache-Control": "private, no-cache"}


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionOut,
    responses={**api_errors(401, 404, 422), 304: {"description": "Not modified (ETag)"}},
)
def get_submission(
    submission_id: int,
    request: Request,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> SubmissionOut | Response:
    """One submission. Send its `ETag` back as `If-None-Match` to get a 304 while it has not
    changed (one small read); `/events` pushes each change instead."""
    state = events.submission_state(
        session, user=user, submission_id=submission_id, settings=settings
    )
    if events.not_modified(request.headers.get("if-none-match"), state.etag):
        return Response(status_code=304, headers={"ETag": state.etag, **_REVALIDATE})
    response.headers.update({"ETag": state.etag, **_REVALIDATE})
    sub = service.get_submission(session, user=user, submission_id=submission_id)
    return submission_view(session, sub, viewer=user, settings=settings)


@router.get(
    "/submissions/{submission_id}/events",
    response_class=StreamingResponse,
    responses={
        **api_errors(401, 404, 422, 429),
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
    },
)
def submission_events(
    submission_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-sent events: `submission` (the same JSON as the GET) at once and on every
    change, then `end` once it is graded. 429 beyond the open streams allowed per user."""
    return submission_event_stream(
        session, user=user, submission_id=submission_id, settings=settings
    )


def submission_event_stream(
    session: Session, *, user: User, submission_id: int, settings: Settings
) -> StreamingResponse:
    """The stream of one submission for `user`, after the same visibility check as the GET
    and the per-user stream limit: the API's and the page's."""
    events.submission_state(session, user=user, submission_id=submission_id, settings=settings)
    events.check_stream_allowed(settings, user=user)
    viewer = events.StreamViewer.of(user)
    return event_stream_response(
        events.stream(
            settings, viewer=viewer, submission_id=submission_id,
            body=submission_json(submission_id, viewer, settings),
        )
    )


def submission_json(
    submission_id: int, viewer: service.Viewer, settings: Settings
) -> Callable[[Session], str]:
    """The submission's JSON as the GET answers it, read in a session of the caller's."""

    def body(session: Session) -> str:
        row = service.get_submission(session, user=viewer, submission_id=submission_id)
        return submission_view(session, row, viewer=viewer, settings=settings).model_dump_json()

    return body


def submission_view(
    session: Session, row: Submission, *, viewer: service.Viewer, settings: Settings
) -> SubmissionOut:
    """A submission as `viewer` may see it (the private part of a split hidden from a student
    until its reveal), with its place in the queue: the one view the GET, the event stream and
    the pages show."""
    out = SubmissionOut.from_row(row, queue=queue_info(session, submission=row, settings=settings))
    return hide_private(session, out, submission=row, viewer=viewer)


def event_stream_response(stream: AsyncIterator[str]) -> StreamingResponse:
    # No proxy may buffer or cache the stream (X-Accel-Buffering: nginx).
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


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
