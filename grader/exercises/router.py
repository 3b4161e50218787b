from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from grader.auth.models import User
from grader.deps import (
    CurrentUser,
    InstructorUser,
    PublishDep,
    SessionDep,
    SettingsDep,
    UnitOfWorkRoute,
)
from grader.downloads import csv_download
from grader.errors import api_errors, error_responses
from grader.exercises import service
from grader.exercises.models import Exercise
from grader.exercises.schemas import ExerciseCreate, ExerciseOut, ExerciseUpdate, RescoreOut
from grader.leaderboard.service import grades_csv
from grader.submissions import service as submissions
from grader.submissions.upload import receive_file

router = APIRouter(tags=["exercises"], route_class=UnitOfWorkRoute)

_TEST_SET_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The hidden test set, course CSV format",
                        }
                    },
                }
            }
        },
    }
}


def exercise_out(
    session: Session,
    *,
    exercise: Exercise,
    user: User,
    best: dict[int, tuple[float | None, bool]] | None = None,
) -> ExerciseOut:
    out = ExerciseOut.model_validate(exercise)
    out.remaining_today = submissions.remaining_today(session, user=user, exercise=exercise)
    if best is None:
        best = submissions.best_scores(session, user=user)
    out.my_best_score, out.my_passed = best.get(exercise.id, (None, False))
    return out


@router.get("/exercises", response_model=list[ExerciseOut], responses=error_responses(401))
def list_exercises(user: CurrentUser, session: SessionDep) -> list[ExerciseOut]:
    best = submissions.best_scores(session, user=user)
    return [
        exercise_out(session, exercise=e, user=user, best=best)
        for e in service.list_exercises(session, include_unpublished=user.is_instructor)
    ]


@router.get(
    "/exercises/{slug}", response_model=ExerciseOut, responses=error_responses(401, 404, 422)
)
def get_exercise(slug: str, user: CurrentUser, session: SessionDep) -> ExerciseOut:
    exercise = service.visible_exercise(session, slug=slug, user=user)
    return exercise_out(session, exercise=exercise, user=user)


@router.post(
    "/exercises",
    response_model=ExerciseOut,
    status_code=201,
    responses=api_errors(401, 403, 409, 422),
)
def create_exercise(
    body: ExerciseCreate, user: InstructorUser, session: SessionDep, settings: SettingsDep
) -> ExerciseOut:
    """A new exercise. Without `daily_limit` it gets the server's default limit; `null` means
    no limit."""
    values = body.model_dump(exclude={"use_demo_test_set"})
    if "daily_limit" not in body.model_fields_set:
        del values["daily_limit"]  # the service applies the default
    exercise = service.create_exercise(session, settings=settings, **values)
    if body.use_demo_test_set:
        service.use_demo_test_set(session, exercise=exercise, settings=settings)
    return exercise_out(session, exercise=exercise, user=user)


@router.patch(
    "/exercises/{slug}", response_model=ExerciseOut, responses=api_errors(401, 403, 404, 422)
)
def update_exercise(
    slug: str,
    body: ExerciseUpdate,
    user: InstructorUser,
    session: SessionDep,
    settings: SettingsDep,
) -> ExerciseOut:
    exercise = service.get_exercise(session, slug=slug)
    changes = body.model_dump(exclude_unset=True)
    service.update_exercise(session, exercise=exercise, changes=changes, settings=settings)
    return exercise_out(session, exercise=exercise, user=user)


@router.put(
    "/exercises/{slug}/test-set",
    response_model=ExerciseOut,
    responses=error_responses(400, 401, 403, 404, 413, 422),
    openapi_extra=_TEST_SET_BODY,
)
async def upload_test_set(
    slug: str,
    request: Request,
    user: InstructorUser,
    session: SessionDep,
    settings: SettingsDep,
) -> ExerciseOut:
    """Validate a hidden test set CSV (multipart field `file`) and make it the exercise's next
    version."""
    exercise = await run_in_threadpool(service.get_exercise, session, slug=slug)
    received = await receive_file(
        request,
        max_bytes=service.TEST_SET_MAX_BYTES,
        tmp_dir=settings.testsets_dir / ".incoming",
        what="The test set",
    )
    try:
        await run_in_threadpool(
            service.set_test_set,
            session,
            exercise=exercise,
            csv_path=received.path,
            settings=settings,
            display_name=service.upload_display_name(received.filename),
        )
    finally:
        received.path.unlink(missing_ok=True)
    return exercise_out(session, exercise=exercise, user=user)


@router.post(
    "/exercises/{slug}/rescore",
    response_model=RescoreOut,
    responses=error_responses(401, 403, 404, 422),
)
def rescore_exercise(
    slug: str, _: InstructorUser, session: SessionDep, publish: PublishDep
) -> RescoreOut:
    exercise = service.get_exercise(session, slug=slug)
    ids = submissions.rescore_submissions(session, exercise=exercise, publish=publish)
    return RescoreOut(requeued=ids)


@router.get(
    "/exercises/{slug}/grades.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "One row per student"},
        **error_responses(401, 403, 404, 422),
    },
)
def export_grades(slug: str, _: InstructorUser, session: SessionDep) -> Response:
    exercise = service.get_exercise(session, slug=slug)
    return csv_download(grades_csv(session, exercise=exercise), f"{slug}-grades.csv")
