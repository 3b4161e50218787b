"""Queue position and ETA of a submission, decided here once for the API, the pages and the CLI.

A submission's place follows the order the broker serves its queue in (the fair queue,
submissions/service.queue_priority): a task sent with priority FIRST_IN_LINE (its student's
oldest unfinished submission when it was sent) before every BEHIND one, in the order they were
sent within each priority. The ETA replays that order over the live workers' grading slots
(heartbeats), each gradings taking the median wall time of the exercise's recent gradings.

The whole queue is computed at once, at most once a second per queue and process, so that a
status request costs a dictionary lookup however many students poll.
"""

from __future__ import annotations

import heapq
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.db import utcnow
from grader.exercises.models import Exercise
from grader.ops.heartbeat import live_workers
from grader.submissions.models import Status, Submission

SNAPSHOT_MAX_AGE_S = 1.0
# Durations change slowly; reading them costs one small query per exercise on the queue.
DURATIONS_MAX_AGE_S = 10.0
# A grading already past its estimate is assumed to need this share of the estimate more.
_OVERRUN_SHARE = 0.1
_MAX_USERS_LOOKED_UP = 2000


class QueueInfo(BaseModel):
    """Where a QUEUED or RUNNING submission stands. `position` is 1 for the next to start
    (0 while it runs); the estimates are None when no live worker serves the queue."""

    queue: str
    position: int
    ahead: int
    workers: int
    estimated_start: datetime | None
    estimated_finish: datetime | None


@dataclass
class _Row:
    id: int
    user_id: int
    exercise_id: int
    status: str
    created_at: datetime
    sent_at: datetime | None
    started_at: datetime | None


@dataclass
class QueueSnapshot:
    queue: str
    taken_at: datetime
    workers: int
    # QUEUED submission id -> (0-based place, estimated start, estimated finish)
    waiting: dict[int, tuple[int, datetime | None, datetime | None]] = field(default_factory=dict)
    # RUNNING submission id -> estimated finish
    running: dict[int, datetime | None] = field(default_factory=dict)
    oldest_created_at: datetime | None = None
    durations: dict[int, float] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def info(self, submission_id: int) -> QueueInfo | None:
        if submission_id in self.running:
            return QueueInfo(
                queue=self.queue, position=0, ahead=0, workers=self.workers,
                estimated_start=None, estimated_finish=self.running[submission_id],
            )  # fmt: skip
        if submission_id not in self.waiting:
            return None
        place, start, finish = self.waiting[submission_id]
        return QueueInfo(
            queue=self.queue, position=place + 1, ahead=place, workers=self.workers,
            estimated_start=start, estimated_finish=finish,
        )  # fmt: skip


def recent_durations(
    session: Session, *, exercise_ids: list[int], history: int
) -> dict[int, list[float]]:
    """exercise id -> wall seconds (claim to result) of its last `history` gradings."""
    out: dict[int, list[float]] = {}
    for exercise_id in exercise_ids:
        rows = session.execute(
            select(Submission.started_at, Submission.finished_at)
            .where(
                Submission.exercise_id == exercise_id,
                Submission.status.in_((Status.PASSED.value, Status.FAILED.value)),
                Submission.started_at.is_not(None),
                Submission.finished_at.is_not(None),
            )
            .order_by(Submission.id.desc())
            .limit(history)
        )
        out[exercise_id] = [
            max((finished - started).total_seconds(), 0.0)
            for started, finished in rows
            if started is not None and finished is not None
        ]
    return out


def _fair_order(
    rows: list[_Row], finished: list[tuple[int, int, datetime, datetime]]
) -> list[_Row]:
    """The QUEUED rows in the order the broker serves them: priority as decided when each
    task was sent (another of the student's submissions on this queue was then unfinished:
    BEHIND), then the order they were sent in."""
    unfinished_by_user: dict[int, list[_Row]] = {}
    for row in rows:
        unfinished_by_user.setdefault(row.user_id, []).append(row)
    finished_by_user: dict[int, list[tuple[int, datetime, datetime]]] = {}
    for user_id, sid, created, done in finished:
        finished_by_user.setdefault(user_id, []).append((sid, created, done))

    def behind(row: _Row) -> bool:
        sent = row.sent_at or row.created_at
        for other in unfinished_by_user.get(row.user_id, ()):
            if other.id < row.id and other.created_at <= sent:
                return True
        for sid, created, done in finished_by_user.get(row.user_id, ()):
            if sid < row.id and created <= sent < done:
                return True
        return False

    waiting = [r for r in rows if r.status == Status.QUEUED.value]
    # Not sent yet (the broker was down): the sweeper sends it later, so it goes last.
    return sorted(
        waiting,
        key=lambda r: (behind(r), r.sent_at is None, r.sent_at or r.created_at, r.id),
    )


