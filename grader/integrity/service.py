"""Copy detection: record a graded submission's fingerprint, compare it with every other
student's on the same exercise and test-set version, flag the pairs; public baselines.

The rules:
- a pair is two submissions of *different* users on one exercise;
- it is flagged when the similarity of their predictions (fingerprint.py) is at least
  SIMILARITY_THRESHOLD on the same test-set version, or when the files are byte-identical;
- a submission marked as a public baseline is never in a pair, and two submissions that both
  resemble the same baseline (the starter model handed out, unchanged) are not flagged
  against each other: what they share is public.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, aliased

from grader.auth.models import User
from grader.config import Settings
from grader.db import DuplicateRow, is_row_id, unique_insert
from grader.errors import NotFound
from grader.exercises.models import Exercise
from grader.integrity import fingerprint as fp
from grader.integrity.models import Baseline, Fingerprint, SimilarPair
from grader.submissions.models import Result, Submission

log = logging.getLogger(__name__)

# Calibrated with benchmarks/bench_copies.py (docs/integrity.md): every copy but a fine-tuned
# one scored above 0.9999, the most alike of 546 independently trained pairs 0.83.
SIMILARITY_THRESHOLD = 0.95
# Rows of the all-pairs matrix computed at once in a rescan (memory: block × n × 8 bytes).
_BLOCK = 1024


# --- recording ---------------------------------------------------------------------------


def record_grading(
    session: Session,
    *,
    settings: Settings,
    submission_id: int,
    testset_path: Path,
    testset_sha256: str | None,
    testset_version: int,
    kind: str,
    threshold: float,
    predictions: np.ndarray | None,
) -> list[SimilarPair]:
    """What the trusted side keeps of a just-graded submission's predictions, inside the
    transaction that records its result, from predictions already made (no model run): its
    fingerprint, flagged against the others (returned: the new pairs), and its public and
    private scores when the exercise has a split. No predictions: only the file hash is
    compared."""
    sub = session.get(Submission, submission_id)
    if sub is None:
        return []
    session.execute(delete(Fingerprint).where(Fingerprint.submission_id == sub.id))
    _drop_pairs_of(session, [sub.id])
    if predictions is not None:
        try:
            with session.begin_nested():
                _keep_predictions(
                    session, settings=settings, sub=sub, testset_path=testset_path,
                    testset_sha256=testset_sha256, testset_version=testset_version, kind=kind,
                    threshold=threshold, predictions=predictions,
                )
        except Exception:
            # The grade stands without them; the file hash is still compared.
            log.exception("submission %s: no fingerprint or split scores", sub.id)
    session.flush()
    return _flag_one(session, sub)


def _keep_predictions(
    session: Session,
    *,
    settings: Settings,
    sub: Submission,
    testset_path: Path,
    testset_sha256: str | None,
    testset_version: int,
    kind: str,
    threshold: float,
    predictions: np.ndarray,
) -> None:
    from grader.grading.kinds import get_kind
    from grader.grading.testdata.testsets import load_test_set
    from grader.integrity import split

    spec = get_kind(kind)
    # The worker has just loaded it: this reads the cached arrays.
    labels = load_test_set(testset_path, kind=spec, cache_dir=settings.cache_dir).labels
    split.score_parts(
        session, submission=sub, testset_sha256=testset_sha256,
        testset_version=testset_version, kind=kind, predictions=predictions, labels=labels,
        threshold=threshold,
    )
    blob, norm = fp.sketch(predictions, labels)
    session.add(
        Fingerprint(
            submission_id=sub.id, exercise_id=sub.exercise_id, user_id=sub.user_id,
            testset_version=testset_version, sketch=blob, norm=norm,
        )
    )
    session.flush()


# --- comparing -----------------------------------------------------------------------------


@dataclass
class _Cohort:
    """The fingerprints of one exercise and version, stacked."""

    submission_ids: list[int]
    user_ids: np.ndarray
    units: np.ndarray
    norms: np.ndarray

    def __len__(self) -> int:
        return len(self.submission_ids)


def _cohort(session: Session, *, exercise_id: int, version: int) -> _Cohort:
    rows = session.execute(
        select(Fingerprint.submission_id, Fingerprint.user_id, Fingerprint.sketch,
               Fingerprint.norm)
        .where(Fingerprint.exercise_id == exercise_id, Fingerprint.testset_version == version)
        .order_by(Fingerprint.submission_id)
    ).all()
    return _Cohort(
        submission_ids=[r[0] for r in rows],
        user_ids=np.array([r[1] for r in rows], dtype=np.int64),
        units=fp.unpack([r[2] for r in rows]),
        norms=np.array([r[3] for r in rows], dtype=np.float64),
    )


def _baseline_ids(session: Session, *, exercise_id: int) -> set[int]:
    return set(
        session.scalars(
            select(Baseline.submission_id)
            .join(Submission, Submission.id == Baseline.submission_id)
            .where(Submission.exercise_id == exercise_id)
        )
    )


def _sha_by_id(session: Session, ids: Iterable[int]) -> dict[int, tuple[str, int, datetime]]:
    ids = list(ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Submission.id, Submission.model_sha256, Submission.user_id, Submission.created_at)
        .where(Submission.id.in_(ids))
    ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _explained(
    cohort: _Cohort, baselines: set[int], shas: dict[int, str]
) -> list[set[int]]:
    """For each baseline on this version (and each baseline file): the submissions that
    resemble it. Two submissions in one set share only what was public."""
    groups: list[set[int]] = []
    index = {sid: i for i, sid in enumerate(cohort.submission_ids)}
    for b in baselines:
        group = {sid for sid, sha in shas.items() if sha == shas.get(b)}
        if b in index and len(cohort):
            i = index[b]
            sims = fp.similarities(cohort.units[i], cohort.norms[i], cohort.units, cohort.norms)
            group |= {cohort.submission_ids[j] for j in np.nonzero(sims >= SIMILARITY_THRESHOLD)[0]}
        groups.append(group)
    return groups


def _flag_one(session: Session, sub: Submission) -> list[SimilarPair]:
    """Compare one submission with every other student's on its exercise."""
    baselines = _baseline_ids(session, exercise_id=sub.exercise_id)
    if sub.id in baselines:
        return []
    found: dict[int, float | None] = {}
    identical: set[int] = set()
    mine = session.scalar(select(Fingerprint).where(Fingerprint.submission_id == sub.id))
    cohort = None
    if mine is not None:
        cohort = _cohort(session, exercise_id=sub.exercise_id, version=mine.testset_version)
        if len(cohort):
            unit = fp.unpack([mine.sketch])[0]
            sims = fp.similarities(unit, mine.norm, cohort.units, cohort.norms)
            hits = np.nonzero((sims >= SIMILARITY_THRESHOLD) & (cohort.user_ids != sub.user_id))[0]
            found = {cohort.submission_ids[j]: float(sims[j]) for j in hits}
    same_file = session.scalars(
        select(Submission.id).where(
            Submission.exercise_id == sub.exercise_id,
            Submission.model_sha256 == sub.model_sha256,
            Submission.user_id != sub.user_id,
        )
    )
    for other in same_file:
        identical.add(other)
        found.setdefault(other, None)
    found = {k: v for k, v in found.items() if k not in baselines}
    if not found:
        return []
    if baselines:
        info = _sha_by_id(session, [*baselines, *found, sub.id])
        shas = {k: v[0] for k, v in info.items()}
        if cohort is None:
            cohort = _Cohort([], np.zeros(0, np.int64), fp.unpack([]), np.zeros(0))
        for group in _explained(cohort, baselines, shas):
            if sub.id in group:
                found = {k: v for k, v in found.items() if k not in group}
    return _add_pairs(
        session, exercise_id=sub.exercise_id, new=sub.id, others=found, identical=identical,
        version=mine.testset_version if mine is not None else None,
    )


