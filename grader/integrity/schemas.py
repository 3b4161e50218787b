from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SideOut(BaseModel):
    submission_id: int
    username: str
    display_name: str | None
    submitted_at: datetime
    score: float | None
    passed: bool | None


class PairOut(BaseModel):
    # None: only the file hashes were compared (one side has no fingerprint).
    similarity: float | None
    identical_file: bool
    testset_version: int | None
    # Submitted first.
    first: SideOut
    second: SideOut


class SimilarOut(BaseModel):
    exercise: str
    threshold: float
    pairs: list[PairOut]
    # Submissions marked as public baselines: never flagged.
    baselines: list[int]


class BaselineOut(BaseModel):
    submission_id: int
    baseline: bool


class GradedOut(BaseModel):
    testset_version: int | None
    score: float | None
    passed: bool
    status: str


class SubmissionChangeOut(BaseModel):
    submission_id: int
    username: str
    before: GradedOut
    after: GradedOut | None
    score_change: float | None
    flipped: str | None


class StudentChangeOut(BaseModel):
    username: str
    best_before: float | None
    best_after: float | None
    score_change: float | None
    passed_before: bool
    passed_after: bool | None
    flipped: str | None


class StaleResultOut(BaseModel):
    submission_id: int
    username: str
    testset_version: int | None
    score: float | None
    passed: bool


class ChangesOut(BaseModel):
    exercise: str
    testset_version: int
    submissions: list[SubmissionChangeOut]
    students: list[StudentChangeOut]
    stale: list[StaleResultOut]


class SplitIn(BaseModel):
    # 0 turns the split off; below 1.
    private_fraction: float
    pass_rule: str = "full"


class SplitOut(BaseModel):
    exercise: str
    private_fraction: float
    pass_rule: str
    revealed_at: datetime | None
    # Whether students see private (and full) scores now: revealed, or past the deadline.
    private_visible_to_students: bool


class PartsOut(BaseModel):
    submission_id: int
    username: str
    score: float | None
    public_score: float | None
    public_n: int
    private_score: float | None
    private_n: int
    passed: bool


class ScoreViewOut(BaseModel):
    submission_id: int
    # The full score, or the public one while the private part is hidden from this viewer.
    score: float | None
    # None: decided by the private part, shown at the reveal.
    passed: bool | None
    public_score: float | None
    private_score: float | None
    private_hidden: bool
