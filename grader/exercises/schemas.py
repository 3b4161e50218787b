from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from grader.exercises.models import LatePolicy, LeaderboardVisibility


class ExerciseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    description: str
    threshold: float
    metric: str
    max_model_bytes: int
    time_limit_s: float | None
    deadline: datetime | None
    daily_limit: int | None
    late_policy: str
    queue: str
    leaderboard_visibility: str
    is_published: bool
    testset_version: int
    testset_n_images: int | None
    # Per caller: submissions left today (None = unlimited) and their best result so far.
    remaining_today: int | None = None
    my_best_score: float | None = None
    my_passed: bool = False


class ExerciseCreate(BaseModel):
    slug: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    threshold: float | None = None
    max_model_bytes: int | None = None
    time_limit_s: float | None = None
    deadline: datetime | None = None
    daily_limit: int | None = None
    late_policy: LatePolicy = LatePolicy.REJECT
    queue: str = "cpu"
    leaderboard_visibility: LeaderboardVisibility = LeaderboardVisibility.ANONYMOUS
    is_published: bool = True
    # Use the bundled demo test set (synthetic faces) until a real one is uploaded.
    use_demo_test_set: bool = False


class ExerciseUpdate(BaseModel):
    title: str | None = None
    description: str | None = None
    threshold: float | None = None
    max_model_bytes: int | None = None
    time_limit_s: float | None = None
    deadline: datetime | None = None
    daily_limit: int | None = None
    late_policy: LatePolicy | None = None
    queue: str | None = None
    leaderboard_visibility: LeaderboardVisibility | None = None
    is_published: bool | None = None


class RescoreOut(BaseModel):
    requeued: list[int]