def _add_pairs(
    session: Session,
    *,
    exercise_id: int,
    new: int,
    others: dict[int, float | None],
    identical: set[int],
    version: int | None,
) -> list[SimilarPair]:
    info = _sha_by_id(session, [new, *others])
    pairs = []
    for other, similarity in sorted(others.items()):
        first, second = sorted((new, other), key=lambda s: (info[s][2], s))
        pair = SimilarPair(
            exercise_id=exercise_id, first_submission_id=first, second_submission_id=second,
            similarity=1.0 if similarity is None and other in identical else similarity,
            identical_file=other in identical,
            testset_version=version if similarity is not None else None,
        )
        try:
            # Two workers finishing the two sides at once both find the pair: one keeps it.
            with unique_insert(session):
                session.add(pair)
        except DuplicateRow:
            continue
        pairs.append(pair)
    return pairs


def _drop_pairs_of(session: Session, submission_ids: list[int]) -> None:
    session.execute(
        delete(SimilarPair).where(
            or_(SimilarPair.first_submission_id.in_(submission_ids),
                SimilarPair.second_submission_id.in_(submission_ids))
        )
    )


def rescan(session: Session, *, exercise: Exercise) -> int:
    """Recompute every pair of an exercise from the stored fingerprints (after a baseline is
    marked or unmarked): all pairs at once, in blocks of rows. Returns the number flagged."""
    session.execute(delete(SimilarPair).where(SimilarPair.exercise_id == exercise.id))
    baselines = _baseline_ids(session, exercise_id=exercise.id)
    rows = session.execute(
        select(Submission.id, Submission.model_sha256, Submission.user_id, Submission.created_at)
        .where(Submission.exercise_id == exercise.id)
    ).all()
    info = {r[0]: (r[1], r[2], r[3]) for r in rows}
    shas = {k: v[0] for k, v in info.items()}
    found: dict[tuple[int, int], tuple[float | None, bool, int | None]] = {}
    versions = set(
        session.scalars(
            select(Fingerprint.testset_version).where(Fingerprint.exercise_id == exercise.id)
        )
    )
    explained: list[set[int]] = []
    for version in sorted(versions):
        cohort = _cohort(session, exercise_id=exercise.id, version=version)
        explained += _explained(cohort, baselines, shas)
        for start in range(0, len(cohort), _BLOCK):
            block = slice(start, start + _BLOCK)
            cosine = (cohort.units[block] @ cohort.units.T).astype(np.float64)
            a, b = cohort.norms[block][:, None], cohort.norms[None, :]
            denominator = a * a + b * b
            scale = np.divide(2 * a * b, denominator, out=np.ones_like(denominator),
                              where=denominator > 0)
            sims = cosine * scale
            other_user = cohort.user_ids[block][:, None] != cohort.user_ids[None, :]
            for i, j in zip(*np.nonzero((sims >= SIMILARITY_THRESHOLD) & other_user),
                            strict=True):
                x, y = cohort.submission_ids[start + i], cohort.submission_ids[j]
                if x < y:
                    found[(x, y)] = (float(min(sims[i, j], 1.0)), False, version)
    by_sha: dict[str, list[int]] = {}
    for sid, sha in shas.items():
        by_sha.setdefault(sha, []).append(sid)
    for group in by_sha.values():
        for x in group:
            for y in group:
                if x < y and info[x][1] != info[y][1]:
                    similarity, _, seen_on = found.get((x, y), (1.0, True, None))
                    found[(x, y)] = (similarity, True, seen_on)
    count = 0
    for (x, y), (similarity, identical_file, seen_on) in sorted(found.items()):
        if x in baselines or y in baselines:
            continue
        if any(x in g and y in g for g in explained):
            continue
        first, second = sorted((x, y), key=lambda s: (info[s][2], s))
        session.add(
            SimilarPair(
                exercise_id=exercise.id, first_submission_id=first,
                second_submission_id=second, similarity=similarity,
                identical_file=identical_file, testset_version=seen_on,
            )
        )
        count += 1
    session.flush()
    return count


