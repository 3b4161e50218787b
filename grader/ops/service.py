"""What an operator watches: queues, live workers, outcomes and grading times.

Everything comes from the database (which every API process shares) and the workers'
heartbeats in the broker, so any API process can answer for workers on any machine. The
metrics endpoint and the instructors' System page both read it from here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, and_, case, func, select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.db import utcnow
from grader.exercises.models import Exercise
from grader.ops.heartbeat import WorkerBeat, live_workers
from grader.ops.queueinfo import snapshots
from grader.runtime.queue import preflight_queue
from grader.submissions.models import TERMINAL, Preflight, Result, Status, Submission

# Prometheus buckets for one grading, in seconds (a course model takes 1 to 30 s on a CPU).
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class QueueRow:
    name: str
    depth: int
    running: int
    oldest_age_s: float | None
    workers: int  # live worker processes serving it
    slots: int  # their grading processes
    typical_grading_s: float | None


@dataclass(frozen=True)
class WorkerRow:
    beat: WorkerBeat
    age_s: float  # since its last heartbeat

    @property
    def layers_on(self) -> list[str]:
        return [name for name, on in self.beat.layers.items() if on]

    @property
    def layers_off(self) -> list[str]:
        return [name for name, on in self.beat.layers.items() if not on]


@dataclass(frozen=True)
class Outcome:
    status: str
    failure: str  # "" when none
    count: int


@dataclass(frozen=True)
class Histogram:
    queue: str
    # (upper bound, cumulative count) for each bucket, "+Inf" last
    buckets: list[tuple[str, int]]
    total: int
    sum_s: float


@dataclass(frozen=True)
class RecentGrading:
    id: int
    exercise: str
    queue: str
    status: str
    failure: str | None
    wall_s: float | None
    finished_at: datetime | None
    worker: str | None


def queue_names(session: Session, beats: list[WorkerBeat]) -> list[str]:
    """The grading queues: those exercises use, and those live workers serve."""
    names = set(session.scalars(select(Exercise.queue).distinct()))
    for beat in beats:
        names.update(q for q in beat.queues if not q.endswith("-preflight"))
    return sorted(names)


def queues(session: Session, settings: Settings) -> list[QueueRow]:
    beats = live_workers(settings).all()
    rows = []
    now = utcnow()
    for name in queue_names(session, beats):
        snap = snapshots(settings).get(session, name)
        serving = [b for b in beats if name in b.queues]
        oldest = snap.oldest_created_at
        typical = statistics.median(snap.durations.values()) if snap.durations else None
        rows.append(
            QueueRow(
                name=name,
                depth=snap.depth,
                running=len(snap.running),
                oldest_age_s=(now - oldest).total_seconds() if oldest else None,
                workers=len(serving),
                slots=sum(b.concurrency for b in serving),
                typical_grading_s=typical,
            )
        )
    return rows


def preflight_workers(settings: Settings) -> dict[str, int]:
    """Grading queue -> live pre-flight processes serving its pre-flights."""
    out: dict[str, int] = {}
    for beat in live_workers(settings).all():
        for q in beat.queues:
            if q.endswith("-preflight"):
                base = q.removesuffix("-preflight")
                if preflight_queue(base) == q:
                    out[base] = out.get(base, 0) + 1
    return out


def workers(settings: Settings) -> list[WorkerRow]:
    now = time.time()
    beats = live_workers(settings).all()
    return [WorkerRow(beat=b, age_s=max(now - b.beat_at, 0.0)) for b in beats]


def uploads_by_queue(session: Session) -> dict[str, int]:
    return {
        q: n
        for q, n in session.execute(
            select(Exercise.queue, func.count(Submission.id))
            .join(Exercise, Exercise.id == Submission.exercise_id)
            .group_by(Exercise.queue)
        )
    }


def preflight_outcomes(session: Session) -> list[Outcome]:
    """Finished pre-flights by verdict: PASSED, SKIPPED or the failure's kind."""
    rows = session.execute(
        select(Submission.preflight_status, func.count(Submission.id))
        .where(
            Submission.preflight_status.is_not(None),
            Submission.preflight_status != Preflight.PENDING.value,
        )
        .group_by(Submission.preflight_status)
    )
    return [_preflight_outcome(s, n) for s, n in rows if s is not None]


def _preflight_outcome(verdict: str, count: int) -> Outcome:
    if verdict in (Preflight.PASSED.value, Preflight.SKIPPED.value):
        return Outcome(status=verdict, failure="", count=count)
    return Outcome(status="FAILED", failure=verdict, count=count)


def grading_outcomes(session: Session) -> list[Outcome]:
    """Ended gradings by status and failure kind (a submission its pre-flight ended was never
    graded: it is counted among the pre-flights only)."""
    rows = session.execute(
        select(Submission.status, Submission.failure_reason, func.count(Submission.id))
        .where(Submission.status.in_(TERMINAL), Submission.started_at.is_not(None))
        .group_by(Submission.status, Submission.failure_reason)
    )
    return [Outcome(status=s, failure=f or "", count=n) for s, f, n in rows]


def duration_histograms(session: Session) -> list[Histogram]:
    """Per queue, the engine's seconds per grading (results.seconds) in DURATION_BUCKETS."""
    seconds = Result.seconds
    columns = [
        func.sum(case((seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS
    ]
    rows = session.execute(
        select(
            Exercise.queue,
            func.count(Result.id),
            func.coalesce(func.sum(func.cast(seconds, Float)), 0.0),
            *columns,
        )
        .join(Submission, Submission.id == Result.submission_id)
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(seconds.is_not(None))
        .group_by(Exercise.queue)
    )
    out = []
    for queue, total, sum_s, *counts in rows:
        buckets = [(_le(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
        buckets.append(("+Inf", int(total)))
        out.append(Histogram(queue=queue, buckets=buckets, total=int(total), sum_s=float(sum_s)))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


def recent_gradings(session: Session, *, limit: int = 20) -> list[RecentGrading]:
    rows = session.execute(
        select(
            Submission.id, Exercise.slug, Exercise.queue, Submission.status,
            Submission.failure_reason, Submission.started_at, Submission.finished_at,
            Submission.claimed_by,
        )
        .join(Exercise, Exercise.id == Submission.exercise_id)
        .where(and_(Submission.status.in_(TERMINAL), Submission.finished_at.is_not(None)))
        .order_by(Submission.id.desc())
        .limit(limit)
    )  # fmt: skip
    out = []
    for sid, slug, queue, status, failure, started, finished, worker in rows:
        wall = (finished - started).total_seconds() if started and finished else None
        out.append(RecentGrading(sid, slug, queue, status, failure, wall, finished, worker))
    return out


def running_count(session: Session) -> int:
    return session.scalar(
        select(func.count(Submission.id)).where(Submission.status == Status.RUNNING.value)
    ) or 0
