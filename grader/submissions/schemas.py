from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from grader.grading.kinds import get_kind
from grader.ops.queueinfo import QueueInfo
from grader.submissions.models import Result, Submission


class BreakdownOut(BaseModel):
    """The per-part figures under a score, in the exercise kind's terms."""

    title: str
    unit: str
    labels: list[str]
    # One per label; None where the hidden test set has no image of that part.
    values: list[float | None]


class ResultOut(BaseModel):
    status: str
    score: float | None
    passed: bool
    threshold: float
    n_images: int | None
    breakdown: BreakdownOut | None = None
    # Facial keypoints only: the breakdown's values under the name this API always had.
    per_keypoint_rmse_px: list[float | None] | None = None
    # Kind-specific figures: a classification's confusion matrix (rows: true class), the
    # keypoints' mean MSE.
    details: dict[str, Any] | None = None
    timings: dict[str, Any] | None
    seconds: float | None
    model_sha256: str
    testset_sha256: str | None
    testset_version: int | None
    evaluator_version: str
    torch_version: str | None
    device: str | None
    # How the sandbox ran the model: variant, batch_size, threads (see docs/architecture.md).
    plan: dict[str, Any] | None = None
    created_at: datetime

    @classmethod
    def from_row(cls, result: Result, *, kind_name: str) -> ResultOut:
        out = cls.model_validate(result, from_attributes=True)
        if result.parts:
            spec = get_kind(kind_name).breakdown
            out.breakdown = BreakdownOut(
                title=spec.title, unit=spec.unit, labels=list(spec.labels),
                values=list(result.parts),
            )
            if kind_name == "keypoints":
                out.per_keypoint_rmse_px = list(result.parts)
        return out


class PreflightOut(BaseModel):
    """The quick check at upload: PENDING, PASSED, SKIPPED (grading began first) or the
    failure's kind (LOAD_ERROR, BAD_OUTPUT, NON_FINITE end the submission at once)."""

    status: str
    message: str | None
    # The model fails (or answers differently) on a batch: it is graded one image at a time.
    batch_one_only: bool | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, sub: Submission) -> PreflightOut | None:
        if sub.preflight_status is None:
            return None
        return cls(
            status=sub.preflight_status,
            message=sub.preflight_message,
            batch_one_only=sub.preflight_batch_one_only,
            finished_at=sub.preflight_finished_at,
        )


class SubmissionOut(BaseModel):
    id: int
    exercise: str
    url: str
    status: str
    score: float | None
    passed: bool | None
    failure_reason: str | None
    failure_message: str | None
    attempts: int
    late: bool
    original_filename: str
    model_sha256: str
    model_size: int
    model_format: str
    username: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    preflight: PreflightOut | None = None
    result: ResultOut | None
    # Position and ETA while QUEUED or RUNNING (grader/ops/queueinfo.py); None once it ended.
    queue: QueueInfo | None = None

    @classmethod
    def from_row(cls, sub: Submission, *, queue: QueueInfo | None = None) -> SubmissionOut:
        result = sub.result
        return cls(
            id=sub.id,
            exercise=sub.exercise.slug,
            url=submission_url(sub.id),
            status=sub.status,
            score=result.score if result else None,
            passed=result.passed if result else None,
            failure_reason=sub.failure_reason,
            failure_message=sub.failure_message,
            attempts=sub.attempts,
            late=sub.late,
            original_filename=sub.original_filename,
            model_sha256=sub.model_sha256,
            model_size=sub.model_size,
            model_format=sub.model_format,
            username=sub.user.username,
            created_at=sub.created_at,
            started_at=sub.started_at,
            finished_at=sub.finished_at,
            preflight=PreflightOut.from_row(sub),
            result=(
                ResultOut.from_row(result, kind_name=sub.exercise.kind) if result else None
            ),
            queue=queue,
        )


class SubmissionCreated(BaseModel):
    id: int
    status: str
    url: str


class SubmissionPage(BaseModel):
    items: list[SubmissionOut]
    total: int
    limit: int
    offset: int


def submission_url(submission_id: int) -> str:
    return f"/api/v1/submissions/{submission_id}"
