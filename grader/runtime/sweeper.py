"""Re-send grading tasks that were committed but never reached (or never left) a worker.

Runs as a daemon thread in every API process (`grader serve`, embedded or --no-worker).
Several sweepers at once are harmless: a duplicate task finds its submission claimed or done,
so a re-send can delay nothing and never grades twice.

What it re-sends:
- QUEUED with `sent_at` NULL: the publish after commit failed (broker down).
- QUEUED for longer than `queued_check_after_s` whose task the broker no longer holds (not in
  the queue lists, not delivered and unacknowledged): the broker lost its data, or a crash came
  between commit and publish. Noticed at the first pass after that: about a minute.
- QUEUED for longer than `stale_after_s`, when the broker cannot be inspected.
- RUNNING whose attempt is lost (its process is gone, or older than `stale_after_s`).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select, update

from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.runtime.queue import Publisher
from grader.submissions.grading import claim_is_lost, worker_identity
from grader.submissions.models import Status, Submission
from grader.submissions.service import queued_to_check, stale_submissions

logger = logging.getLogger(__name__)


def _lost_from_broker(
    settings: Settings, publisher: Publisher, candidates: list[tuple[int, str, bool]]
) -> list[tuple[int, str]]:
    """The QUEUED candidates (id, queue, overdue) whose task is not in the broker; when the
    broker cannot be inspected, only those overdue by `stale_after_s`."""
    if not candidates:
        return []
    held = publisher.submissions_in_broker({queue for _, queue, _ in candidates})
    if held is None:
        return [(sid, queue) for sid, queue, overdue in candidates if overdue]
    missing = {sid: queue for sid, queue, _ in candidates if sid not in held}
    if not missing:
        return []
    # Read the rows again after the broker: one claimed meanwhile (its task taken, run and
    # acknowledged between our two reads) is no longer QUEUED and is left alone.
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        still = set(
            session.scalars(
                select(Submission.id).where(
                    Submission.id.in_(missing), Submission.status == Status.QUEUED.value
                )
            )
        )
    return [(sid, queue) for sid, queue in missing.items() if sid in still]


def sweep_once(settings: Settings, publisher: Publisher) -> list[int]:
    """One pass; returns the ids it re-sent."""
    stale_after = timedelta(seconds=settings.stale_after_s)
    now = utcnow()
    me = worker_identity()
    resend: list[tuple[int, str]] = []
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        never_sent, candidates = queued_to_check(
            session,
            sent_before=now - timedelta(seconds=settings.queued_check_after_s),
            overdue_before=now - stale_after,
        )
        resend += never_sent
        for sid, queue, _status, _claimed in stale_submissions(
            session, now=now, stale_after=stale_after, statuses=(Status.RUNNING,)
        ):
            sub = session.get(Submission, sid)
            if sub is None or not claim_is_lost(sub, stale_after=stale_after, me=me):
                continue
            # Already re-sent since this attempt started: give that message time to land.
            if (
                sub.sent_at is not None
                and sub.started_at is not None
                and sub.sent_at > sub.started_at
                and sub.sent_at > now - stale_after
            ):
                continue
            resend.append((sid, queue))
    resend += _lost_from_broker(settings, publisher, candidates)
    sent: list[int] = []
    for sid, queue in resend:
        try:
            publisher.send_grade(sid, queue=queue)
        except Exception as exc:
            logger.warning("sweeper: broker unavailable (%s); will retry", exc)
            break
        sent.append(sid)
    if sent:
        with session_scope(settings.sqlalchemy_url) as session:
            session.execute(
                update(Submission)
                .where(
                    Submission.id.in_(sent),
                    Submission.status.in_((Status.QUEUED.value, Status.RUNNING.value)),
                )
                .values(sent_at=utcnow())
            )
        logger.info("sweeper re-sent %d submission(s): %s", len(sent), sent[:20])
    return sent


class SweeperThread(threading.Thread):
    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        super().__init__(name="grader-sweeper", daemon=True)
        self.settings = settings
        self.publisher = publisher
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.sweeper_interval_s):
            try:
                sweep_once(self.settings, self.publisher)
            except Exception:
                logger.exception("sweeper pass failed")

    def stop(self) -> None:
        self._stop_event.set()
