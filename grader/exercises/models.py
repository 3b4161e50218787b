from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from grader.db import Base, UTCDateTime, utcnow


class LatePolicy(StrEnum):
    # Rejected with 403 after the deadline.
    REJECT = "reject"
    # Accepted and graded, flagged late (the grades export says so).
    ACCEPT_LATE = "accept_late"
    # Accepted after the deadline only if the student has never submitted (409 otherwise).
    FIRST_ONLY = "first_only"


class LeaderboardVisibility(StrEnum):
    # Students see their own row and anonymised others.
    ANONYMOUS = "anonymous"
    # Students see names.
    PUBLIC = "public"
    # Only instructors see the leaderboard.
    HIDDEN = "hidden"


class Exercise(Base):
    __tablename__ = "exercises"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    threshold: Mapped[float] = mapped_column(Float, default=100.0)
    # What the exercise asks for and how it is scored: a name in grader.grading.kinds.
    kind: Mapped[str] = mapped_column(String(32), default="keypoints")
    testset_path: Mapped[str | None] = mapped_column(String(500), default=None)
    testset_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    testset_version: Mapped[int] = mapped_column(Integer, default=0)
    testset_n_images: Mapped[int | None] = mapped_column(Integer, default=None)
    max_model_bytes: Mapped[int] = mapped_column(Integer, default=20 * 1024 * 1024)
    time_limit_s: Mapped[float | None] = mapped_column(Float, default=None)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    daily_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    late_policy: Mapped[str] = mapped_column(String(16), default=LatePolicy.REJECT.value)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    leaderboard_visibility: Mapped[str] = mapped_column(
        String(16), default=LeaderboardVisibility.ANONYMOUS.value
    )
    is_published: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
