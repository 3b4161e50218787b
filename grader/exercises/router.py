from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from grader.auth.models import User
from grader.deps import CurrentUser, InstructorUser, PublishDep, SessionDep, SettingsDep
from grader.exercises import service
from grader.exercises.models import Exercise
from grader.exercises.schemas import ExerciseCreate, ExerciseOut, ExerciseUpdate, RescoreOut
from grader.leaderboard.service import grades_csv
from grader.submissions import service as submissions

router = APIRouter(tags=["exercises"])


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


@router.get("/exercises", response_model=list[ExerciseOut])
def list_exercises(user: CurrentUser, session: SessionDep) -> list[ExerciseOut]:
    best = submissions.best_scores(session, user=user)
    return [
        exercise_out(session, exercise=e, user=user, best=best)
        for e in service.list_exercises(session, include_unpublished=user.is_instructor)
    ]


@router.get("/exercises/{slug}", response_model=ExerciseOut)
def get_exercise(slug: str, user: CurrentUser, session: SessionDep) -> ExerciseOut:
    exercise = service.get_exercise(session, slug=slug, include_unpublished=user.is_instructor)
    return exercise_out(session, exercise=exercise, user=user)


@router.post("/exercises", response_model=ExerciseOut, status_code=201)
def create_exercise(
    body: ExerciseCreate, user: InstructorUser, session: SessionDep, settings: SettingsDep
) -> ExerciseOut:
    values = body.model_dump(exclude={"use_demo_test_set"})
    exercise = service.create_exercise(session, settings=settings, **values)
    if body.use_demo_test_set:
        from grader.grading.testsets import demo_test_set_path

        service.set_test_set(
            session, exercise=exercise, csv_path=demo_test_set_path(settings), settings=settings
        )
    return exercise_out(session, exercise=exercise, user=user)


@router.patch("/exercises/{slug}", response_model=ExerciseOut)
def update_exercise(
    slug: str, body: ExerciseUpdate, user: InstructorUser, session: SessionDep
) -> ExerciseOut:
    exercise = service.get_exercise(session, slug=slug)
    changes = body.model_dump(exclude_unset=True)
    service.update_exercise(session, exercise=exercise, changes=changes)
    return exercise_out(session, exercise=exercise, user=user)


@router.put("/exercises/{slug}/test-set", response_model=ExerciseOut)
async def upload_test_set(
    slug: str,
    file: Annotated[UploadFile, File(description="The hidden test set, course CSV format")],
    user: InstructorUser,
    session: SessionDep,
    settings: SettingsDep,
) -> ExerciseOut:
    """Validate a hidden test set CSV and make it the exercise's next version."""
    exercise = service.get_exercise(session, slug=slug)
    await run_in_threadpool(
        service.set_test_set_from_upload,
        session,
        exercise=exercise,
        upload=file.file,
        settings=settings,
    )
    return exercise_out(session, exercise=exercise, user=user)


@router.post("/exercises/{slug}/rescore", response_model=RescoreOut)
def rescore_exercise(
    slug: str, _: InstructorUser, session: SessionDep, publish: PublishDep
) -> RescoreOut:
    exercise = service.get_exercise(session, slug=slug)
    ids = submissions.rescore_submissions(session, exercise=exercise, publish=publish)
    return RescoreOut(requeued=ids)


@router.get("/exercises/{slug}/grades.csv", response_class=Response)
def export_grades(slug: str, _: InstructorUser, session: SessionDep) -> Response:
    exercise = service.get_exercise(session, slug=slug)
    return Response(
        content=grades_csv(session, exercise=exercise),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}-grades.csv"'},
    )
