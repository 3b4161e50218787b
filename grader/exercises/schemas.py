from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from grader.exercises.models import LatePolicy, LeaderboardVisibility
from grader.exercises.service import (
    DAILY_LIMIT_MAX,
    DESCRIPTION_MAX,
    MAX_MODEL_BYTES_MAX,
    SLUG_MAX,
    SLUG_PATTERN,
    THRESHOLD_MAX,
    TIME_LIMIT_MARGIN_S,
    TIME_LIMIT_MIN_S,
    TITLE_MAX,
)
from grader.grading.kinds import DEFAULT_KIND, KINDS


class ExerciseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    description: str
    threshold: float
    kind: str
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


# The bounds are the service's (which also checks the web form and the CLI); here they only
# document the API and catch wrong types early. A PATCH may leave a field out but not clear a
# NOT NULL one: `SkipJsonSchema[None]` keeps null out of the documented schema, and the
# service answers 422 to an explicit null.
Title = Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX)]
Threshold = Annotated[float, Field(ge=0, le=THRESHOLD_MAX, allow_inf_nan=False)]
ModelBytes = Annotated[int, Field(ge=1, le=MAX_MODEL_BYTES_MAX)]
TimeLimit = Annotated[
    float,
    Field(
        ge=TIME_LIMIT_MIN_S,
        allow_inf_nan=False,
        description="Seconds for one grading run; at most the worker's hard limit minus "
        f"{TIME_LIMIT_MARGIN_S:g} s (540 s with the default settings). null: the default.",
    ),
]
DailyLimit = Annotated[
    int,
    Field(
        ge=1,
        le=DAILY_LIMIT_MAX,
        description="Submissions per student per UTC day; null: no limit.",
    ),
]


class ExerciseCreate(BaseModel):
    slug: str = Field(min_length=1, max_length=SLUG_MAX, pattern=SLUG_PATTERN)
    title: Title
    kind: str = Field(default=DEFAULT_KIND, description=f"One of: {', '.join(KINDS)}.")
    description: Description = ""
    threshold: Threshold | None = None
    max_model_bytes: ModelBytes | None = None
    time_limit_s: TimeLimit | None = None
    deadline: datetime | None = None
    # Left out: the server's default daily limit (GRADER_DEFAULT_DAILY_LIMIT); null: no limit.
    daily_limit: DailyLimit | None = None
    late_policy: LatePolicy = LatePolicy.REJECT
    queue: str = "cpu"
    leaderboard_visibility: LeaderboardVisibility = LeaderboardVisibility.ANONYMOUS
    is_published: bool = True
    # Use the kind's bundled synthetic demo test set until a real one is uploaded.
    use_demo_test_set: bool = False


class ExerciseUpdate(BaseModel):
    title: Title | SkipJsonSchema[None] = None
    # Only while the exercise has no test set: a test set is in one kind's format.
    kind: str | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    threshold: Threshold | SkipJsonSchema[None] = None
    max_model_bytes: ModelBytes | SkipJsonSchema[None] = None
    time_limit_s: TimeLimit | None = None
    deadline: datetime | None = None
    daily_limit: DailyLimit | None = None
    late_policy: LatePolicy | SkipJsonSchema[None] = None
    queue: str | SkipJsonSchema[None] = None
    leaderboard_visibility: LeaderboardVisibility | SkipJsonSchema[None] = None
    is_published: bool | SkipJsonSchema[None] = None


class RescoreOut(BaseModel):
    requeued: list[int]
