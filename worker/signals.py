"""Worker start-up logging and clean sandbox shutdown."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready

logger = logging.getLogger("worker")


@worker_ready.connect
def _log_sandbox_layers(**_: Any) -> None:
    try:
        from grader.grading.doctor import describe_sandbox_layers
    except ImportError:
        logger.warning("sandbox layer report unavailable (grader.grading.doctor missing)")
        return
    try:
        logger.info("sandbox layers: %s", describe_sandbox_layers())
    except Exception:
        logger.exception("could not describe the sandbox layers")


@worker_process_shutdown.connect
def _stop_sandbox(**_: Any) -> None:
    try:
        from grader.grading.sandbox import shutdown
    except ImportError:
        return
    shutdown()
