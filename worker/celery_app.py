"""The worker's Celery app, configured from the same Settings the API publishes with."""

from __future__ import annotations

from grader.config import get_settings
from grader.runtime.queue import make_celery

app = make_celery(get_settings(), name="grader-worker")
app.conf.include = ["worker.tasks"]

import worker.signals  # noqa: E402,F401  (connects start-up logging and sandbox shutdown)
