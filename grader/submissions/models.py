from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from grader.auth.models import User
from grader.db import Base, UTCDateTime, utcnow
from grader.exercises.models import Exercise


class Status(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    ERROR = "ERROR"


TERMINAL = (Status.PASSED.value, Status.FAILED.value, Status.ERROR.value)


class Preflight(StrEnum):
    """Where the quick check at upload stands; a failure is stored as its FailureKind."""

    PENDING = "PENDING"
    PASSED = "PASSED"
    # Grading began before the check ran: the grading's own verdict is the one that counts.
    SKIPPED = "SKIPPED"


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_user_exercise_created", "user_id", "exercise_id", "created_at"),
        Index("ix_submissions_status", "status"),
        # Everyone's submissions newest first (instructors), whole or per exercise: read from
        # the index in order instead of sorting the whole history.
        Index("ix_submissions_created_at_id", "created_at", "id"),
        Index("ix_submissions_exercise_created", "exercise_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    exercise_id: Mapped[int] = mapped_column(ForeignKey("exercises.id", ondelete="CASCADE"))
    model_sha256: Mapped[str] = mapped_column(String(64))
    model_size: Mapped[int] = mapped_column(Integer)
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    # "torchscript" or "pt2" (a torch.export program), told by the archive's content.
    model_format: Mapped[str] = mapped_column(
        String(16), default="torchscript", server_default="torchscript"
    )
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the attempt in progress runs ("host:pid"): a dead local pid means a lost attempt.
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Last time a task naming this row reached the broker; NULL means never (sweeper sends it).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The pre-flight at upload (submissions/preflight.py): NULL when none was asked for.
    preflight_status: Mapped[str | None] = mapped_column(String(32), default=None)
    preflight_message: Mapped[str | None] = mapped_column(Text, default=None)
    preflight_batch_one_only: Mapped[bool | None] = mapped_column(Boolean, default=None)
    preflight_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    user: Mapped[User] = relationship()
    exercise: Mapped[Exercise] = relationship()
    result: Mapped[Result | None] = relationship(back_populates="submission", uselist=False)


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One result per submission: a redelivered task cannot write a second one.
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float, default=None)
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold: Mapped[float] = mapped_column(Float)
    n_images: Mapped[int | None] = mapped_column(Integer, default=None)
    # The kind's per-part breakdown (per-keypoint RMSE in pixels, per-class accuracy in %), in
    # the order of `Kind.breakdown.labels`; None for a part without test images.
    parts: Mapped[list[float | None] | None] = mapped_column(JSON, default=None)
    # Kind-specific figures (a confusion matrix, the mean MSE).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    model_sha256: Mapped[str] = mapped_column(String(64))
    testset_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    testset_version: Mapped[int | None] = mapped_column(Integer, default=None)
    evaluator_version: Mapped[str] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64), default=None)
    # Where the model ran: GPU and CPU scores can differ in the last digits.
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    # How the sandbox ran the model: {"variant", "batch_size", "threads"} (grading/plans.py).
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="result")


class ResultPreview(Base):
    """The web picture of a result: what the model predicted on the public sample images
    (`Kind.preview`; keypoints: [face][keypoint] -> [x, y] in pixels), computed in the sandbox
    by the worker. Its own table, read only by the submission page: ~0.8 KB of JSON per result
    kept out of the rows that the leaderboard and the listings scan."""

    __tablename__ = "result_previews"

    result_id: Mapped[int] = mapped_column(
        ForeignKey("results.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[list[Any]] = mapped_column(JSON)


class ExecutionPlan(Base):
    """The plan the tuner chose for one model file on one kind of worker, so that a rescore or
    a resubmission of the same file starts from it instead of tuning again, and another file
    of the same architecture tries it first."""

    __tablename__ = "execution_plans"
    __table_args__ = (
        UniqueConstraint("model_sha256", "device", "threads", "torch_version"),
        Index(
            "ix_execution_plans_architecture", "architecture", "device", "threads",
            "torch_version", "updated_at",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_sha256: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(32))
    # The worker's thread budget when it was chosen (the plan may use fewer).
    threads: Mapped[int] = mapped_column(Integer)
    torch_version: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # grader.grading.architecture's digest; None for files remembered before it existed.
    architecture: Mapped[str | None] = mapped_column(String(64), nullable=True)
