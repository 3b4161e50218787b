"""Thin tasks: take an id, call the grading service. Idempotency lives in the service."""

from __future__ import annotations

from celery import Task

from grader.config import get_settings
from grader.runtime.queue import GRADE_TASK, PREFLIGHT_TASK
from grader.submissions import grading, preflight
from worker.celery_app import app


@app.task(name=GRADE_TASK, bind=True, max_retries=get_settings().max_attempts)
def grade_submission(self: Task, submission_id: int) -> str:
    try:
        return grading.run_grading_task(get_settings(), submission_id)
    except Exception as exc:
        # Our failure, not the student's: the attempt is counted and the claim handed back,
        # so the retry grades it (or ends it ERROR / INFRA_ERROR after max_attempts).
        raise self.retry(exc=exc, countdown=3) from exc


@app.task(name=PREFLIGHT_TASK)
def preflight_submission(submission_id: int) -> str:
    # Best effort and never retried: the grading that follows gives the verdict anyway.
    return preflight.run_preflight(get_settings(), submission_id)
