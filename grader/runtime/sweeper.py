"""Re-send grading tasks that were committed but never reached (or never left) a worker.

Runs as a daemon thread in every API process (`grader serve`, embedded or --no-worker).
Several sweepers at once are harmless: a duplicate task finds its submission claimed or done.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import or_, update

from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.runtime.queue import Publisher
from grader.submissions.grading import claim_is_lost, worker_identity
from grader.submissions.models import Status, Submission
from grader.submissions.service import stale_submissions

logger = logging.getLogger(__name__)


def sweep_once(settings: Settings, publisher: Publisher) -> list[int]:
    """One pass; returns the ids it re-sent."""
    stale_after = timedelta(seconds=settings.stale_after_s)
    now = utcnow()
    me = worker_identity()
    resend: list[tuple[int, str]] = []
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        for sid, queue, status, _claimed in stale_submissions(
            session, now=now, stale_after=stale_after
        ):
            if status == Status.RUNNING.value:
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
                    or_(
                        Submission.status == Status.QUEUED.value,
                        Submission.status == Status.RUNNING.value,
                    ),
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
