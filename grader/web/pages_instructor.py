"""Instructor pages: leaderboard and grades, exercise management, users and tokens.

Every route depends on PageInstructor, so the role is checked on the server for each request.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.responses import RedirectResponse, Response

from grader.auth import service as auth_service
from grader.auth.models import Role, User
from grader.deps import PublishDep, SessionDep, SettingsDep
from grader.downloads import csv_download
from grader.errors import Invalid
from grader.exercises import service as exercises
from grader.exercises.models import LatePolicy, LeaderboardVisibility
from grader.grading.kinds import DEFAULT_KIND, KINDS, default_threshold, get_kind
from grader.leaderboard.service import grades_csv, standings
from grader.ops import service as ops
from grader.submissions import service as submissions
from grader.submissions.schemas import SubmissionOut
from grader.web.charts import score_histogram
from grader.web.core import CsrfForm, PageInstructor, WebRoute, render
from grader.web.standings_table import standings_rows

router = APIRouter(prefix="/instructor", route_class=WebRoute, include_in_schema=False)

NOTICES = {
    "created": "Exercise created.",
    "saved": "Settings saved.",
    "testset": "New test set version installed. Rescore to grade old submissions against it.",
    "revoked": "Token revoked.",
}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _optional_number(form: FormData, name: str, kind: type[int] | type[float]) -> Any:
    raw = _text(form, name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise Invalid(f"{name.replace('_', ' ')}: {raw!r} is not a number.") from None


def exercise_fields(form: FormData) -> dict[str, Any]:
    """The exercise form's fields as the exercises service names them."""
    deadline_raw = _text(form, "deadline")
    deadline = None
    if deadline_raw:
        try:
            # The form's datetime-local has no zone; the page says the deadline is in UTC.
            deadline = datetime.fromisoformat(deadline_raw).replace(tzinfo=UTC)
        except ValueError:
            raise Invalid(f"deadline: {deadline_raw!r} is not a date and time.") from None
    size_mib = _optional_number(form, "max_model_mb", float)
    fields: dict[str, Any] = {
        "title": _text(form, "title"),
        "description": _text(form, "description"),
        "threshold": _optional_number(form, "threshold", float),
        "deadline": deadline,
        "time_limit_s": _optional_number(form, "time_limit_s", float),
        "max_model_bytes": None if size_mib is None else exercises.mib_to_bytes(size_mib),
        "queue": _text(form, "queue") or "cpu",
        "late_policy": _text(form, "late_policy") or LatePolicy.REJECT.value,
        "leaderboard_visibility": _text(form, "leaderboard_visibility")
        or LeaderboardVisibility.ANONYMOUS.value,
        "is_published": form.get("is_published") is not None,
    }
    # As in the API: a blank field is "no limit"; a form without the field leaves it to the
    # service (the server's default for a new exercise, unchanged for an edit). The create form
    # comes prefilled with the default, so "unlimited" is always a deliberate choice.
    if "daily_limit" in form:
        fields["daily_limit"] = _optional_number(form, "daily_limit", int)
    if not fields["title"]:
        raise Invalid("An exercise needs a title.")
    return fields


def _choices() -> dict[str, Any]:
    return {
        "queues": exercises.QUEUES,
        "late_policies": [p.value for p in LatePolicy],
        "visibilities": [v.value for v in LeaderboardVisibility],
        "kinds": [get_kind(name) for name in KINDS],
    }


@router.get("")
def instructor_home(_: PageInstructor) -> Response:
    return RedirectResponse("/instructor/exercises", status_code=303)


@router.get("/system")
def system_page(
    request: Request, _: PageInstructor, session: SessionDep, settings: SettingsDep
) -> Response:
    """Queues, live workers and their sandbox layers, recent gradings (grader/ops)."""
    return render(request, "instructor/system.html", {
        "queues": ops.queues(session, settings),
        "preflight_workers": ops.preflight_workers(settings),
        "workers": ops.workers(settings),
        "recent": ops.recent_gradings(session, limit=25),
        "gradings": sorted(ops.grading_outcomes(session), key=lambda o: -o.count),
        "preflights": sorted(ops.preflight_outcomes(session), key=lambda o: -o.count),
    })  # fmt: skip