# --- baselines -----------------------------------------------------------------------------


def _submission(session: Session, submission_id: int) -> Submission:
    sub = session.get(Submission, submission_id) if is_row_id(submission_id) else None
    if sub is None:
        raise NotFound(f"No submission {submission_id}.")
    return sub


def mark_baseline(
    session: Session,
    *,
    submission_id: int,
    by: User | None,
    baseline: bool = True,
    exercise: Exercise | None = None,
) -> Submission:
    """Mark (or unmark) a submission (of `exercise`, when given) as a public baseline; the
    exercise's pairs are recomputed so that the change shows at once."""
    sub = _submission(session, submission_id)
    if exercise is not None and sub.exercise_id != exercise.id:
        raise NotFound(f"No submission {submission_id} in {exercise.slug!r}.")
    existing = session.scalar(select(Baseline).where(Baseline.submission_id == sub.id))
    if baseline and existing is None:
        session.add(Baseline(submission_id=sub.id, marked_by_id=by.id if by else None))
    elif not baseline and existing is not None:
        session.delete(existing)
    session.flush()
    rescan(session, exercise=sub.exercise)
    return sub


def baselines(session: Session, *, exercise: Exercise) -> list[Submission]:
    return list(
        session.scalars(
            select(Submission)
            .join(Baseline, Baseline.submission_id == Submission.id)
            .where(Submission.exercise_id == exercise.id)
            .order_by(Submission.id)
        )
    )


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    submission_id: int
    username: str
    display_name: str | None
    submitted_at: datetime
    score: float | None
    passed: bool | None


