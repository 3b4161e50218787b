"""Instructor-only API: similar submissions, public baselines, what a test-set change did.
Every route depends on InstructorUser: a student gets 403 and learns nothing."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response

from grader.deps import InstructorUser, SessionDep
from grader.errors import error_responses
from grader.exercises.service import get_exercise
from grader.integrity import changes, service
from grader.integrity.schemas import BaselineOut, ChangesOut, PairOut, SimilarOut

router = APIRouter(tags=["integrity"])


@router.get(
    "/exercises/{slug}/similar",
    response_model=SimilarOut,
    responses=error_responses(401, 403, 404, 422),
)
def similar(slug: str, _: InstructorUser, session: SessionDep) -> SimilarOut:
    exercise = get_exercise(session, slug=slug)
    return SimilarOut(
        exercise=exercise.slug,
        threshold=service.SIMILARITY_THRESHOLD,
        pairs=[PairOut(**asdict(p)) for p in service.similar_pairs(session, exercise=exercise)],
        baselines=[s.id for s in service.baselines(session, exercise=exercise)],
    )


@router.get(
    "/exercises/{slug}/similar.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per flagged pair"},
               **error_responses(401, 403, 404, 422)},
)
def similar_csv(slug: str, _: InstructorUser, session: SessionDep) -> Response:
    exercise = get_exercise(session, slug=slug)
    return Response(
        content=service.similar_csv(session, exercise=exercise),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}-similar.csv"'},
    )


@router.put(
    "/submissions/{submission_id}/baseline",
    response_model=BaselineOut,
    responses=error_responses(401, 403, 404, 422),
)
def mark_baseline(submission_id: int, user: InstructorUser, session: SessionDep) -> BaselineOut:
    sub = service.mark_baseline(session, submission_id=submission_id, by=user)
    return BaselineOut(submission_id=sub.id, baseline=True)


@router.delete(
    "/submissions/{submission_id}/baseline",
    response_model=BaselineOut,
    responses=error_responses(401, 403, 404, 422),
)
def unmark_baseline(
    submission_id: int, user: InstructorUser, session: SessionDep
) -> BaselineOut:
    sub = service.mark_baseline(session, submission_id=submission_id, by=user, baseline=False)
    return BaselineOut(submission_id=sub.id, baseline=False)


@router.get(
    "/exercises/{slug}/testset-changes",
    response_model=ChangesOut,
    responses=error_responses(401, 403, 404, 422),
)
def testset_changes(slug: str, _: InstructorUser, session: SessionDep) -> ChangesOut:
    exercise = get_exercise(session, slug=slug)
    return ChangesOut.model_validate(asdict(changes.testset_changes(session, exercise=exercise)))
