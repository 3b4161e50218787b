from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from grader.db import Base, UTCDateTime


class StandingRow(Base):
    """One student's standing in one exercise: what the leaderboard, the instructor dashboard
    and the grades export read, so that their cost follows the number of students and not the
    length of the history. Derived data: leaderboard.service.recompute_standings writes it, in
    the transaction of every change that can move it (a submission accepted, a result written,
    an attempt given up, a rescore). Only students with a counted submission have a row."""

    __tablename__ = "standings"

    exercise_id: Mapped[int] = mapped_column(
        ForeignKey("exercises.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Submissions that count (all but those that ended because we failed).
    attempts: Mapped[int] = mapped_column(Integer)
    # The student's latest submission to the exercise, whatever became of it.
    last_submitted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The best graded result: highest score, the earliest submission on ties. NULL: none yet.
    best_result_id: Mapped[int | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL"), default=None
    )
    best_score: Mapped[float | None] = mapped_column(Float, default=None)
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    best_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    best_late: Mapped[bool] = mapped_column(Boolean, default=False)