@dataclass(frozen=True)
class Pair:
    similarity: float | None
    identical_file: bool
    testset_version: int | None
    first: Side
    second: Side


def similar_pairs(session: Session, *, exercise: Exercise) -> list[Pair]:
    """The flagged pairs of an exercise, most alike first. For instructors only."""
    first_sub, second_sub = aliased(Submission), aliased(Submission)
    first_user, second_user = aliased(User), aliased(User)
    first_result, second_result = aliased(Result), aliased(Result)
    rows = session.execute(
        select(SimilarPair, first_sub, first_user, first_result, second_sub, second_user,
               second_result)
        .join(first_sub, first_sub.id == SimilarPair.first_submission_id)
        .join(first_user, first_user.id == first_sub.user_id)
        .outerjoin(first_result, first_result.submission_id == first_sub.id)
        .join(second_sub, second_sub.id == SimilarPair.second_submission_id)
        .join(second_user, second_user.id == second_sub.user_id)
        .outerjoin(second_result, second_result.submission_id == second_sub.id)
        .where(SimilarPair.exercise_id == exercise.id)
    ).all()

    def side(sub: Submission, user: User, result: Result | None) -> Side:
        return Side(
            submission_id=sub.id, username=user.username, display_name=user.display_name,
            submitted_at=sub.created_at, score=result.score if result else None,
            passed=result.passed if result else None,
        )

    pairs = [
        Pair(similarity=p.similarity, identical_file=p.identical_file,
             testset_version=p.testset_version, first=side(fs, fu, fr),
             second=side(ss, su, sr))
        for p, fs, fu, fr, ss, su, sr in rows
    ]
    pairs.sort(key=lambda p: (-(p.similarity if p.similarity is not None else 1.0),
                              p.first.submission_id, p.second.submission_id))
    return pairs


def similar_csv(session: Session, *, exercise: Exercise) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([
        "similarity", "identical_file", "testset_version",
        "first_username", "first_submission_id", "first_submitted_at", "first_score",
        "second_username", "second_submission_id", "second_submitted_at", "second_score",
    ])
    for p in similar_pairs(session, exercise=exercise):
        writer.writerow([
            "" if p.similarity is None else f"{p.similarity:.6f}", int(p.identical_file),
            "" if p.testset_version is None else p.testset_version,
            p.first.username, p.first.submission_id, p.first.submitted_at.isoformat(),
            "" if p.first.score is None else p.first.score,
            p.second.username, p.second.submission_id, p.second.submitted_at.isoformat(),
            "" if p.second.score is None else p.second.score,
        ])
    return out.getvalue()
