"""The Celery configuration both sides share, and the API side's send-by-name publisher.

grader never imports worker/: it only knows the task's name.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from celery import Celery

from grader.config import Settings
from grader.db import session_scope

GRADE_TASK = "grader.grade_submission"
PREFLIGHT_TASK = "grader.preflight_submission"


def preflight_queue(queue: str) -> str:
    """The queue of pre-flights for the exercises graded on `queue` (each worker serves it
    from a process of its own, so a pre-flight never waits behind a grading)."""
    return f"{queue}-preflight"
logger = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    # Long jobs: ack only after the work is done, requeue if the worker process dies, take one
    # job at a time, and kill a runaway task before the broker would redeliver it anyway.
    hard_limit = min(settings.task_hard_time_limit_s, settings.broker_visibility_timeout_s - 60)
    return {
        "broker_url": settings.celery_broker_url,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Each pool process starts its sandbox fork server while it starts (worker/signals.py):
        # ~1 s, several on a busy machine, beyond Celery's default 4 s.
        "worker_proc_alive_timeout": 120,
        "task_time_limit": hard_limit,
        "task_soft_time_limit": max(hard_limit - 30, 1),
        "task_default_queue": "cpu",
        "task_create_missing_queues": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Publishing happens right after a commit; if the broker is down we give up quickly
        # (the sweeper re-sends), rather than holding the student's upload request.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "broker_pool_limit": 20,
    }


def make_celery(settings: Settings, name: str = "grader") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class Publisher:
    """Sends grading tasks by name. One per process; thread-safe through kombu's pools."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery(settings, name="grader-api")

    def send_grade(self, submission_id: int, *, queue: str, priority: int | None = None) -> None:
        """Send one grading task; its broker priority is the submission's place in its
        student's line (submissions.service.queue_priority) unless given."""
        if priority is None:
            priority = self._priority(submission_id)
        self.app.send_task(GRADE_TASK, args=[submission_id], queue=queue, priority=priority)

    def send_preflight(self, submission_id: int, *, queue: str) -> None:
        self.app.send_task(PREFLIGHT_TASK, args=[submission_id], queue=preflight_queue(queue))

    def _priority(self, submission_id: int) -> int:
        from grader.submissions.service import FIRST_IN_LINE, queue_priority

        try:
            with session_scope(self.settings.sqlalchemy_url, write=False) as session:
                return queue_priority(session, submission_id=submission_id)
        except Exception:  # fairness is a nicety; the task must still go out
            logger.warning("no queue priority for submission %s", submission_id, exc_info=True)
            return FIRST_IN_LINE

    def submissions_in_broker(self, queues: Iterable[str]) -> set[int] | None:
        """Ids of the submissions whose grading task the broker holds: waiting in one of
        `queues` (any priority) or delivered to a worker and not yet acknowledged. None when
        the broker cannot be inspected (not Redis, or unreachable)."""
        try:
            with self.app.connection_for_read() as conn:
                channel: Any = conn.default_channel
                client = getattr(channel, "client", None)
                if client is None or not hasattr(channel, "_q_for_pri"):
                    return None
                ids: set[int] = set()
                for queue in queues:
                    for key in {channel._q_for_pri(queue, p) for p in channel.priority_steps}:
                        for raw in _list_items(client, key):
                            _add_submission_id(ids, raw)
                for _, raw in client.hscan_iter(channel.unacked_key, count=500):
                    # An unacknowledged delivery is stored as [message, exchange, routing_key].
                    try:
                        message = json.loads(raw)[0]
                    except (ValueError, TypeError, IndexError, KeyError):
                        continue
                    _add_submission_id(ids, message)
                return ids
        except Exception as exc:
            logger.warning("cannot inspect the broker's queues (%s)", exc)
            return None

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:  # closing a pool to a dead broker must not block shutdown
            logger.debug("closing the Celery producer failed", exc_info=True)


def _list_items(client: Any, key: str, chunk: int = 1000) -> Iterator[bytes]:
    start = 0
    while True:
        items = client.lrange(key, start, start + chunk - 1)
        yield from items
        if len(items) < chunk:
            return
        start += chunk


def _add_submission_id(ids: set[int], message: bytes | str | dict[str, Any]) -> None:
    """Add the submission id a kombu message names, if it is one of our grading tasks."""
    try:
        payload = json.loads(message) if isinstance(message, bytes | str) else message
        if payload.get("headers", {}).get("task") != GRADE_TASK:
            return
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # protocol 2: [args, kwargs, embed]
        ids.add(int(args[0]))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return