def build_snapshot(
    session: Session,
    *,
    queue: str,
    workers: int,
    settings: Settings,
    now: datetime | None = None,
    durations: dict[int, list[float]] | None = None,
) -> QueueSnapshot:
    now = now or utcnow()
    rows = [
        _Row(*r)
        for r in session.execute(
            select(
                Submission.id, Submission.user_id, Submission.exercise_id, Submission.status,
                Submission.created_at, Submission.sent_at, Submission.started_at,
            )
            .join(Exercise, Exercise.id == Submission.exercise_id)
            .where(
                Submission.status.in_((Status.QUEUED.value, Status.RUNNING.value)),
                Exercise.queue == queue,
            )
        )
    ]  # fmt: skip
    snap = QueueSnapshot(queue=queue, taken_at=now, workers=workers)
    if not rows:
        return snap
    limits = dict(
        session.execute(
            select(Exercise.id, Exercise.time_limit_s).where(
                Exercise.id.in_({r.exercise_id for r in rows})
            )
        ).all()
    )
    exercise_ids = sorted(limits)
    if durations is None:
        durations = recent_durations(
            session, exercise_ids=exercise_ids, history=settings.eta_history
        )
    snap.durations = _typical(durations, limits, settings)

    queued = [r for r in rows if r.status == Status.QUEUED.value]
    oldest_sent = min((r.sent_at or r.created_at for r in queued), default=now)
    users = {r.user_id for r in queued}
    # Submissions finished since the oldest waiting task was sent decided priorities then.
    # (Looked up through the students' index; a queue of thousands of students skips it.)
    finished = [
        (u, s, c, f)
        for u, s, c, f in session.execute(
            select(
                Submission.user_id, Submission.id, Submission.created_at, Submission.finished_at
            )
            .join(Exercise, Exercise.id == Submission.exercise_id)
            .where(
                Submission.user_id.in_(users),
                Exercise.queue == queue,
                Submission.finished_at > oldest_sent,
            )
        )
        if f is not None
    ] if len(users) <= _MAX_USERS_LOOKED_UP else []
    order = _fair_order(rows, finished)
    snap.oldest_created_at = min((r.created_at for r in queued), default=None)

    running = sorted(
        (r for r in rows if r.status == Status.RUNNING.value),
        key=lambda r: r.started_at or now,
    )
    if workers <= 0:
        snap.running = {r.id: None for r in running}
        snap.waiting = {r.id: (i, None, None) for i, r in enumerate(order)}
        return snap

    # Each slot is free at the estimated end of the grading it runs, or now.
    frees: list[float] = []
    for r in running:
        d = snap.durations[r.exercise_id]
        elapsed = (now - (r.started_at or now)).total_seconds()
        remaining = max(d - elapsed, d * _OVERRUN_SHARE)
        snap.running[r.id] = now + timedelta(seconds=remaining)
        frees.append(remaining)
    frees.sort()
    # More running than live slots: a worker's heartbeat is late; count the first to end.
    frees = frees[:workers] + [0.0] * max(workers - len(frees), 0)
    heapq.heapify(frees)
    for place, r in enumerate(order):
        start = heapq.heappop(frees)
        d = snap.durations[r.exercise_id]
        heapq.heappush(frees, start + d)
        snap.waiting[r.id] = (
            place, now + timedelta(seconds=start), now + timedelta(seconds=start + d),
        )
    return snap


def _typical(
    durations: dict[int, list[float]], limits: dict[int, float | None], settings: Settings
) -> dict[int, float]:
    """exercise id -> seconds one grading takes: its median, else its queue's, else the
    default (never beyond the exercise's time limit, which stops a grading anyway)."""
    pooled = [d for ds in durations.values() for d in ds]
    fallback = statistics.median(pooled) if pooled else settings.eta_default_grading_s
    out = {}
    for exercise_id, limit in limits.items():
        own = durations.get(exercise_id) or []
        typical = statistics.median(own) if own else fallback
        cap = limit or settings.default_time_limit_s
        out[exercise_id] = max(min(typical, cap), 0.05)
    return out