@router.get("/exercises")
def exercises_page(
    request: Request, _: PageInstructor, session: SessionDep, settings: SettingsDep
) -> Response:
    rows = exercises.list_exercises(session, include_unpublished=True)
    # What a new exercise gets when its form is left as it is: the server's defaults.
    defaults = {
        "kind": DEFAULT_KIND,
        "thresholds": {
            name: default_threshold(name, configured=settings.default_threshold)
            for name in KINDS
        },
        "daily_limit": settings.default_daily_limit,
    }
    return render(
        request,
        "instructor/exercises.html",
        {"exercises": rows, "defaults": defaults, **_choices()},
    )


@router.post("/exercises", dependencies=[CsrfForm])
async def create_exercise(
    request: Request, _: PageInstructor, session: SessionDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    fields = exercise_fields(form)
    slug = _text(form, "slug")

    kind = _text(form, "kind") or DEFAULT_KIND

    def create() -> None:
        exercise = exercises.create_exercise(
            session, slug=slug, settings=settings, kind=kind, **fields
        )
        if form.get("use_demo_test_set") is not None:
            exercises.use_demo_test_set(session, exercise=exercise, settings=settings)

    await run_in_threadpool(create)
    return RedirectResponse(f"/instructor/exercises/{slug}?notice=created", status_code=303)


@router.get("/exercises/{slug}")
def exercise_dashboard(
    request: Request,
    slug: str,
    _: PageInstructor,
    session: SessionDep,
    notice: str | None = None,
) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    rows = standings(session, exercise=exercise)
    scores = [r.best_score for r in rows if r.best_score is not None]
    return render(
        request,
        "instructor/exercise.html",
        {
            "exercise": exercise,
            "kind": get_kind(exercise.kind),
            "rows": rows,
            "standings_rows": standings_rows(rows, slug=exercise.slug),
            "histogram": score_histogram(scores, threshold=exercise.threshold),
            "n_passed": sum(1 for r in rows if r.passed),
            "notice": NOTICES.get(notice or ""),
            **_choices(),
        },
    )


@router.post("/exercises/{slug}", dependencies=[CsrfForm])
async def update_exercise(
    request: Request, slug: str, _: PageInstructor, session: SessionDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    exercise = exercises.get_exercise(session, slug=slug)
    changes = exercise_fields(form)
    if changes["max_model_bytes"] is None:
        del changes["max_model_bytes"]
    if changes["threshold"] is None:
        del changes["threshold"]
    exercises.update_exercise(session, exercise=exercise, changes=changes, settings=settings)
    return RedirectResponse(f"/instructor/exercises/{slug}?notice=saved", status_code=303)


@router.post("/exercises/{slug}/test-set", dependencies=[CsrfForm])
async def upload_test_set(
    request: Request, slug: str, _: PageInstructor, session: SessionDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Invalid("Choose a test set file.")
    exercise = exercises.get_exercise(session, slug=slug)
    await run_in_threadpool(
        exercises.set_test_set_from_upload,
        session,
        exercise=exercise,
        upload=upload.file,
        settings=settings,
        filename=upload.filename,
    )
    return RedirectResponse(f"/instructor/exercises/{slug}?notice=testset", status_code=303)


@router.post("/exercises/{slug}/rescore", dependencies=[CsrfForm])
def rescore(
    request: Request, slug: str, _: PageInstructor, session: SessionDep, publish: PublishDep
) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    ids = submissions.rescore_submissions(session, exercise=exercise, publish=publish)
    return render(
        request,
        "instructor/done.html",
        {
            "title": "Rescoring",
            "message": f"{len(ids)} finished submission(s) of {exercise.title} were queued again.",
            "back": f"/instructor/exercises/{slug}",
        },
    )


@router.get("/exercises/{slug}/grades.csv")
def grades(slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    return csv_download(grades_csv(session, exercise=exercise), f"{slug}-grades.csv")


@router.get("/exercises/{slug}/students/{username}")
def student_submissions(
    request: Request, slug: str, username: str, _: PageInstructor, session: SessionDep
) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    student = auth_service.get_user(session, username=username)
    # Listing "as" the student is exactly "this student's submissions"; the role was checked.
    listing = submissions.list_submissions(session, user=student, exercise=exercise, limit=200)
    return render(
        request,
        "instructor/student.html",
        {
            "exercise": exercise,
            "student": student,
            "items": [SubmissionOut.from_row(s) for s in listing.items],
        },
    )


# --- users and tokens ------------------------------------------------------------------------


def _users_page(request: Request, session: SessionDep, **extra: Any) -> Response:
    actor = request.state.web_user
    return render(
        request,
        "instructor/users.html",
        {
            "users": auth_service.list_users(session),
            "created": None,
            "imported": None,
            # The roles this instructor may create (the service decides again on submit).
            "roles": [r.value for r in Role if auth_service.may_manage(actor, target_role=r)],
            **extra,
        },
    )


@router.get("/users")
def users_page(request: Request, _: PageInstructor, session: SessionDep) -> Response:
    return _users_page(request, session)


@router.post("/users", dependencies=[CsrfForm])
async def create_user(request: Request, actor: PageInstructor, session: SessionDep) -> Response:
    form = await request.form()
    try:
        role = Role(_text(form, "role") or Role.STUDENT.value)
    except ValueError:
        raise Invalid(f"Unknown role {_text(form, 'role')!r}.") from None
    password = _text(form, "password")
    generated = None if password else auth_service.generate_password()
    user = auth_service.create_user(
        session,
        actor=actor,
        username=_text(form, "username"),
        role=role,
        password=password or generated,
        student_id=_text(form, "student_id") or None,
        display_name=_text(form, "display_name"),
    )
    # The generated password is shown once, on this response, and never stored in clear.
    return _users_page(request, session, created={"username": user.username, "password": generated})


@router.post("/users/import", dependencies=[CsrfForm])
async def import_roster(request: Request, actor: PageInstructor, session: SessionDep) -> Response:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Invalid("Choose a roster CSV file.")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roster.csv"
        with path.open("wb") as out:
            await run_in_threadpool(shutil.copyfileobj, upload.file, out)
        imported = await run_in_threadpool(
            auth_service.import_roster, session, actor=actor, path=path
        )
    return _users_page(request, session, imported=imported)


def _user_page(
    request: Request, session: SessionDep, *, actor: User, person: User, issued: str | None
) -> Response:
    return render(
        request,
        "instructor/user.html",
        {
            "person": person,
            "tokens": auth_service.list_tokens(session, user=person),
            "issued": issued,
            "may_manage": auth_service.may_manage_tokens_of(actor, person),
            "default_days": request.app.state.settings.api_token_ttl_days,
        },
    )


@router.get("/users/{username}")
def user_page(
    request: Request, username: str, actor: PageInstructor, session: SessionDep
) -> Response:
    person = auth_service.get_user(session, username=username)
    return _user_page(request, session, actor=actor, person=person, issued=None)


@router.post("/users/{username}/tokens", dependencies=[CsrfForm])
async def issue_token(
    request: Request,
    username: str,
    actor: PageInstructor,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    form = await request.form()
    person = auth_service.get_user(session, username=username)
    issued = auth_service.create_api_token(
        session,
        actor=actor,
        owner=person,
        name=_text(form, "name"),
        settings=settings,
        expires_in_days=_optional_number(form, "expires_in_days", int),
        never_expires=form.get("never_expires") is not None,
    )
    return _user_page(request, session, actor=actor, person=person, issued=issued.token)


@router.post("/tokens/{token_id}/revoke", dependencies=[CsrfForm])
def revoke_token(token_id: int, actor: PageInstructor, session: SessionDep) -> Response:
    record = auth_service.revoke_token(session, actor=actor, token_id=token_id)
    return RedirectResponse(f"/instructor/users/{record.user.username}", status_code=303)
