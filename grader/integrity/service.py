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

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, aliased

from grader.auth.models import User
from grader.db import dialect_insert, is_row_id, utcnow
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
# PostgreSQL advisory locks (class, exercise id) that serialise recording within an exercise.
_FLAG_LOCK_CLASS = 0x6772


# --- recording ---------------------------------------------------------------------------
#
# A grading is recorded in two steps, so that the result's write transaction stays short (on
# SQLite it holds the one write lock every upload also needs): `prepare_grading` does the
# arithmetic and the comparison with the fingerprints already stored, in a read-only session
# before that transaction; `record_grading`, inside it, stores the fingerprint and compares
# it only with the fingerprints stored in between.


@dataclass
class Draft:
    """What integrity keeps of one grading, worked out before its result is written."""

    submission_id: int
    exercise_id: int
    user_id: int
    model_sha256: str
    testset_sha256: str | None
    testset_version: int
    kind: str
    threshold: float
    predictions: np.ndarray | None
    labels: np.ndarray | None
    # The stored form of the fingerprint (None without predictions) and its float32 unit.
    sketch: bytes | None = None
    norm: float = 0.0
    unit: np.ndarray | None = None
    # Fingerprints already compared with (submission ids), and those found alike.
    compared: set[int] | None = None
    similar: dict[int, float] | None = None
    same_file: set[int] | None = None


def prepare_grading(
    session: Session,
    *,
    submission_id: int,
    testset_sha256: str | None,
    testset_version: int,
    kind: str,
    threshold: float,
    predictions: np.ndarray | None,
    labels: np.ndarray | None,
) -> Draft | None:
    """Before the result's transaction, in any session: the fingerprint of predictions already
    made (no model run) and its comparison with every other student's stored ones. None: no
    such submission."""
    sub = session.get(Submission, submission_id)
    if sub is None:
        return None
    draft = Draft(
        submission_id=sub.id, exercise_id=sub.exercise_id, user_id=sub.user_id,
        model_sha256=sub.model_sha256, testset_sha256=testset_sha256,
        testset_version=testset_version, kind=kind, threshold=threshold,
        predictions=predictions, labels=labels,
    )
    if predictions is not None and labels is not None:
        try:
            draft.sketch, draft.norm = fp.sketch(predictions, labels)
            draft.unit = fp.unpack([draft.sketch])[0]
        except Exception:
            # The grade stands without it; the file hash is still compared.
            log.exception("submission %s: no fingerprint", sub.id)
    if draft.unit is not None:
        cohort = _cohort(session, exercise_id=sub.exercise_id, version=testset_version)
        draft.compared = set(cohort.submission_ids)
        draft.similar = _alike(draft, cohort)
    draft.same_file = _same_file(session, draft)
    return draft


def record_grading(session: Session, draft: Draft) -> None:
    """Inside the transaction that records the result: keep the prepared fingerprint, flag the
    pairs, and score the public and private parts when the exercise has a split."""
    if session.get_bind().dialect.name == "postgresql":
        # Two results of one exercise written at once would each miss the other's uncommitted
        # fingerprint: they take turns from here to their commit (SQLite's writers always do).
        # First, before any integrity row is touched, so a turn never waits on another's rows.
        session.execute(select(func.pg_advisory_xact_lock(_FLAG_LOCK_CLASS, draft.exercise_id)))
    session.execute(delete(Fingerprint).where(Fingerprint.submission_id == draft.submission_id))
    _drop_pairs_of(session, [draft.submission_id])
    if draft.predictions is not None and draft.labels is not None:
        from grader.integrity import split

        sub = session.get(Submission, draft.submission_id)
        assert sub is not None  # prepared from it; the caller's transaction still holds it
        try:
            with session.begin_nested():
                split.score_parts(
                    session, submission=sub, testset_sha256=draft.testset_sha256,
                    testset_version=draft.testset_version, kind=draft.kind,
                    predictions=draft.predictions, labels=draft.labels,
                    threshold=draft.threshold,
                )
        except Exception:
            log.exception("submission %s: no split scores", draft.submission_id)
    if draft.sketch is not None:
        session.add(
            Fingerprint(
                submission_id=draft.submission_id, exercise_id=draft.exercise_id,
                user_id=draft.user_id, testset_version=draft.testset_version,
                sketch=draft.sketch, norm=draft.norm,
            )
        )
    session.flush()
    _flag(session, draft)


def _alike(draft: Draft, cohort: _Cohort) -> dict[int, float]:
    if not len(cohort) or draft.unit is None:
        return {}
    sims = fp.similarities(draft.unit, draft.norm, cohort.units, cohort.norms)
    hits = np.nonzero((sims >= SIMILARITY_THRESHOLD) & (cohort.user_ids != draft.user_id))[0]
    return {cohort.submission_ids[j]: float(sims[j]) for j in hits}


