"""A public/private split of an exercise's hidden test set (Kaggle's model).

- A fraction of the test images is private, chosen deterministically from the test set's own
  sha256, so every submission on one version is split the same way.
- One grading run scores both parts: the kind scores the predictions it already has on each
  index subset (`score_parts`), no second model run.
- Before the deadline a student sees the public score only (the full score mixes in the
  private images, so it is hidden too); instructors see everything. After the deadline, or
  once the instructor reveals it, the private score appears (`private_visible`).
- The pass rule says which score decides the grade: full (the default: the course's single
  score, unchanged), public or private (`decisive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Integer, cast, delete, func, select
from sqlalchemy.orm import Session

from grader.auth.models import User
from grader.db import utcnow
from grader.errors import Invalid
from grader.exercises.models import Exercise
from grader.integrity.models import ResultParts, Split
from grader.submissions.models import Result, Submission

if TYPE_CHECKING:
    from grader.submissions.schemas import SubmissionOut
    from grader.submissions.service import Viewer


class PassRule(StrEnum):
    FULL = "full"
    PUBLIC = "public"
    PRIVATE = "private"


def private_mask(n_images: int, *, testset_sha256: str | None, fraction: float) -> np.ndarray:
    """True for the private images. Depends only on the file, its size and the fraction."""
    seed = int((testset_sha256 or "0")[:16], 16)
    order = np.random.default_rng([seed, n_images]).permutation(n_images)
    mask = np.zeros(n_images, dtype=bool)
    mask[order[: int(round(fraction * n_images))]] = True
    return mask


def get_split(session: Session, *, exercise: Exercise) -> Split | None:
    return session.scalar(select(Split).where(Split.exercise_id == exercise.id))


def set_split(
    session: Session, *, exercise: Exercise, private_fraction: float, pass_rule: str
) -> Split:
    """Configure the split. Takes effect for results graded from now on (rescore to apply it
    to earlier ones)."""
    if not 0.0 <= private_fraction < 1.0 or private_fraction != private_fraction:
        raise Invalid("The private fraction must be at least 0 and below 1.")
    if pass_rule not in {r.value for r in PassRule}:
        raise Invalid("The pass rule is one of: full, public, private.")
    if pass_rule != PassRule.FULL and private_fraction == 0.0:
        raise Invalid("A public or private pass rule needs a private fraction above 0.")
    split = get_split(session, exercise=exercise)
    if split is None:
        split = Split(exercise_id=exercise.id)
        session.add(split)
    split.private_fraction = float(private_fraction)
    split.pass_rule = pass_rule
    split.updated_at = utcnow()
    session.flush()
    return split


def reveal(session: Session, *, exercise: Exercise, revealed: bool = True) -> Split:
    split = get_split(session, exercise=exercise)
    if split is None or split.private_fraction == 0.0:
        raise Invalid(f"{exercise.slug!r} has no private part to reveal.")
    split.revealed_at = utcnow() if revealed else None
    session.flush()
    return split


def private_visible(
    exercise: Exercise, split: Split | None, *, viewer: Viewer, now: datetime | None = None
) -> bool:
    """Whether `viewer` may see private (and full) scores of this exercise."""
    if split is None or split.private_fraction == 0.0 or viewer.is_instructor:
        return True
    if split.revealed_at is not None:
        return True
    now = now or utcnow()
    return exercise.deadline is not None and now >= exercise.deadline


def score_parts(
    session: Session,
    *,
    submission: Submission,
    testset_sha256: str | None,
    testset_version: int,
    kind: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    threshold: float,
) -> ResultParts | None:
    """Score the public and private parts of predictions already made; None without a split."""
    from grader.grading.kinds import get_kind

    session.execute(delete(ResultParts).where(ResultParts.submission_id == submission.id))
    split = get_split(session, exercise=submission.exercise)
    if split is None or split.private_fraction == 0.0:
        return None
    mask = private_mask(len(labels), testset_sha256=testset_sha256,
                        fraction=split.private_fraction)
    spec = get_kind(kind)

    def part(chosen: np.ndarray) -> tuple[float | None, bool | None, int]:
        if not chosen.any():
            return None, None, 0
        report = spec.score(predictions[chosen], labels[chosen], threshold=threshold)
        return report.score, report.passed, int(chosen.sum())

    public_score, public_passed, public_n = part(~mask)
    private_score, private_passed, private_n = part(mask)
    parts = ResultParts(
        submission_id=submission.id, testset_version=testset_version,
        private_fraction=split.private_fraction, public_score=public_score,
        public_passed=public_passed, public_n=public_n, private_score=private_score,
        private_passed=private_passed, private_n=private_n,
    )
    session.add(parts)
    session.flush()
    return parts


def decisive(split: Split | None, parts: ResultParts | None, result: Result) -> bool:
    """Pass or fail under the exercise's pass rule."""
    if split is None or parts is None or split.pass_rule == PassRule.FULL:
        return bool(result.passed)
    if split.pass_rule == PassRule.PUBLIC:
        return bool(parts.public_passed)
    return bool(parts.private_passed)


@dataclass(frozen=True)
class ScoreView:
    """What one viewer may see of one result."""

    score: float | None  # the full score, or the public one while the private part is hidden
    passed: bool | None  # None: decided by the hidden private part, shown at the reveal
    public_score: float | None
    private_score: float | None
    private_hidden: bool


