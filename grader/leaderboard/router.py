from __future__ import annotations

from fastapi import APIRouter

from grader.deps import CurrentUser, SessionDep, UnitOfWorkRoute
from grader.errors import error_responses
from grader.exercises.service import visible_exercise
from grader.leaderboard import service
from grader.leaderboard.schemas import LeaderboardEntry, LeaderboardOut

router = APIRouter(tags=["leaderboard"], route_class=UnitOfWorkRoute)


@router.get(
    "/exercises/{slug}/leaderboard",
    response_model=LeaderboardOut,
    # 403: the exercise's leaderboard is for instructors only.
    responses=error_responses(401, 403, 404, 422),
)
def leaderboard(slug: str, user: CurrentUser, session: SessionDep) -> LeaderboardOut:
    exercise = visible_exercise(session, slug=slug, user=user)
    rows = service.leaderboard(session, exercise=exercise, viewer=user)
    return LeaderboardOut(
        exercise=exercise.slug,
        threshold=exercise.threshold,
        entries=[LeaderboardEntry.model_validate(r, from_attributes=True) for r in rows],
    )
