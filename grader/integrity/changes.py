"""What a new test-set version changed: results replaced by a rescore are kept
(ResultHistory), and compared with the results that replaced them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.auth.models import User
from grader.exercises.models import Exercise
from grader.integrity.models import ResultHistory
from grader.submissions.models import Result, Submission


def keep_replaced_results(session: Session, *, submission_ids: list[int]) -> int:
    """Copy the results a rescore is about to delete; returns how many were kept."""
    results = list(session.scalars(select(Result).where(Result.submission_id.in_(submission_ids))))
    for r in results:
        session.add(
            ResultHistory(
                submission_id=r.submission_id, status=r.status, score=r.score, passed=r.passed,
                threshold=r.threshold, model_sha256=r.model_sha256,
                testset_sha256=r.testset_sha256, testset_version=r.testset_version,
                evaluator_version=r.evaluator_version, torch_version=r.torch_version,
                device=r.device, graded_at=r.created_at,
            )
        )
    session.flush()
    return len(results)


@dataclass(frozen=True)
class Graded:
    testset_version: int | None
    score: float | None
    passed: bool
    status: str


@dataclass(frozen=True)
class SubmissionChange:
    submission_id: int
    username: str
    before: Graded
    # None while the rescore has not finished.
    after: Graded | None
    score_change: float | None
    # "pass → fail", "fail → pass", or None when the verdict stayed.
    flipped: str | None


@dataclass(frozen=True)
class StudentChange:
    username: str
    best_before: float | None
    best_after: float | None
    score_change: float | None
    passed_before: bool
    passed_after: bool | None
    flipped: str | None


@dataclass(frozen=True)
class StaleResult:
    submission_id: int
    username: str
    testset_version: int | None
    score: float | None
    passed: bool


@dataclass(frozen=True)
class TestsetChanges:
    __test__ = False

    exercise: str
    testset_version: int
    submissions: list[SubmissionChange]
    students: list[StudentChange]
    # Results graded against an older version than the exercise's current one.
    stale: list[StaleResult]


def _flip(before: bool, after: bool | None) -> str | None:
    if after is None or before == after:
        return None
    return "fail → pass" if after else "pass → fail"


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def testset_changes(session: Session, *, exercise: Exercise) -> TestsetChanges:
    subs = session.execute(
        select(Submission.id, User.username)
        .join(User, User.id == Submission.user_id)
        .where(Submission.exercise_id == exercise.id)
    ).all()
    username = {sid: name for sid, name in subs}
    ids = list(username)
    current = {r.submission_id: r for r in session.scalars(
        select(Result).where(Result.submission_id.in_(ids)))}
    latest: dict[int, ResultHistory] = {}
    history = session.scalars(
        select(ResultHistory).where(ResultHistory.submission_id.in_(ids))
        .order_by(ResultHistory.replaced_at, ResultHistory.id)
    )
    for h in history:
        latest[h.submission_id] = h  # the last one replaced: what the rescore changed
    changed = []
    for sid, h in sorted(latest.items()):
        before = Graded(h.testset_version, h.score, h.passed, h.status)
        r = current.get(sid)
        after = None if r is None else Graded(r.testset_version, r.score, r.passed, r.status)
        changed.append(SubmissionChange(
            submission_id=sid, username=username[sid], before=before, after=after,
            score_change=_delta(before.score, after.score if after else None),
            flipped=_flip(before.passed, after.passed if after else None),
        ))
    per_student: dict[str, list[SubmissionChange]] = {}
    for c in changed:
        per_student.setdefault(c.username, []).append(c)
    students = []
    for name, items in sorted(per_student.items()):
        before_scores = [c.before.score for c in items if c.before.score is not None]
        after_scores = [c.after.score for c in items if c.after and c.after.score is not None]
        best_before = max(before_scores, default=None)
        best_after = max(after_scores, default=None)
        passed_before = any(c.before.passed for c in items)
        done = all(c.after is not None for c in items)
        passed_after = any(c.after.passed for c in items if c.after) if done else None
        students.append(StudentChange(
            username=name, best_before=best_before, best_after=best_after,
            score_change=_delta(best_before, best_after), passed_before=passed_before,
            passed_after=passed_after, flipped=_flip(passed_before, passed_after),
        ))
    stale = [
        StaleResult(sid, username[sid], r.testset_version, r.score, r.passed)
        for sid, r in sorted(current.items())
        if r.testset_version != exercise.testset_version
    ]
    return TestsetChanges(exercise.slug, exercise.testset_version, changed, students, stale)


def changes_csv(session: Session, *, exercise: Exercise) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["username", "submission_id", "version_before", "score_before",
                     "passed_before", "version_after", "score_after", "passed_after",
                     "score_change", "flipped"])
    report = testset_changes(session, exercise=exercise)
    for c in report.submissions:
        a = c.after
        writer.writerow([
            c.username, c.submission_id, c.before.testset_version, c.before.score,
            int(c.before.passed), a.testset_version if a else "", a.score if a else "",
            int(a.passed) if a else "", "" if c.score_change is None else c.score_change,
            c.flipped or "",
        ])
    for s in report.stale:
        if s.submission_id not in {c.submission_id for c in report.submissions}:
            writer.writerow([s.username, s.submission_id, s.testset_version, s.score,
                             int(s.passed), "", "", "", "", "still on the old version"])
    return out.getvalue()


@dataclass(frozen=True)
class Provenance:
    """What a score was computed from, for the instructor's submission page."""

    model_sha256: str
    testset_sha256: str | None
    testset_version: int | None
    evaluator_version: str
    torch_version: str | None
    device: str | None
    graded_at: datetime
    current_version: int

    @property
    def is_current(self) -> bool:
        return self.testset_version == self.current_version


def provenance(session: Session, *, submission: Submission) -> Provenance | None:
    r = submission.result
    if r is None:
        return None
    return Provenance(r.model_sha256, r.testset_sha256, r.testset_version, r.evaluator_version,
                      r.torch_version, r.device, r.created_at,
                      submission.exercise.testset_version)


def replaced_results(session: Session, *, submission: Submission) -> list[ResultHistory]:
    return list(session.scalars(
        select(ResultHistory).where(ResultHistory.submission_id == submission.id)
        .order_by(ResultHistory.replaced_at)
    ))