def _same_file(session: Session, draft: Draft) -> set[int]:
    # A submission of the same file made after this query is graded after it, and finds ours.
    return set(
        session.scalars(
            select(Submission.id).where(
                Submission.exercise_id == draft.exercise_id,
                Submission.model_sha256 == draft.model_sha256,
                Submission.user_id != draft.user_id,
            )
        )
    )


def _flag(session: Session, draft: Draft) -> None:
    """Flag the prepared submission against every other student's on its exercise."""
    baselines = _baseline_ids(session, exercise_id=draft.exercise_id)
    if draft.submission_id in baselines:
        return
    found: dict[int, float | None] = dict(draft.similar or {})
    if draft.unit is not None:
        # Fingerprints stored since the preparation's comparison.
        later = set(
            session.scalars(
                select(Fingerprint.submission_id).where(
                    Fingerprint.exercise_id == draft.exercise_id,
                    Fingerprint.testset_version == draft.testset_version,
                    Fingerprint.submission_id != draft.submission_id,
                )
            )
        ) - (draft.compared or set())
        if later:
            found.update(_alike(draft, _cohort(session, exercise_id=draft.exercise_id,
                                               version=draft.testset_version, only=later)))
    identical = set(draft.same_file or ())
    for other in identical:
        found.setdefault(other, None)
    found = {k: v for k, v in found.items() if k not in baselines}
    if found and baselines:
        explained = _explained(session, draft, baselines, set(found))
        found = {k: v for k, v in found.items() if k not in explained}
    if found:
        _add_pairs(
            session, exercise_id=draft.exercise_id, new=draft.submission_id, others=found,
            identical=identical,
            version=draft.testset_version if draft.unit is not None else None,
        )


def _cohort(
    session: Session, *, exercise_id: int, version: int, only: Iterable[int] | None = None
) -> _Cohort:
    """The fingerprints of one exercise and version (of the submissions `only`, when given)."""
    query = (
        select(Fingerprint.submission_id, Fingerprint.user_id, Fingerprint.sketch,
               Fingerprint.norm)
        .where(Fingerprint.exercise_id == exercise_id, Fingerprint.testset_version == version)
        .order_by(Fingerprint.submission_id)
    )
    if only is not None:
        query = query.where(Fingerprint.submission_id.in_(list(only)))
    rows = session.execute(query).all()
    return _Cohort(
        submission_ids=[r[0] for r in rows],
        user_ids=np.array([r[1] for r in rows], dtype=np.int64),
        units=fp.unpack([r[2] for r in rows]),
        norms=np.array([r[3] for r in rows], dtype=np.float64),
    )


@dataclass
class _Cohort:
    """The fingerprints of one exercise and version, stacked."""

    submission_ids: list[int]
    user_ids: np.ndarray
    units: np.ndarray
    norms: np.ndarray

    def __len__(self) -> int:
        return len(self.submission_ids)


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


def _groups(
    cohort: _Cohort, baselines: set[int], shas: dict[int, str]
) -> list[set[int]]:
    """For each baseline (and each baseline file): the submissions among `cohort` and `shas`
    that resemble it. Two submissions in one group share only what was public."""
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


def _explained(session: Session, draft: Draft, baselines: set[int], found: set[int]) -> set[int]:
    """The submissions among `found` that resemble a baseline the new one resembles too."""
    ids = baselines | found | {draft.submission_id}
    shas = {k: v[0] for k, v in _sha_by_id(session, ids).items()}
    cohort = _cohort(session, exercise_id=draft.exercise_id, version=draft.testset_version,
                     only=ids)
    explained: set[int] = set()
    for group in _groups(cohort, baselines, shas):
        if draft.submission_id in group:
            explained |= group & found
    return explained


def _add_pairs(
    session: Session,
    *,
    exercise_id: int,
    new: int,
    others: dict[int, float | None],
    identical: set[int],
    version: int | None,
) -> None:
    info = _sha_by_id(session, [new, *others])
    rows = []
    for other, similarity in sorted(others.items()):
        first, second = sorted((new, other), key=lambda s: (info[s][2], s))
        rows.append({
            "exercise_id": exercise_id, "first_submission_id": first,
            "second_submission_id": second,
            "similarity": 1.0 if similarity is None and other in identical else similarity,
            "identical_file": other in identical,
            "testset_version": version if similarity is not None else None,
            "created_at": utcnow(),
        })
    # Two workers finishing the two sides at once both find the pair: one keeps it.
    insert = dialect_insert(session)
    session.connection().execute(
        insert(SimilarPair).on_conflict_do_nothing(
            index_elements=["first_submission_id", "second_submission_id"]
        ),
        rows,
    )


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
        explained += _groups(cohort, baselines, shas)
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