class QueueSnapshots:
    """Per-queue snapshots cached for about a second, computed by one request at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._snaps: dict[str, tuple[float, QueueSnapshot]] = {}
        self._durations: dict[str, tuple[float, dict[int, list[float]]]] = {}

    def get(
        self, session: Session, queue: str, *, since: datetime | None = None
    ) -> QueueSnapshot:
        """The queue's snapshot, at most a second old, and taken after `since` (a
        submission's upload or claim) so that a submission just sent or claimed is in it:
        each such moment costs one rebuild at most."""
        with self._lock:
            cached = self._snaps.get(queue)
            if (
                cached is not None
                and time.monotonic() - cached[0] < SNAPSHOT_MAX_AGE_S
                and (since is None or cached[1].taken_at >= since)
            ):
                return cached[1]
            workers = live_workers(self.settings).slots(queue)
            durations = self._cached_durations(session, queue)
            snap = build_snapshot(
                session, queue=queue, workers=workers, settings=self.settings,
                durations=durations,
            )  # fmt: skip
            self._snaps[queue] = (time.monotonic(), snap)
            return snap

    def _cached_durations(self, session: Session, queue: str) -> dict[int, list[float]]:
        ids = list(session.scalars(select(Exercise.id).where(Exercise.queue == queue)))
        cached = self._durations.get(queue)
        if cached is not None:
            age = time.monotonic() - cached[0]
            # Durations change slowly once an exercise has a history; without one, the
            # estimate falls back to a default until the first gradings land, so look again
            # as often as the snapshot is rebuilt.
            complete = all(cached[1].get(i) for i in ids)
            if age < (DURATIONS_MAX_AGE_S if complete else SNAPSHOT_MAX_AGE_S):
                return cached[1]
        durations = recent_durations(session, exercise_ids=ids, history=self.settings.eta_history)
        self._durations[queue] = (time.monotonic(), durations)
        return durations


_snapshots: dict[tuple[str, str], QueueSnapshots] = {}
_snapshots_lock = threading.Lock()


def snapshots(settings: Settings) -> QueueSnapshots:
    key = (settings.sqlalchemy_url, settings.celery_broker_url)
    with _snapshots_lock:
        found = _snapshots.get(key)
        if found is None:
            found = _snapshots[key] = QueueSnapshots(settings)
        return found


def queue_info(session: Session, *, submission: Submission, settings: Settings) -> QueueInfo | None:
    """Position and ETA of a QUEUED or RUNNING submission; None once it has ended."""
    if submission.status not in (Status.QUEUED.value, Status.RUNNING.value):
        return None
    snap = snapshots(settings).get(
        session, submission.exercise.queue,
        since=submission.started_at or submission.created_at,
    )
    info = snap.info(submission.id)
    if info is None:
        # Uploaded (or claimed) after the snapshot was taken: the end of the line for now.
        running = submission.status == Status.RUNNING.value
        return QueueInfo(
            queue=snap.queue, position=0 if running else snap.depth + 1,
            ahead=0 if running else snap.depth, workers=snap.workers,
            estimated_start=None, estimated_finish=None,
        )  # fmt: skip
    return info


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def about(seconds: float) -> str:
    """A wait as people say it: "about 40 s", "about 3 min", "about 2 h"."""
    if seconds < 60:
        return f"about {max(int(round(seconds / 10.0)) * 10, 10)} s"
    if seconds < 3600:
        return f"about {int(round(seconds / 60.0))} min"
    return f"about {seconds / 3600.0:.1f} h".replace(".0 h", " h")


def describe(info: QueueInfo | None, *, now: datetime | None = None) -> str:
    """One line for the page and the CLI: "4th in queue, about 1 min"."""
    if info is None:
        return ""
    now = now or utcnow()
    if info.position == 0:
        if info.estimated_finish is None:
            return "being graded"
        left = max((info.estimated_finish - now).total_seconds(), 0.0)
        return f"being graded, done in {about(left)}"
    where = "next in queue" if info.position == 1 else f"{ordinal(info.position)} in queue"
    if info.workers <= 0:
        return f"{where}; no grader is running for this queue right now"
    if info.estimated_finish is None:
        return where
    left = max((info.estimated_finish - now).total_seconds(), 0.0)
    return f"{where}, {about(left)}"
