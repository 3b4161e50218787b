from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from grader.db import Base, UTCDateTime, utcnow


class Fingerprint(Base):
    """What one graded submission predicted, compressed: a sketch of its errors on a fixed
    subset of the hidden test set (service.py says how), one per submission and version."""

    __tablename__ = "integrity_fingerprints"
    __table_args__ = (Index("ix_integrity_fingerprints_exercise_version",
                            "exercise_id", "testset_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    exercise_id: Mapped[int] = mapped_column(ForeignKey("exercises.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    testset_version: Mapped[int] = mapped_column(Integer)
    # float16 unit vector (service.SKETCH_DIM values) and its length before normalising.
    sketch: Mapped[bytes] = mapped_column(LargeBinary)
    norm: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SimilarPair(Base):
    """Two students' submissions that predict far more alike than independent work does, or
    are the same file. `first` was submitted before `second`."""

    __tablename__ = "integrity_pairs"
    __table_args__ = (
        UniqueConstraint("first_submission_id", "second_submission_id"),
        Index("ix_integrity_pairs_exercise", "exercise_id"),
        # A regrading drops the pairs its submission is in, on either side.
        Index("ix_integrity_pairs_second", "second_submission_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    exercise_id: Mapped[int] = mapped_column(ForeignKey("exercises.id", ondelete="CASCADE"))
    first_submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE")
    )
    second_submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE")
    )
    # 1.0 for identical predictions; None when only the file hashes were compared.
    similarity: Mapped[float | None] = mapped_column(Float, default=None)
    identical_file: Mapped[bool] = mapped_column(Boolean, default=False)
    testset_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Baseline(Base):
    """A submission an instructor marked as public (a starter model handed out to the class):
    it, and whatever resembles it, is never flagged."""

    __tablename__ = "integrity_baselines"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    marked_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ResultHistory(Base):
    """A result replaced by a rescore, kept so that what a new test set changed can be shown
    and nothing is overwritten silently."""

    __tablename__ = "result_history"
    __table_args__ = (Index("ix_result_history_submission", "submission_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float, default=None)
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold: Mapped[float] = mapped_column(Float)
    model_sha256: Mapped[str] = mapped_column(String(64))
    testset_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    testset_version: Mapped[int | None] = mapped_column(Integer, default=None)
    evaluator_version: Mapped[str] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64), default=None)
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    graded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Split(Base):
    """An exercise's public/private split of its hidden test set (Kaggle's model): which
    fraction is private, which part decides the grade, and whether the private part has been
    revealed before the deadline. No row: no split, the single full score as always."""

    __tablename__ = "integrity_splits"

    id: Mapped[int] = mapped_column(primary_key=True)
    exercise_id: Mapped[int] = mapped_column(
        ForeignKey("exercises.id", ondelete="CASCADE"), unique=True
    )
    private_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    # "full", "public" or "private": which score the pass rule reads.
    pass_rule: Mapped[str] = mapped_column(String(16), default="full")
    revealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ResultParts(Base):
    """The public and private scores of one graded submission, from the same predictions as
    its full score (no second model run)."""

    __tablename__ = "integrity_result_parts"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    testset_version: Mapped[int] = mapped_column(Integer)
    private_fraction: Mapped[float] = mapped_column(Float)
    public_score: Mapped[float | None] = mapped_column(Float, default=None)
    public_passed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    public_n: Mapped[int] = mapped_column(Integer)
    private_score: Mapped[float | None] = mapped_column(Float, default=None)
    private_passed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    private_n: Mapped[int] = mapped_column(Integer)
