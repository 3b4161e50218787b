from __future__ import annotations

from pydantic import BaseModel


class LeaderboardEntry(BaseModel):
    rank: int | None
    name: str
    best_score: float | None
    passed: bool
    attempts: int
    is_me: bool


class LeaderboardOut(BaseModel):
    exercise: str
    threshold: float
    entries: list[LeaderboardEntry]
