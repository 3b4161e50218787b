from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from grader.deps import CurrentUser, SessionDep
from grader.exercises.service import get_exercise
from grader.leaderboard import service
from grader.leaderboard.schemas import LeaderboardEntry, LeaderboardOut

router = APIRouter(tags=["leaderboard"])


@router.get("/exercises/{slug}/leaderboard", response_model=LeaderboardOut)
def leaderboard(slug: str, user: CurrentUser, session: SessionDep) -> LeaderboardOut:
    exercise = get_exercise(session, slug=slug, include_unpublished=user.is_instructor)
    rows = service.leaderboard(session, exercise=exercise, viewer=user)
    return LeaderboardOut(
        exercise=exercise.slug,
        threshold=exercise.threshold,
        entries=[LeaderboardEntry(**asdict(r)) for r in rows],
    )
