"""The Celery configuration both sides share, and the API side's send-by-name publisher.

grader never imports worker/: it only knows the task's name.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from grader.config import Settings

GRADE_TASK = "grader.grade_submission"
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
        self.app = make_celery(settings, name="grader-api")

    def send_grade(self, submission_id: int, *, queue: str) -> None:
        self.app.send_task(GRADE_TASK, args=[submission_id], queue=queue)

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:  # closing a pool to a dead broker must not block shutdown
            logger.debug("closing the Celery producer failed", exc_info=True)