def score_view(
    session: Session, *, submission: Submission, viewer: Viewer
) -> ScoreView | None:
    result = submission.result
    if result is None:
        return None
    split = get_split(session, exercise=submission.exercise)
    parts = session.scalar(select(ResultParts).where(ResultParts.submission_id == submission.id))
    if split is None or parts is None:
        return ScoreView(result.score, result.passed, None, None, False)
    if private_visible(submission.exercise, split, viewer=viewer):
        return ScoreView(result.score, decisive(split, parts, result), parts.public_score,
                         parts.private_score, False)
    passed = None if split.pass_rule != PassRule.PUBLIC else bool(parts.public_passed)
    return ScoreView(parts.public_score, passed, parts.public_score, None, True)


def parts_by_submission(session: Session, *, exercise: Exercise) -> dict[int, ResultParts]:
    """For the grade export (instructors): every result's parts."""
    rows = session.scalars(
        select(ResultParts)
        .join(Submission, Submission.id == ResultParts.submission_id)
        .where(Submission.exercise_id == exercise.id)
    )
    return {p.submission_id: p for p in rows}


@dataclass(frozen=True)
class PartsRow:
    submission_id: int
    username: str
    score: float | None
    public_score: float | None
    public_n: int
    private_score: float | None
    private_n: int
    passed: bool


def instructor_rows(session: Session, *, exercise: Exercise) -> list[PartsRow]:
    """Every graded submission's full, public and private scores and its decisive verdict."""
    split = get_split(session, exercise=exercise)
    parts = parts_by_submission(session, exercise=exercise)
    rows = session.execute(
        select(Submission.id, User.username, Result)
        .join(User, User.id == Submission.user_id)
        .join(Result, Result.submission_id == Submission.id)
        .where(Submission.exercise_id == exercise.id)
        .order_by(Submission.id)
    ).all()
    out = []
    for sid, username, result in rows:
        p = parts.get(sid)
        out.append(PartsRow(
            submission_id=sid, username=username, score=result.score,
            public_score=p.public_score if p else None, public_n=p.public_n if p else 0,
            private_score=p.private_score if p else None, private_n=p.private_n if p else 0,
            passed=decisive(split, p, result),
        ))
    return out


def parts_csv(session: Session, *, exercise: Exercise) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["username", "submission_id", "score", "public_score", "public_n",
                     "private_score", "private_n", "passed"])
    for r in instructor_rows(session, exercise=exercise):
        writer.writerow([r.username, r.submission_id, r.score,
                         "" if r.public_score is None else r.public_score, r.public_n,
                         "" if r.private_score is None else r.private_score, r.private_n,
                         int(r.passed)])
    return out.getvalue()


def hide_private(
    session: Session, out: SubmissionOut, *, submission: Submission, viewer: Viewer
) -> SubmissionOut:
    """A submission's JSON as `viewer` may see it: while the private part is hidden, the
    public score stands in for the full one, and what was computed on the whole set (the
    per-part breakdown and the kind's details, the verdict unless the public part decides it)
    is left out."""
    if viewer.is_instructor:
        return out
    view = score_view(session, submission=submission, viewer=viewer)
    if view is None or not view.private_hidden:
        return out
    changes = {"score": view.score, "passed": view.passed}
    out = out.model_copy(update=changes)
    if out.result is not None:
        out.result = out.result.model_copy(
            update={**changes, "passed": bool(view.passed), "per_keypoint_rmse_px": None,
                    "breakdown": None, "details": None, "n_images": None}
        )
    return out


def public_bests(
    session: Session, *, exercise: Exercise, viewer: Viewer, user_id: int | None = None
) -> dict[int, tuple[float | None, bool | None]] | None:
    """While the private part is hidden from `viewer`: each student's best *public* score
    (and, when the public part decides, whether it passes) on the current test set, the
    figures a leaderboard or "your best" may show instead of full scores. None when the viewer
    may see full scores (no split, an instructor, after the deadline or the reveal)."""
    split = get_split(session, exercise=exercise)
    if private_visible(exercise, split, viewer=viewer):
        return None
    assert split is not None
    query = (
        select(Submission.user_id, func.max(ResultParts.public_score),
               func.max(cast(ResultParts.public_passed, Integer)))
        .join(ResultParts, ResultParts.submission_id == Submission.id)
        .where(Submission.exercise_id == exercise.id,
               ResultParts.testset_version == exercise.testset_version)
        .group_by(Submission.user_id)
    )
    if user_id is not None:
        query = query.where(Submission.user_id == user_id)
    public_rule = split.pass_rule == PassRule.PUBLIC
    return {
        uid: (score, bool(passed) if public_rule else None)
        for uid, score, passed in session.execute(query)
    }


def best_parts(
    session: Session, *, exercise: Exercise, result_ids: list[int]
) -> dict[int, tuple[float | None, float | None, bool]] | None:
    """For the grade export: each of these results' public and private scores and its verdict
    under the pass rule. None when the exercise has no private part."""
    split = get_split(session, exercise=exercise)
    if split is None or split.private_fraction == 0.0:
        return None
    rows = session.execute(
        select(Result, ResultParts)
        .join(ResultParts, ResultParts.submission_id == Result.submission_id)
        .where(Result.id.in_(result_ids))
    )
    return {
        result.id: (parts.public_score, parts.private_score, decisive(split, parts, result))
        for result, parts in rows
    }
