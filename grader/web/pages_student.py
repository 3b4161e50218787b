"""Login, the student's pages, and the public assets (CSS/JS, sample faces)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, RedirectResponse, Response

from grader.auth import service as auth_service
from grader.auth.models import User
from grader.config import Settings
from grader.deps import PublishDep, SessionDep, SettingsDep, client_address
from grader.errors import DomainError, Invalid, NotAuthenticated, NotFound, RateLimited
from grader.exercises.router import exercise_out
from grader.exercises.service import get_exercise, list_exercises
from grader.grading.kinds import DEFAULT_KIND, KINDS, get_kind
from grader.integrity.split import hide_private
from grader.leaderboard.service import leaderboard
from grader.submissions import events
from grader.submissions import service as submissions
from grader.submissions.intake import take_upload
from grader.submissions.models import TERMINAL, Submission
from grader.submissions.preview import PREVIEW_IMAGES, preview_samples, stored_preview
from grader.submissions.router import submission_event_stream, submission_view
from grader.submissions.schemas import SubmissionOut
from grader.web import session as web_session
from grader.web.charts import breakdown_bars, confusion_cells
from grader.web.core import (
    WEB_DIR,
    CsrfForm,
    CsrfHeader,
    MaybeUser,
    PageUser,
    WebRoute,
    render,
)
from grader.web.png import encode_png
from grader.web.standings_table import leaderboard_rows

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_STATIC = {
    p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix])
    for p in (WEB_DIR / "static").iterdir()
    if p.suffix in _STATIC_TYPES
}
_SAMPLE_PNGS: dict[tuple[str, int], bytes] = {}


def safe_next(target: str | None) -> str:
    # Only same-site paths: "//evil.example" or "https://…" would be an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/exercises"


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC:
        raise NotFound("No such file.")
    body, media_type = _STATIC[name]
    return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/faces/{index}.png")
def face_png(index: int) -> Response:
    """The public sample faces (synthetic `val` split) the preview keypoints are drawn on."""
    return sample_png(DEFAULT_KIND, index)


@router.get("/samples/{kind}/{index}.png")
def sample_png(kind: str, index: int) -> Response:
    """A kind's public sample images (its synthetic `val` split), the page's previews."""
    if kind not in KINDS or not 0 <= index < PREVIEW_IMAGES:
        raise NotFound("No such image.")
    key = (kind, index)
    if key not in _SAMPLE_PNGS:
        _SAMPLE_PNGS[key] = encode_png(preview_samples(kind)[index])
    cache = {"Cache-Control": "public, max-age=86400"}
    return Response(_SAMPLE_PNGS[key], media_type="image/png", headers=cache)


@router.get("/")
def home(user: MaybeUser) -> Response:
    if user is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/instructor/exercises" if user.is_instructor else "/exercises", 303)


@router.get("/login")
def login_page(request: Request, user: MaybeUser, next: str | None = None) -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", dependencies=[CsrfForm])
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/exercises",
) -> Response:
    try:
        user, issued = auth_service.log_in(
            session,
            settings=settings,
            username=username,
            password=password,
            client=client_address(request),
            name=auth_service.WEB_SESSION_TOKEN_NAME,
        )
    except (NotAuthenticated, Invalid, RateLimited) as exc:
        # The form again, with the reason (and Retry-After when throttled).
        page = render(
            request,
            "login.html",
            {"next": safe_next(next), "error": exc.detail, "username": username},
            status_code=exc.status_code,
        )
        page.headers.update(exc.headers or {})
        return page
    web_session.start_session(request, issued.token)
    target = safe_next(next)
    if target == "/exercises" and user.is_instructor:
        target = "/instructor/exercises"
    response = RedirectResponse(target, status_code=303)
    web_session.write_cookie(response, request, settings)
    return response


@router.post("/logout", dependencies=[CsrfForm])
def logout(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    current = web_session.load_session(request, settings)
    if current.token:
        auth_service.revoke_token_value(session, token=current.token)
    response = RedirectResponse("/login", status_code=303)
    web_session.clear_cookie(response, request)
    return response


@router.get("/exercises")
def exercises_page(request: Request, user: PageUser, session: SessionDep) -> Response:
    best = submissions.best_scores(session, user=user)
    rows = [
        exercise_out(session, exercise=e, user=user, best=best)
        for e in list_exercises(session, include_unpublished=user.is_instructor)
    ]
    return render(request, "exercises.html", {"exercises": rows})


@router.get("/exercises/{slug}")
def exercise_page(
    request: Request, slug: str, user: PageUser, session: SessionDep, settings: SettingsDep
) -> Response:
    exercise = get_exercise(session, slug=slug, include_unpublished=user.is_instructor)
    closed_reason = None
    try:
        submissions.check_can_submit(session, user=user, exercise=exercise, settings=settings)
    except DomainError as exc:
        closed_reason = exc.detail
    recent = submissions.list_submissions(session, user=user, exercise=exercise, limit=5)
    return render(
        request,
        "exercise.html",
        {
            "exercise": exercise_out(session, exercise=exercise, user=user),
            "kind": get_kind(exercise.kind),
            "closed_reason": closed_reason,
            "recent": [_listed(session, s, user) for s in recent.items],
        },
    )


@router.post("/exercises/{slug}/submissions", dependencies=[CsrfHeader])
async def upload(
    request: Request,
    slug: str,
    user: PageUser,
    session: SessionDep,
    settings: SettingsDep,
    publish: PublishDep,
) -> Response:
    """The upload form's target: the same intake as the REST API's upload."""
    submission_id = await take_upload(
        request, session, user=user, slug=slug, settings=settings, publish=publish
    )
    url = f"/submissions/{submission_id}"
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"id": submission_id, "status": "QUEUED", "url": url}, 202)
    return RedirectResponse(url, status_code=303)


@router.get("/submissions")
def history_page(
    request: Request,
    user: PageUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    per_page = 50
    listing = submissions.list_submissions(
        session, user=user, limit=per_page, offset=(page - 1) * per_page
    )
    return render(
        request,
        "history.html",
        {
            "items": [_listed(session, s, user) for s in listing.items],
            "page": page,
            "has_next": page * per_page < listing.total,
            "total": listing.total,
        },
    )


def _submission_context(
    session: Session, row: Submission, settings: Settings, viewer: User
) -> dict:
    """What the result panel draws, in the terms of the exercise's kind, from the same view of
    the submission the API gives `viewer` (a split's private part stays hidden)."""
    sub = submission_view(session, row, viewer=viewer, settings=settings)
    kind = get_kind(row.exercise.kind)
    preview = stored_preview(session, result=row.result)
    breakdown = sub.result.breakdown if sub.result else None
    details = (sub.result.details or {}) if sub.result else {}
    return {
        "sub": sub,
        "kind": kind,
        "terminal": sub.status in TERMINAL,
        "bars": breakdown_bars(kind.breakdown, breakdown.values if breakdown else None),
        "confusion": confusion_cells(details.get("confusion")),
        "preview": list(enumerate(preview or [])),
    }


def _listed(session: Session, row: Submission, viewer: User) -> SubmissionOut:
    return hide_private(session, SubmissionOut.from_row(row), submission=row, viewer=viewer)


@router.get("/submissions/{submission_id}")
def submission_page(
    request: Request, submission_id: int, user: PageUser, session: SessionDep,
    settings: SettingsDep,
) -> Response:
    row = submissions.get_submission(session, user=user, submission_id=submission_id)
    return render(
        request, "submission.html", _submission_context(session, row, settings, user)
    )


@router.get("/submissions/{submission_id}/result")
def submission_fragment(
    request: Request, submission_id: int, user: PageUser, session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The result panel alone, swapped into the open page when grading ends."""
    row = submissions.get_submission(session, user=user, submission_id=submission_id)
    return render(request, "_result.html", _submission_context(session, row, settings, user))


@router.get("/submissions/{submission_id}/status")
def submission_status(
    request: Request, submission_id: int, user: PageUser, session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The page's fallback when its event stream is unavailable: polled with If-None-Match,
    it costs one small read while nothing changed (304)."""
    state = events.submission_state(
        session, user=user, submission_id=submission_id, settings=settings
    )
    headers = {"ETag": state.etag, "Cache-Control": "private, no-cache"}
    if events.not_modified(request.headers.get("if-none-match"), state.etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(
        {"id": state.submission_id, "status": state.status, "terminal": state.terminal},
        headers=headers,
    )


@router.get("/submissions/{submission_id}/events")
def submission_events(
    submission_id: int, user: PageUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """The page's live updates (server-sent events): the same stream as the API's."""
    return submission_event_stream(
        session, user=user, submission_id=submission_id, settings=settings
    )


@router.get("/exercises/{slug}/leaderboard")
def leaderboard_page(request: Request, slug: str, user: PageUser, session: SessionDep) -> Response:
    exercise = get_exercise(session, slug=slug, include_unpublished=user.is_instructor)
    rows = leaderboard(session, exercise=exercise, viewer=user)
    return render(request, "leaderboard.html", {"exercise": exercise_out(
        session, exercise=exercise, user=user), "rows": rows,
        "leaderboard_rows": leaderboard_rows(rows)})  # fmt: skip
