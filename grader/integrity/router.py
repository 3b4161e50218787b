"""Instructor-only API: similar submissions, public baselines, what a test-set change did.
Every route depends on InstructorUser: a student gets 403 and learns nothing."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response

from grader.auth.models import User
from grader.deps import CurrentUser, InstructorUser, SessionDep, UnitOfWorkRoute
from grader.downloads import csv_download
from grader.errors import NotFound, error_responses
from grader.exercises.models import Exercise
from grader.exercises.service import get_exercise
from grader.integrity import changes, service, split
from grader.integrity.models import Split
from grader.integrity.schemas import (
    BaselineOut,
    ChangesOut,
    PairOut,
    PartsOut,
    ScoreViewOut,
    SimilarOut,
    SplitIn,
    SplitOut,
)
from grader.submissions.service import get_submission

router = APIRouter(tags=["integrity"], route_class=UnitOfWorkRoute)


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
    return csv_download(service.similar_csv(session, exercise=exercise), f"{slug}-similar.csv")


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


def _split_out(exercise: Exercise, split_row: Split | None) -> SplitOut:
    from grader.integrity.split import private_visible

    return SplitOut(
        exercise=exercise.slug,
        private_fraction=split_row.private_fraction if split_row else 0.0,
        pass_rule=split_row.pass_rule if split_row else "full",
        revealed_at=split_row.revealed_at if split_row else None,
        private_visible_to_students=private_visible(
            exercise, split_row, viewer=User(role="student")
        ),
    )


@router.get("/exercises/{slug}/split", response_model=SplitOut,
            responses=error_responses(401, 403, 404, 422))
def get_split(slug: str, _: InstructorUser, session: SessionDep) -> SplitOut:
    exercise = get_exercise(session, slug=slug)
    return _split_out(exercise, split.get_split(session, exercise=exercise))


@router.put("/exercises/{slug}/split", response_model=SplitOut,
            responses=error_responses(401, 403, 404, 422))
def set_split(slug: str, body: SplitIn, _: InstructorUser, session: SessionDep) -> SplitOut:
    exercise = get_exercise(session, slug=slug)
    row = split.set_split(session, exercise=exercise, private_fraction=body.private_fraction,
                          pass_rule=body.pass_rule)
    return _split_out(exercise, row)


@router.post("/exercises/{slug}/split/reveal", response_model=SplitOut,
             responses=error_responses(401, 403, 404, 422))
def reveal_split(slug: str, _: InstructorUser, session: SessionDep) -> SplitOut:
    exercise = get_exercise(session, slug=slug)
    return _split_out(exercise, split.reveal(session, exercise=exercise))


@router.get("/exercises/{slug}/parts", response_model=list[PartsOut],
            responses=error_responses(401, 403, 404, 422))
def result_parts(slug: str, _: InstructorUser, session: SessionDep) -> list[PartsOut]:
    exercise = get_exercise(session, slug=slug)
    return [PartsOut(**asdict(row)) for row in split.instructor_rows(session, exercise=exercise)]


@router.get("/submissions/{submission_id}/scores", response_model=ScoreViewOut,
            responses=error_responses(401, 404, 422))
def submission_scores(submission_id: int, user: CurrentUser, session: SessionDep) -> ScoreViewOut:
    """The scores this viewer may see: a student sees the public score only until the
    deadline or the reveal."""
    sub = get_submission(session, user=user, submission_id=submission_id)
    view = split.score_view(session, submission=sub, viewer=user)
    if view is None:
        raise NotFound(f"Submission {submission_id} has no result yet.")
    return ScoreViewOut(submission_id=sub.id, **asdict(view))


@router.get(
    "/exercises/{slug}/parts.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per result"},
               **error_responses(401, 403, 404, 422)},
)
def result_parts_csv(slug: str, _: InstructorUser, session: SessionDep) -> Response:
    exercise = get_exercise(session, slug=slug)
    return csv_download(split.parts_csv(session, exercise=exercise), f"{slug}-parts.csv")
